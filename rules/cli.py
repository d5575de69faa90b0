"""`switchboard rules ...`: check, explain, test and simulate rule files.

Imports are local to each command so that `switchboard --help` does not load the rule engine.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from records.topics import EventCore
    from rules.budgets import BatchBudgets
    from rules.explain_inputs import Person
    from rules.schema import Ruleset
    from settings import Settings

rules_cli = typer.Typer(no_args_is_help=True, help="Check, explain, test and simulate rule files.")

RulesPath = Annotated[
    Path | None, typer.Option("--rules", help="rule file or folder (default: SWITCHBOARD_RULES)")
]
RulesArgument = Annotated[
    Path | None, typer.Argument(help="rule file or folder (default: SWITCHBOARD_RULES)")
]
CasesFolder = Annotated[
    Path | None, typer.Option(help="folder of case files (default: cases/ beside the rules)")
]
Templates = Annotated[
    Path | None, typer.Option("--templates", help="templates folder for the template names check")
]


@rules_cli.command("check")
def check_command(
    paths: Annotated[list[Path] | None, typer.Argument(help="rule files or folders")] = None,
    templates: Templates = None,
) -> None:
    """Lint rule files, printing every error as file:line:col; exit status 1 on any error."""
    from rules.loader import check

    settings = _settings()
    errors = check(paths or [settings.rules], _template_names(templates or settings.templates))
    for error in errors:
        typer.echo(str(error), err=True)
    if errors:
        raise typer.Exit(1)
    typer.echo("rules ok")


@rules_cli.command("explain")
def explain_command(
    event: Annotated[str, typer.Option(help="the event: a JSON/YAML file, or inline JSON")],
    user: Annotated[str, typer.Option(help="a user id (read from Redis), or a JSON/YAML file")],
    rules: RulesPath = None,
    templates: Templates = None,
    now: Annotated[str | None, typer.Option(help="decision time, ISO with offset (default: now)")] = None,
    last_active: Annotated[
        str | None, typer.Option(help="how long ago the user was last active (2d) or an ISO time")
    ] = None,
    allowed: Annotated[str | None, typer.Option(help="channels the app may use, comma-separated")] = None,
    available: Annotated[str | None, typer.Option(help="channels with a provider (default: all)")] = None,
) -> None:
    """Which rules match an event for a user, which wins and why, and the full decision and plan."""
    from rules.cases import last_active as parse_last_active
    from rules.engine import RuleEngine
    from rules.explain import explain, render
    from rules.explain_inputs import decision_request

    settings = _settings()
    ruleset = _load(rules or settings.rules, templates or settings.templates)
    core = _event(event)
    at = datetime.fromisoformat(now) if now else datetime.now(UTC)
    if at.tzinfo is None:
        _fail(f"--now {now!r} needs a timezone offset, e.g. 2026-11-23T22:30:00+08:00")
    person = _user(user, core.app, settings)
    try:
        active = parse_last_active(last_active, at) if last_active else None
    except ValueError as exc:
        _fail(f"--last-active: {exc}")
    request = decision_request(
        core, person, at, last_active=active,
        allowed=_channels(allowed) if allowed else None,
        available=_channels(available) if available else None,
    )
    # With the user read from Redis, so are the budgets' standings: explain shows the budget verdict.
    budgets = None if Path(user).is_file() else asyncio.run(_budget_standing(core, settings))
    typer.echo(render(explain(RuleEngine(ruleset), request, budgets)))


@rules_cli.command("test")
def test_command(
    path: RulesArgument = None,
    cases: CasesFolder = None,
    templates: Templates = None,
) -> None:
    """Run the rule authors' cases (rules/cases/*.yaml) against the rules; exit status 1 on a failure."""
    from rules.cases import case_files, report, timed_run
    from rules.engine import RuleEngine

    settings = _settings()
    rules_path = path or settings.rules
    ruleset = _load(rules_path, templates or settings.templates)
    folder = cases or (rules_path if rules_path.is_dir() else rules_path.parent) / "cases"
    files = case_files(folder)
    if not files:
        _fail(f"no *.yaml case files in {folder}")
    results, seconds = timed_run(RuleEngine(ruleset), files)
    typer.echo(report(results, seconds))
    if not all(result.passed for result in results):
        raise typer.Exit(1)


@rules_cli.command("strategies")
def strategies_command(
    path: RulesArgument = None,
    as_json: Annotated[bool, typer.Option("--json", help="as JSON, like GET /v1/strategies")] = False,
) -> None:
    """The named strategies (补发策略) events, campaigns and rules may use: first channels and steps."""
    from rules.strategies import render, strategy_dict

    ruleset = _load(path or _settings().rules, None)
    if as_json:
        typer.echo(json.dumps([strategy_dict(s) for s in ruleset.strategies], ensure_ascii=False, indent=2))
    else:
        typer.echo(render(ruleset.strategies))


@rules_cli.command("simulate")
def simulate_command(
    since: Annotated[str, typer.Option(help="start of the period, ISO time with offset")],
    until: Annotated[str, typer.Option(help="end of the period (exclusive), ISO time with offset")],
    rules: Annotated[Path, typer.Option("--rules", help="the candidate rule file or folder")],
    templates: Templates = None,
    available: Annotated[
        str | None,
        typer.Option(help="channels with a provider, comma-separated (default: the configured ones)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Replay past events through candidate rules; report the difference against what happened."""
    from rules.simulate import run_simulation

    settings = _settings()
    ruleset = _load(rules, templates or settings.templates)
    start, end = _moment("--since", since), _moment("--until", until)
    if end <= start:
        _fail("--until must come after --since")
    channels = _channels(available) if available is not None else _configured_channels(settings)
    result = asyncio.run(run_simulation(settings, ruleset, start, end, channels))
    typer.echo(json.dumps(result.as_dict(), indent=2) if as_json else result.render())


def _settings() -> Settings:
    from settings import Settings

    return Settings()


def _configured_channels(settings: Settings) -> frozenset[str]:
    from channels.providers import ProvidersFileError
    from channels.registry import configured_channels

    try:
        return configured_channels(settings)
    except ProvidersFileError as exc:
        more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
        _fail(f"{exc.errors[0]}{more}; fix the providers file or give the channels with --available")


def _template_names(folder: Path) -> dict[str, frozenset[str]] | None:
    from channels.templates import TemplateError
    from rules.loader import template_names

    if not folder.is_dir():
        return None
    try:
        return template_names(folder)
    except TemplateError as exc:
        _fail(f"templates in {folder}: {exc}")


def _load(path: Path, templates: Path | None) -> Ruleset:
    from rules.loader import RuleFileError, load_ruleset

    try:
        return load_ruleset(path, _template_names(templates) if templates is not None else None)
    except RuleFileError as exc:
        for error in exc.errors:
            typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


def _document(value: str, what: str) -> Any:
    import yaml

    text = value
    if not value.lstrip().startswith("{"):
        try:
            text = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            _fail(f"{what} {value!r}: not inline JSON and not a readable file ({exc.strerror})")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        _fail(f"{what} {value!r}: not valid JSON or YAML: {exc}")


def _event(value: str) -> Any:
    from rules.explain_inputs import ExplainInputError, event_of

    try:
        return event_of(_document(value, "--event"))
    except ExplainInputError as exc:
        _fail(f"--event: {exc}")


async def _budget_standing(event: EventCore, settings: Settings) -> BatchBudgets:
    """The standings of the budgets over the event's app and campaign, and the providers' prices."""
    from channels.costs import costs_from_specs
    from channels.providers import load_providers
    from rules.explain_inputs import budget_standing
    from state.connection import open_redis

    specs = load_providers(settings.providers, skip_unavailable=lambda _: None, require_env=False) if (
        settings.providers.is_file()
    ) else []
    redis = open_redis(settings.redis)
    try:
        return await budget_standing(redis, event, costs_from_specs(specs))
    finally:
        await redis.aclose()


def _user(value: str, app: str, settings: Settings) -> Person:
    """The user from a file, or from Redis with the app's channels and the user's last activity."""
    from pydantic import ValidationError

    from rules.explain_inputs import Person
    from state.users import User

    if Path(value).is_file():
        try:
            return Person(User.model_validate(_document(value, "--user")))
        except ValidationError as exc:
            _fail(f"--user {value}: {exc}")
    return asyncio.run(_user_from_redis(value, app, settings))


async def _user_from_redis(user_id: str, app: str, settings: Settings) -> Person:
    from rules.explain_inputs import person_in_redis
    from state.connection import open_redis

    redis = open_redis(settings.redis)
    try:
        found = await person_in_redis(redis, user_id, app)
    finally:
        await redis.aclose()
    if found is None:
        _fail(f"--user {user_id!r}: no such file, and no such user in Redis")
    return found


def _channels(text: str) -> frozenset[str]:
    from rules.explain_inputs import ExplainInputError, channels_of

    try:
        return channels_of(text)
    except ExplainInputError as exc:
        _fail(str(exc))


def _moment(option: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option} {value!r} is not an ISO time, e.g. 2026-11-01T00:00:00+08:00")
    if moment.tzinfo is None:
        _fail(f"{option} {value!r} needs a timezone offset, e.g. +08:00")
    return moment


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(2)

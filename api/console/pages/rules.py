"""The Rules page: the rule files as the API has loaded them (version, files, each rule's id,
description and file:line, the named strategies), `switchboard rules check` over the files as they
are on disk now, explain for a person and an event, and simulating a candidate file against a period.

Permissions: `templates:read` to see the rules (what a message says and what decides it are read by
the same people: senders, approvers, template editors; rules name templates and hold no secret).
Explain needs `people:read` on every app (it shows a person's profile facts, as `/v1/people` does),
simulate `statistics:read` on every app (it replays every app's events of the period from ClickHouse);
their answers show the loaded rules only to an operator who also reads templates.
The work is done by the same code as the command line: `rules.loader.check`, `rules.explain` with
`rules.explain_inputs`, `rules.simulate.load_history` and `simulate`."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from redis.asyncio import Redis
from starlette.datastructures import UploadFile

from api.access import holds
from api.analytics_reader import AnalyticsUnavailable
from api.console.context import ConsolePage
from api.console.render import render
from api.console.session import authorize, console_principal
from api.deps import ApiDeps
from rules.cases import last_active as parse_last_active
from rules.engine import RuleEngine
from rules.errors import RuleFileError
from rules.explain import explain
from rules.explain import render as explanation_text
from rules.explain_inputs import (
    ExplainInputError,
    budget_standing,
    channels_of,
    decision_request,
    event_of,
    person_in_redis,
)
from rules.loader import check, load_ruleset, rule_files, template_names
from rules.schema import Ruleset
from rules.simulate import load_history, simulate
from rules.strategies import render as strategies_text
from rules.watch import RulesWatcher, Signature
from settings.permissions import ALL_APPS, Principal

Reader = Annotated[Principal, Depends(console_principal("templates:read"))]
Explainer = Annotated[Principal, Depends(console_principal("people:read"))]
Simulator = Annotated[Principal, Depends(console_principal("statistics:read"))]
CANDIDATE_BYTES = 512 * 1024
"""The largest candidate rule file taken (the rule files of the project are a few KB)."""


def rules_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter(prefix="/rules", include_in_schema=False)

    @router.get("")
    async def loaded(request: Request, principal: Reader) -> Response:
        return await _page(request, principal, deps)

    @router.post("/explain")
    async def explain_form(request: Request, principal: Explainer) -> Response:
        authorize(request, principal, "people:read", ALL_APPS)
        form = {k: str(v) for k, v in (await request.form()).items() if isinstance(v, str)}
        errors: dict[str, str] = {}
        text, verdicts = await _explain(deps, form, errors)
        return await _page(request, principal, deps, explain_form=form, explain_errors=errors,
                           explanation=text, verdicts=verdicts)

    @router.post("/simulate")
    async def simulate_form(request: Request, principal: Simulator) -> Response:
        authorize(request, principal, "statistics:read", ALL_APPS)
        posted = await request.form()
        form = {k: str(v) for k, v in posted.items() if isinstance(v, str)}
        upload = posted.get("candidate_file")
        errors: dict[str, str] = {}
        report = await _simulate(deps, form, upload if isinstance(upload, UploadFile) else None, errors)
        return await _page(request, principal, deps, simulate_form=form, simulate_errors=errors,
                           simulation=report)

    return router


async def _page(request: Request, principal: Principal, deps: ApiDeps, **context: Any) -> Response:
    # An explain or simulate answer shows the rules only to who may read them (templates:read).
    may_read = holds(principal, "templates:read")
    ruleset = deps.rules.ruleset if deps.rules is not None and may_read else None
    watcher = deps.rules if isinstance(deps.rules, RulesWatcher) and may_read else None
    # Paths as the rule authors know them: from the rules folder's parent (`rules/default.yaml:58`).
    base = f"{(watcher.path if watcher.path.is_dir() else watcher.path.parent).parent}/" if watcher else ""
    files = [str(p).removeprefix(base) for p in rule_files(watcher.path)] if watcher is not None else []
    problems = None
    if watcher is not None:  # the files as they are on disk now, as `switchboard rules check` reads them
        problems = [problem.removeprefix(base) for problem in await _checked(watcher)]
    context.setdefault("explain_form", {})
    context.setdefault("explain_errors", {})
    context.setdefault("explanation", None)
    context.setdefault("verdicts", [])
    context.setdefault("simulate_form", {})
    context.setdefault("simulate_errors", {})
    context.setdefault("simulation", None)
    return render(
        request, "rules/page.html", principal, ruleset=ruleset, files=files, problems=problems,
        rules=[{"id": r.id, "description": r.description,
                "origin": ruleset.origins.get(r.id, "").removeprefix(base)}
               for r in ruleset.rules] if ruleset is not None else [],
        strategies=strategies_text(ruleset.strategies).replace(base, "") if ruleset is not None else "",
        may_read=may_read, may_explain=principal.allows("people:read", ALL_APPS),
        may_simulate=principal.allows("statistics:read", ALL_APPS),
        status_code=422 if context["explain_errors"] or context["simulate_errors"] else 200,
        **context,
    )


_checks: dict[str, tuple[Signature | None, list[str]]] = {}
"""The last check of each rules path with the files' signature: checking reads every rule and template
file (~150 ms here), so it runs again only when a file changed."""


async def _checked(watcher: RulesWatcher) -> list[str]:
    """`switchboard rules check` over the watched files as they are now, off the event loop."""
    folder = watcher.templates_folder
    files = rule_files(watcher.path) + (sorted(folder.glob("*.yaml")) if folder and folder.is_dir() else [])
    signature = RulesWatcher.signature(files)
    known = _checks.get(str(watcher.path))
    if known is not None and signature is not None and known[0] == signature:
        return known[1]
    problems = await asyncio.to_thread(
        lambda: [str(e) for e in check([watcher.path], _templates_of(watcher))]
    )
    _checks[str(watcher.path)] = (signature, problems)
    return problems


def _templates_of(watcher: RulesWatcher) -> dict[str, frozenset[str]] | None:
    folder = watcher.templates_folder
    return template_names(folder) if folder is not None and folder.is_dir() else None


async def _explain(
    deps: ApiDeps, form: dict[str, str], errors: dict[str, str]
) -> tuple[str | None, list[dict[str, Any]]]:
    """The explanation as `switchboard rules explain` prints it, and each rule's verdict; or None with
    `errors` naming the field at fault."""
    ruleset = deps.rules.ruleset if deps.rules is not None else None
    if ruleset is None:
        errors["general"] = "the rule files are not loaded yet (SWITCHBOARD_RULES): try again shortly"
        return None, []
    if not isinstance(deps.redis, Redis):
        errors["general"] = "explain reads the person from Redis, which this API does not hold"
        return None, []
    core = _field(errors, "event", lambda: event_of(yaml.safe_load(form.get("event", "") or "{}")))
    user_id = form.get("user", "").strip()
    if not user_id:
        errors["user"] = "user: give the id of a person"
    at = _field(errors, "now", lambda: _moment(form.get("now", ""), "now") or datetime.now(UTC))
    allowed = _field(errors, "allowed", lambda: channels_of(form.get("allowed", "")) or None)
    available = _field(errors, "available", lambda: channels_of(form.get("available", "")) or None)
    if errors or core is None or at is None:
        return None, []
    active = _field(errors, "last_active",
                    lambda: parse_last_active(form.get("last_active", "").strip() or None, at))
    person = await person_in_redis(deps.redis, user_id, core.app)
    if person is None:
        errors["user"] = f"user: no person {user_id!r}"
    if errors or person is None:
        return None, []
    costs = deps.campaigns.costs if deps.campaigns is not None else {}
    budgets = await budget_standing(deps.redis, core, costs)
    request = decision_request(core, person, at, last_active=active, allowed=allowed, available=available)
    explanation = await asyncio.to_thread(lambda: explain(RuleEngine(ruleset), request, budgets))
    verdicts = [{"rule": v.rule_id, "origin": v.origin, "matched": v.matched, "why_not": v.why_not}
                for v in explanation.verdicts]
    return explanation_text(explanation), verdicts


async def _simulate(
    deps: ApiDeps, form: dict[str, str], upload: UploadFile | None, errors: dict[str, str]
) -> dict[str, Any] | None:
    """The simulation of the candidate (uploaded or pasted) over [since, until): its report as the
    command line prints it and its figures; or None with `errors` naming the field at fault."""
    since = _field(errors, "since", lambda: _moment(form.get("since", ""), "since"))
    until = _field(errors, "until", lambda: _moment(form.get("until", ""), "until"))
    if since is None and "since" not in errors:
        errors["since"] = "since: give the start of the period"
    if until is None and "until" not in errors:
        errors["until"] = "until: give the end of the period"
    if since is not None and until is not None and until <= since:
        errors["until"] = "until: must come after since"
    available = _field(errors, "available", lambda: channels_of(form.get("available", "")))
    text = await _candidate_text(form, upload, errors)
    if errors or text is None or since is None or until is None:
        return None
    watcher = deps.rules if isinstance(deps.rules, RulesWatcher) else None
    candidate = _candidate(text, _templates_of(watcher) if watcher is not None else None, errors)
    if candidate is None:
        return None
    if deps.analytics is None or not isinstance(deps.redis, Redis):
        errors["general"] = "simulate reads ClickHouse and Redis, which this API does not hold"
        return None
    try:
        history = await asyncio.to_thread(
            deps.analytics.reader.run, lambda client: load_history(client, since, until)
        )
    except AnalyticsUnavailable as exc:
        errors["general"] = str(exc)
        return None
    from records.topics import CHANNELS

    report = await simulate(history, deps.redis, candidate, available or frozenset(CHANNELS))
    return {"text": report.render(), **report.as_dict(), "version": candidate.version}


async def _candidate_text(
    form: dict[str, str], upload: UploadFile | None, errors: dict[str, str]
) -> str | None:
    if upload is not None and upload.filename:
        raw = await upload.read(CANDIDATE_BYTES + 1)
        if len(raw) > CANDIDATE_BYTES:
            errors["candidate"] = f"candidate: the file is over {CANDIDATE_BYTES // 1024} KB"
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            errors["candidate"] = "candidate: the file is not UTF-8 text"
            return None
    pasted = form.get("candidate", "")
    if not pasted.strip():
        errors["candidate"] = "candidate: upload a rule file or paste one"
        return None
    return pasted


def _candidate(
    text: str, templates: dict[str, frozenset[str]] | None, errors: dict[str, str]
) -> Ruleset | None:
    """The candidate loaded and checked as `rules simulate --rules` does; its errors as file:line:col."""
    with tempfile.TemporaryDirectory(prefix="sb-candidate-") as folder:
        path = Path(folder) / "candidate.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            return load_ruleset(path, templates)
        except RuleFileError as exc:
            errors["candidate"] = "\n".join(str(e).replace(str(path), "candidate.yaml") for e in exc.errors)
            return None


def _field(errors: dict[str, str], name: str, work: Any) -> Any:
    """`work()`, or None with its error under `name` (prefixed with the field unless it says it)."""
    try:
        return work()
    except (ExplainInputError, ValueError, yaml.YAMLError) as exc:
        message = str(exc)
        errors[name] = message if message.startswith(f"{name}:") else f"{name}: {message}"
        return None


def _moment(text: str, name: str) -> datetime | None:
    if not text.strip():
        return None
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        raise ValueError(f"{name}: {text!r} needs a timezone offset, e.g. 2026-11-01T00:00:00+08:00")
    return moment


PAGE = ConsolePage("rules", "/console/rules", "templates:read", rules_router)

"""Switchboard's entry point: the `switchboard` command line over the Faust app and the API."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from typer.core import TyperGroup

from api.audit_cli import audit as audit_command
from api.audit_cli import audited
from api.budgets_cli import budgets_cli
from api.campaigns_cli import campaigns_cli
from api.channel_accounts_cli import channels_cli
from api.dead_letters_cli import dead_letters_cli
from api.segments_cli import segments_cli
from api.uploads_cli import uploads_cli
from channels.providers import providers_cli
from processors.alert_cli import alerts_cli
from rules.cli import rules_cli
from settings import Settings, SwitchboardError, redact_url
from settings.permissions import BUILT_IN_ROLES, PERMISSIONS

if TYPE_CHECKING:
    from api.access_cli import Shell
    from api.person_rights import Actor, DataRights
    from localparts.supervisor import LocalParts
    from state.apps import AppRegistry
    from state.operators import Locale, OperatorGrant

T = TypeVar("T")
PARTS_UP = "start the local parts with `switchboard parts up`"


class Commands(TyperGroup):
    """Every command runs through here: a mistake the user can fix becomes one or two lines on stderr
    and exit status 1 (2 for a setting); anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer vendors click, and its Context class is private
        try:
            return super().invoke(ctx)
        except Exception as exc:
            explained = user_error(exc)
            if explained is None:
                raise
            message, status = explained
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(status) from None


def user_error(exc: BaseException) -> tuple[str, int] | None:
    """What to tell the user about `exc`, with the exit status; None when it is not their mistake."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisClusterException

    if isinstance(exc, SwitchboardError):
        return str(exc), 1
    if isinstance(exc, ValidationError) and exc.title == Settings.__name__:
        return settings_problem(exc), 2
    if isinstance(exc, SettingsError):
        # pydantic-settings names the field in quotes: 'error parsing value for field "webhook_allow" ...'
        field = str(exc).split('"')[1] if str(exc).count('"') >= 2 else "?"
        return f"SWITCHBOARD_{field.upper()}: cannot be parsed ({exc.__cause__ or 'expected JSON'})", 2
    if isinstance(exc, RedisConnectionError | RedisClusterException):
        return f"cannot reach Redis at {redact_url(Settings().redis)} ({exc}); {PARTS_UP}", 1
    if type(exc).__name__ == "KafkaConnectionError":  # aiokafka's, not imported just to compare
        return f"cannot reach the Kafka broker at {redact_url(Settings().kafka)}; {PARTS_UP}", 1
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}", 1
    return None


def settings_problem(exc: Any) -> str:
    """A Settings validation error as `SWITCHBOARD_NAME: what is wrong (got value)`; secrets not echoed."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        message = str(error["msg"]).removeprefix("Value error, ")
        secret = "secret" in field or "password" in field
        given = str(error.get("input", ""))
        if "@" in given:  # a URL's credentials, even one too malformed to parse
            given = "***@" + given.rsplit("@", 1)[1]
        shown = "" if secret or "input" not in error else f" (got {given[:80]!r})"
        lines.append(f"SWITCHBOARD_{field.upper()}: {message}{shown}")
    more = f"; and {len(lines) - 1} more" if len(lines) > 1 else ""
    return lines[0] + more


# The command line. Each command only parses arguments and hands over; imports are local so that
# `switchboard --help` and the light commands do not load Faust, chdb or the rule engine.

cli = typer.Typer(
    cls=Commands,
    no_args_is_help=True,
    help="Switchboard: a unified message platform.",
    pretty_exceptions_show_locals=False,
)
users_cli = typer.Typer(no_args_is_help=True, help="Manage the user directory.")
apps_cli = typer.Typer(no_args_is_help=True, help="Manage upstream apps and their API keys.")
parts_cli = typer.Typer(no_args_is_help=True, help="Start and stop the local parts (broker, Redis).")
redis_cli = typer.Typer(no_args_is_help=True, help="Maintain the Redis state.")
cli.add_typer(users_cli, name="users")
cli.add_typer(redis_cli, name="redis")
cli.add_typer(apps_cli, name="apps")
cli.add_typer(parts_cli, name="parts")
cli.add_typer(rules_cli, name="rules")
cli.add_typer(providers_cli, name="providers")
cli.add_typer(alerts_cli, name="alerts")
cli.add_typer(channels_cli, name="channels")
cli.add_typer(dead_letters_cli, name="dead-letters")
cli.command("audit")(audit_command)
cli.add_typer(budgets_cli, name="budgets")
cli.add_typer(segments_cli, name="segments")
cli.add_typer(uploads_cli, name="uploads")
cli.add_typer(campaigns_cli, name="campaigns")


def quiet_url_loggers() -> None:
    """httpx logs every request URL at INFO, and providers put tokens in URLs (WeChat access_token,
    DingTalk sign, WeCom key); hpack logs HTTP/2 headers, bearer tokens included, at DEBUG. Keep those
    loggers at WARNING so no secret reaches a log."""
    import logging

    for name in ("httpx", "httpcore", "hpack", "h2"):
        logging.getLogger(name).setLevel(logging.WARNING)


def ready_to_serve(settings: Settings) -> Settings:
    """Refuse to start a worker or the API on a link secret anyone could know, or with its parts down:
    one line now instead of a traceback from deep inside Faust or uvicorn."""
    settings = settings.model_copy(update={"link_secret": settings.signing_secret()})
    require_redis(settings.redis)
    require_kafka(settings.kafka)
    return settings


def require_redis(url: str) -> None:
    from urllib.parse import urlsplit

    import redis
    from redis.cluster import ClusterNode, RedisCluster
    from redis.exceptions import RedisClusterException

    from state.connection import cluster_nodes, is_cluster_url
    from state.key_migration import OLD_INDEXES

    client: redis.Redis | RedisCluster
    try:
        if is_cluster_url(url):
            parts = urlsplit(url)
            client = RedisCluster(
                # redis-py's sync ClusterNode has no annotations; the async one (state/connection.py) has.
                startup_nodes=[ClusterNode(h, p) for h, p in cluster_nodes(url)],  # type: ignore[no-untyped-call]
                username=parts.username,
                password=parts.password,
                ssl=parts.scheme.startswith("rediss"),
                socket_connect_timeout=2,
                socket_timeout=2,
            )
        else:
            client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    except ValueError as exc:
        raise SwitchboardError(f"SWITCHBOARD_REDIS={redact_url(url)}: {exc}") from None
    except (redis.RedisError, RedisClusterException) as exc:
        raise SwitchboardError(f"cannot reach Redis at {redact_url(url)} ({exc}); {PARTS_UP}") from None
    try:
        client.ping()
        old_layout = client.exists(*OLD_INDEXES)
    except (redis.RedisError, RedisClusterException) as exc:
        raise SwitchboardError(f"cannot reach Redis at {redact_url(url)} ({exc}); {PARTS_UP}") from None
    finally:
        client.close()
    if old_layout:
        # The new code would not see that state: schedules, chains and apps would look empty.
        raise SwitchboardError(
            f"Redis at {redact_url(url)} holds state under the old key names; "
            "stop every worker and the API, then run `switchboard redis migrate`"
        )


def require_kafka(url: str) -> None:
    """Some bootstrap server accepts a connection (Faust itself would retry for minutes, logging)."""
    servers = url.removeprefix("kafka://").strip("/").split(",")
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except (OSError, ValueError):
            continue
    raise SwitchboardError(f"cannot reach the Kafka broker at {redact_url(url)}; {PARTS_UP}")


@cli.command()
def worker(loglevel: str = "info") -> None:
    """Run a stream worker: ingest, decide, send and track."""
    from processors.runtime import run_worker

    settings = ready_to_serve(Settings())
    quiet_url_loggers()
    run_worker(settings, loglevel=loglevel)


def click_tokens(settings: Settings) -> Callable[[str], str | None]:
    """The message id a click-link token names, or None for a token that is forged, altered or not a
    click link: what the analytics service credits a conversion's `token` to."""
    from channels.links import LinkRejected, LinkSigner

    signer = LinkSigner(settings.signing_secret(), settings.public_url)

    def verify(token: str) -> str | None:
        try:
            return signer.verify("click", token).message_id
        except LinkRejected:
            return None

    return verify


@cli.command()
def analytics() -> None:
    """Run the analytics service: receipts and accepted events into ClickHouse, and for the embedded
    engine ClickHouse's HTTP interface on SWITCHBOARD_ANALYTICS_HOST:SWITCHBOARD_ANALYTICS_PORT."""
    import logging
    from collections.abc import Mapping

    from analytics.serve import serve_analytics
    from state.connection import open_redis
    from state.flow_counters import FlowCounters

    settings = Settings()
    require_redis(settings.redis)
    require_kafka(settings.kafka)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        redis = open_redis(settings.redis, patient=True)  # an outage pauses the service, never ends it
        counters = FlowCounters(redis)

        async def progress(counts: Mapping[str, int]) -> None:
            # What the service wrote, counted where the workers count what they produced.
            await counters.add(
                {"rows": counts["rows"], "logged": counts["logged"], "conversions": counts["conversions"]}
            )

        try:
            await serve_analytics(settings, progress, click_tokens(settings))
        finally:
            await redis.aclose()

    asyncio.run(run())


@cli.command()
def api() -> None:
    """Run the HTTP API (events in, inbox, health)."""
    from api.server import serve

    settings = ready_to_serve(Settings())
    quiet_url_loggers()
    serve(settings)


@cli.command()
def demo(
    size: Annotated[int, typer.Option(help="people in the sample university")] = 5000,
    keep_running: Annotated[bool, typer.Option(help="leave the parts running afterwards")] = False,
) -> None:
    """Start everything locally, load a sample university, send a realistic mix, report reach."""
    from demo.run import run_demo

    raise typer.Exit(run_demo(Settings(), size=size, keep_running=keep_running))


@cli.command()
def report(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (reach report or funnel)")] = False,
    by: Annotated[
        str | None, typer.Option(help="group by channel,provider,app,template,rule,campaign,variant")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="7d, 12h, 2026-11-01 or an ISO time (funnel: default 7d)")
    ] = None,
    until: Annotated[str | None, typer.Option(help="end of the period, same forms (default now)")] = None,
    app: Annotated[str | None, typer.Option(help="one app's messages only")] = None,
    interval: Annotated[str | None, typer.Option(help="day or hour: one line per interval")] = None,
    format: Annotated[
        Literal["table", "json", "csv"] | None, typer.Option(help="funnel output: table, json or csv")
    ] = None,
    chart: Annotated[Path | None, typer.Option(help="also draw the funnel into this PNG file")] = None,
    source: Annotated[
        Literal["raw", "rollup"] | None,
        typer.Option(help="raw (exact, 13 months) or rollup (daily, 5 years); default: by --since"),
    ] = None,
) -> None:
    """Without options, the reach report per channel; with any of --by/--since/--until/--interval/--format/
    --chart, the reach and conversion funnel (decided → sent → delivered → opened → clicked → converted)."""
    settings = Settings()
    if not any(value is not None for value in (by, since, until, interval, format, chart, source)):
        from analytics.report import as_dict, open_report_source, print_table, reach_report

        result = reach_report(open_report_source(settings), app=app)
        if as_json:
            print(json.dumps(as_dict(result), default=str))
        else:
            print_table(result)
        return
    from analytics.funnel import funnel_query, funnel_report
    from analytics.funnel_output import as_csv, check_chart_path, print_whole, render_table, write_chart

    query = funnel_query(since=since, until=until, by=by, app=app, interval=interval, source=source)
    if chart is not None:
        check_chart_path(chart)
    result_funnel = funnel_report(_analytics_reader(settings), query)
    shown = format or ("json" if as_json else "table")
    if shown == "json":
        print(json.dumps(result_funnel.as_dict(), ensure_ascii=False))
    elif shown == "csv":
        sys.stdout.write(as_csv(result_funnel))
    else:
        print_whole(render_table(result_funnel))
    if chart is not None:
        try:
            write_chart(result_funnel, chart)
        except OSError as exc:
            raise SwitchboardError(f"--chart {chart}: cannot write it ({exc.strerror or exc})") from None
        typer.echo(f"chart written to {chart}", err=True)


@cli.command()
def why(
    user: Annotated[str, typer.Argument(help="the person's user id (or address id)")],
    message: Annotated[str | None, typer.Option(help="one message id")] = None,
    event: Annotated[str | None, typer.Option(help="the messages of one event id")] = None,
    app: Annotated[str | None, typer.Option(help="one app's messages only")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Why USER got (or did not get) a message: every step from the accepted event to the conversion, and
    what Redis still holds pending (scheduled, parked, fallback armed). Latest 50 messages by default."""
    from api.analytics_reader import LazyReader
    from api.trace import Tracer, describe
    from state.connection import open_redis

    if message and event:
        raise SwitchboardError("why: give --message or --event, not both")
    settings = Settings()
    require_redis(settings.redis)
    reader = LazyReader(lambda: _analytics_reader(settings))

    async def run() -> list[Any]:
        redis = open_redis(settings.redis)
        try:
            tracer = Tracer(reader, redis)
            ids = [message] if message else await tracer.messages_of(user, event_id=event, app=app)
            return await tracer.trace(ids, app=app)
        finally:
            await redis.aclose()

    # The reader raises its own errors here (no API to turn them into 503s), so they reach the user.
    reader_errors = _reader_errors()
    try:
        traces = asyncio.run(run())
    except reader_errors as exc:
        raise SwitchboardError(getattr(exc, "reason", str(exc))) from None
    others = sorted({t.user_id for t in traces if t.user_id and t.user_id != user})
    if others:
        raise SwitchboardError(f"message {message} is not {user}'s: it was for {', '.join(others)}")
    if not traces:
        what = f"message {message}" if message else f"message of event {event}" if event else "messages"
        raise SwitchboardError(f"no {what} for {user} in analytics, nor pending in Redis")
    if as_json:
        print(json.dumps([t.as_dict() for t in traces], ensure_ascii=False))
        return
    for trace in traces:
        typer.echo("\n".join(describe(trace)))


def _reader_errors() -> tuple[type[Exception], ...]:
    from api.analytics_reader import AnalyticsUnavailable

    return (AnalyticsUnavailable,)


def _analytics_reader(settings: Settings) -> Any:
    """The ClickHouse client reports and `why` read with (`open_reader`: through the analytics service
    while it runs); a SwitchboardError while there is no data yet."""
    from analytics.report import open_report_source

    return open_report_source(settings)


@cli.command()
def variants(
    rule: Annotated[str, typer.Option("--rule", help="the rule's id")],
    since: Annotated[str, typer.Option(help="decided since: 30m, 12h, 7d, 2w or a date (UTC)")] = "7d",
    format: Annotated[Literal["table", "json", "csv"], typer.Option(help="table, json or csv")] = "table",
) -> None:
    """Compare a rule's variants: conversion with 95 % intervals, lift over the control share
    (else the first variant) and its p-value. Reads the analytics service while it runs."""
    from datetime import UTC, datetime

    from analytics.connection import open_reader
    from analytics.variants import as_csv, as_dict, parse_since, print_table, require_events, variant_report

    settings = Settings()
    start = parse_since(since, datetime.now(UTC))
    client = open_reader(settings)
    try:
        require_events(client)
        result = variant_report(client, rule, start, first=_first_variant(settings, rule))
    finally:
        client.close()
    if format == "json":
        print(json.dumps(as_dict(result)))
    elif format == "csv":
        print(as_csv(result), end="")
    else:
        print_table(result)


def _first_variant(settings: Settings, rule_id: str) -> str:
    """The rule's first variant in the current rules (the baseline when it has no control share);
    '' when the rules do not load or no longer have the rule: the report then takes the first by name."""
    from rules.loader import RuleFileError, load_ruleset

    try:
        ruleset = load_ruleset(settings.rules)
    except (RuleFileError, OSError):
        return ""
    rule = next((r for r in ruleset.rules if r.id == rule_id), None)
    return rule.then.variants[0].name if rule is not None and rule.then.variants else ""


@cli.command()
def broadcasts(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="how many of the latest to list")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Broadcasts (all, tags, segments), newest first: recipients expanded so far of the estimate."""
    from state.broadcasts import BroadcastJobs
    from state.connection import open_redis

    async def run() -> list[Any]:
        redis = open_redis(Settings().redis)
        try:
            return await BroadcastJobs(redis).recent(limit)
        finally:
            await redis.aclose()

    jobs = asyncio.run(run())
    if not jobs and not as_json:
        typer.echo("no broadcasts yet (an event to all, tags or a segment larger than one page)")
    for job in jobs:
        if as_json:
            fields = ("job_id", "lane", "state", "expanded", "total", "cursor", "created_at", "finished_at")
            typer.echo(json.dumps({name: getattr(job, name) for name in fields}))
            continue
        share = f"{100 * job.expanded / job.total:5.1f}%" if job.total else "   -  "
        typer.echo(
            f"{job.job_id:<40} {job.lane:<6} {job.state:<7} {job.expanded:>9,} / ~{job.total:<9,} {share}"
        )


@users_cli.command("import")
def users_import(
    path: Path,
    format: Annotated[
        Literal["csv", "jsonl"] | None, typer.Option(help="csv or jsonl (default: from the extension)")
    ] = None,
) -> None:
    """Import users from CSV or JSON Lines; bad rows are reported, good rows kept."""
    from state.connection import open_redis
    from state.users import UserDirectory
    from state.users_import import check_importable, import_users

    check_importable(path, format)  # before touching Redis: a wrong path is the likelier mistake

    from api.people_cli import import_progress

    started = time.monotonic()

    async def run() -> Any:
        redis = open_redis(Settings().redis)
        try:
            with import_progress(path) as progress:
                return await import_users(path, UserDirectory(redis), format=format, progress=progress)
        finally:
            await redis.aclose()

    def report(result: Any) -> int:
        for error in result.errors[:50]:
            typer.echo(f"{path}:{error.line}: {error.field}: {error.message}", err=True)
        if len(result.errors) > 50:
            typer.echo(f"... and {len(result.errors) - 50} more errors", err=True)
        took = time.monotonic() - started
        typer.echo(f"imported {result.imported}, rejected {result.rejected} in {took:.1f} s")
        return 1 if result.rejected else 0

    result = _audited(
        "users.import", str(path.resolve()), lambda: asyncio.run(run()), target_kind="file",
        outcome_of=lambda r: {"imported": r.imported, "rejected": r.rejected},
    )
    raise typer.Exit(report(result))


def _audited(action: str, target: str, act: Callable[[], T], **fields: Any) -> T:
    """`audited` (api/audit_cli.py) once Redis answers, so a Redis that is down is named first as ever;
    then the broker must answer too, or the action is refused: it could not be audited."""
    require_redis(Settings().redis)
    result: T = audited(action, target, act, **fields)
    return result


def _with_apps(action: Callable[[AppRegistry], Awaitable[T]]) -> T:
    """Run one registry action against SWITCHBOARD_REDIS."""
    from state.apps import AppRegistry
    from state.connection import open_redis

    async def run() -> T:
        redis = open_redis(Settings().redis)
        try:
            return await action(AppRegistry(redis))
        finally:
            await redis.aclose()

    return asyncio.run(run())


_AppName = Annotated[str, typer.Argument(help="the app's name")]


def _audited_apps(action: Callable[[AppRegistry], Awaitable[T]], audit: str, name: str, **fields: Any) -> T:
    """Run one registry change against SWITCHBOARD_REDIS and audit it (as the shell's user, from `cli`)."""
    from api.access_cli import in_shell

    async def run(shell: Shell) -> T:
        result = await action(shell.apps)
        await shell.audit(audit, "app", name, app=name, **fields)
        return result

    return in_shell(run)


@apps_cli.command("add")
def apps_add(
    name: _AppName,
    channels: Annotated[str, typer.Option(help="comma-separated authorised channels")],
    description: str = "",
) -> None:
    """Register an upstream app; prints its API key (and events signing key) once."""
    from records.signing import events_signing_key
    from state.apps import app_name, channel_names

    app_name(name)  # checked before Redis is reached, so a typo is named even with Redis down
    wanted = channel_names(channels.split(","))
    key = _audited_apps(lambda apps: apps.register(name, wanted, description), "app.register", name,
                        after={"name": name, "channels": sorted(wanted), "description": description})
    typer.echo(f"app {name} registered; its API key (shown once): {key}; "
               f"events signing key: {events_signing_key(key)}")


@apps_cli.command("list")
def apps_list() -> None:
    """List the registered apps, their channels and whether they are enabled (keys are never shown)."""
    registered = _with_apps(lambda apps: apps.list())
    if not registered:
        typer.echo("no apps registered; add one with `switchboard apps add NAME --channels inbox,email`")
    for app in registered:
        state = "enabled" if app.enabled else "disabled"
        channels = ",".join(sorted(app.channels))
        typer.echo(f"{app.name:<20} {state:<8} {channels:<30} {app.description}".rstrip())


@apps_cli.command("rotate")
def apps_rotate(name: _AppName) -> None:
    """Issue a new API key (and events signing key) for the app; the old ones stop working at once."""
    from records.signing import events_signing_key

    key = _audited_apps(lambda apps: apps.rotate_key(name), "app.rotate_key", name)
    typer.echo(f"app {name}: new API key (shown once): {key}; the old key no longer works; "
               f"events signing key: {events_signing_key(key)}")


@apps_cli.command("disable")
def apps_disable(name: _AppName) -> None:
    """Refuse the app's key and dead-letter its events, until `apps enable`."""
    _audited_apps(lambda apps: apps.set_enabled(name, False), "app.disable", name, after={"enabled": False})
    typer.echo(f"app {name} disabled: its key is refused and its events dead-lettered until enabled again")


@apps_cli.command("enable")
def apps_enable(name: _AppName) -> None:
    """Accept the app's key and events again (the same key as before)."""
    _audited_apps(lambda apps: apps.set_enabled(name, True), "app.enable", name, after={"enabled": True})
    typer.echo(f"app {name} enabled")


@apps_cli.command("channels")
def apps_channels(
    name: _AppName, channels: Annotated[str, typer.Argument(help="comma-separated authorised channels")]
) -> None:
    """Change the channels the app may send on."""
    from state.apps import channel_names

    wanted = channel_names(channels.split(","))
    _audited_apps(lambda apps: apps.set_channels(name, wanted), "app.channels", name, after=sorted(wanted))
    typer.echo(f"app {name} may send on {','.join(sorted(wanted))}")


@apps_cli.command("remove")
def apps_remove(name: _AppName) -> None:
    """Forget the app and its key; its events are refused as from an unknown app."""
    _audited_apps(lambda apps: apps.remove(name), "app.remove", name)
    typer.echo(f"app {name} removed; its key no longer works")


@redis_cli.command("migrate")
def redis_migrate() -> None:
    """Move state written before the hash-tagged key layout to its new names (once, workers stopped)."""
    from state.connection import open_redis
    from state.key_migration import migrate_keys

    async def run() -> dict[str, int]:
        redis = open_redis(Settings().redis)
        try:
            return await migrate_keys(redis)
        finally:
            await redis.aclose()

    moved = audited(
        "redis.migrate", redact_url(Settings().redis), lambda: asyncio.run(run()), target_kind="redis",
        outcome_of=dict,
    )
    counts = ", ".join(f"{kind} {count}" for kind, count in moved.items())
    typer.echo(f"moved to the hash-tagged layout: {counts}" if any(moved.values()) else "nothing to move")


@parts_cli.command("up")
def parts_up() -> None:
    """Start the broker and Redis on loopback (reusing ones already healthy)."""
    _parts().up()
    parts_status()


@parts_cli.command("down")
def parts_down() -> None:
    """Stop the local parts started by `parts up`."""
    stopped = _parts().stop_recorded()
    for part in stopped:
        typer.echo(str(part))
    if not stopped:
        typer.echo("nothing to stop: no local part started by `switchboard parts up` is running")


@parts_cli.command("status")
def parts_status() -> None:
    """Show whether each local part is running and healthy."""
    for status in _parts().status():
        typer.echo(str(status))


def _parts() -> LocalParts:
    from localparts.supervisor import LocalParts

    return LocalParts.from_settings(Settings())


# Operators and roles (api/access_cli.py does the work; imported when a command runs, not for --help).
operators_cli = typer.Typer(no_args_is_help=True, help="Manage operators: accounts, roles, tokens.")
roles_cli = typer.Typer(no_args_is_help=True, help="List and manage roles (sets of permissions).")
cli.add_typer(operators_cli, name="operators")
cli.add_typer(roles_cli, name="roles")

_Name = Annotated[str, typer.Argument(help="the operator's name")]
_Grant = Annotated[str, typer.Argument(help="ROLE over every app, or ROLE@app1,app2")]
_PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")]


def _in_shell(action: Callable[[Shell], Awaitable[T]]) -> T:
    from api.access_cli import in_shell

    return in_shell(action)


def _read_password(stdin: bool, what: str) -> str:
    from api.access_cli import read_password

    return read_password(stdin, what)


def _grant(spec: str) -> OperatorGrant:
    from state.operators import OperatorGrant

    return OperatorGrant.parse(spec)


@operators_cli.command("add")
def operators_add(
    name: _Name,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="ROLE or ROLE@app1,app2; repeat for more")
    ] = None,
    display_name: Annotated[str, typer.Option(help="the name people see")] = "",
    email: Annotated[str, typer.Option(help="where to write to them")] = "",
    user_id: Annotated[str | None, typer.Option(help="this operator in the user directory")] = None,
    locale: Annotated[str, typer.Option(help="zh or en")] = "zh",
    password_stdin: _PasswordStdin = False,
) -> None:
    """Create an operator (the first administrator too: `operators add admin --role administrator`)."""
    if locale not in ("zh", "en"):
        raise SwitchboardError(f"--locale must be zh or en, got {locale!r}")
    specs = role or []
    password = _read_password(password_stdin, f"password for {name}")
    grants = [_grant(spec) for spec in specs]
    chosen: Locale = "en" if locale == "en" else "zh"

    async def add(shell: Shell) -> None:
        operator = await shell.operators.create(
            name, password, grants, display_name=display_name, email=email, user_id=user_id, locale=chosen
        )
        await shell.audit("operator.create", "operator", name, after=operator.model_dump(mode="json"))

    _in_shell(add)
    typer.echo(f"operator {name} created with {', '.join(specs) or 'no role yet'}")


@operators_cli.command("list")
def operators_list() -> None:
    """Every operator: state, roles (over which apps), display name."""
    found = _in_shell(lambda shell: shell.operators.list())
    if not found:
        typer.echo(
            "no operators yet; create the first with `switchboard operators add admin --role administrator`"
        )
    for op in found:
        grants = " ".join(str(g) for g in op.grants) or "-"
        typer.echo(f"{op.name:<20} {op.state:<9} {grants:<40} {op.display_name}".rstrip())


@operators_cli.command("grant")
def operators_grant(name: _Name, grant: _Grant) -> None:
    """Grant a role over every app, or over some (`sender@lms,bursar`)."""

    async def run(shell: Shell) -> None:
        before, after = await shell.operators.grant(name, grant)
        await shell.audit(
            "role.grant",
            "operator",
            name,
            before=[str(g) for g in before.grants],
            after=[str(g) for g in after.grants],
        )

    _in_shell(run)
    typer.echo(f"operator {name} now holds {grant}")


@operators_cli.command("revoke")
def operators_revoke(
    name: _Name,
    role: Annotated[str, typer.Argument(help="the role to take away")],
    apps: Annotated[str | None, typer.Option(help="only over these apps (comma-separated)")] = None,
) -> None:
    """Take a role away, entirely or over some apps."""
    scope = [a.strip() for a in apps.split(",") if a.strip()] if apps else None

    async def run(shell: Shell) -> None:
        before, after = await shell.operators.revoke(name, role, scope)
        await shell.audit(
            "role.revoke",
            "operator",
            name,
            before=[str(g) for g in before.grants],
            after=[str(g) for g in after.grants],
        )

    _in_shell(run)
    typer.echo(f"operator {name}: {role} revoked{' over ' + apps if apps else ''}")


def _set_state(name: str, state: str, action: str) -> None:
    async def run(shell: Shell) -> None:
        before, after = await shell.operators.set_state(name, "locked" if state == "locked" else "active")
        if state == "active":
            await shell.failures.unlock(name)
        await shell.audit(
            action, "operator", name, before={"state": before.state}, after={"state": after.state}
        )

    _in_shell(run)


@operators_cli.command("lock")
def operators_lock(name: _Name) -> None:
    """Lock the operator out (sessions ended, tokens refused) until unlocked."""
    _set_state(name, "locked", "operator.lock")
    typer.echo(f"operator {name} locked")


@operators_cli.command("unlock")
def operators_unlock(name: _Name) -> None:
    """Unlock the operator (also ends a lockout after failed logins)."""
    _set_state(name, "active", "operator.unlock")
    typer.echo(f"operator {name} unlocked")


@operators_cli.command("reset-password")
def operators_reset_password(name: _Name, password_stdin: _PasswordStdin = False) -> None:
    """Set a new password (ends the operator's sessions)."""
    password = _read_password(password_stdin, f"new password for {name}")

    async def run(shell: Shell) -> None:
        await shell.operators.set_password(name, password)
        await shell.audit("operator.password_reset", "operator", name)

    _in_shell(run)
    typer.echo(f"operator {name}: password reset, sessions ended")


@operators_cli.command("token")
def operators_token(
    name: _Name, label: Annotated[str, typer.Option(help="what the token is for")] = ""
) -> None:
    """Issue a personal API token for the operator (shown once)."""

    async def run(shell: Shell) -> str:
        token = await shell.operators.issue_token(name, label)
        await shell.audit("operator.token_issue", "operator", name, after={"label": label})
        return token

    token = _in_shell(run)
    typer.echo(f"operator {name}: personal API token (shown once): {token}")


@roles_cli.command("list")
def roles_list() -> None:
    """Every role (built-in or custom) and its permissions."""
    roles = _in_shell(lambda shell: shell.operators.roles.all())
    for name, permissions in roles.items():
        kind = "built-in" if name in BUILT_IN_ROLES else "custom"
        typer.echo(f"{name:<18} {kind:<9} {','.join(sorted(permissions))}")


@roles_cli.command("add")
def roles_add(
    name: Annotated[str, typer.Argument(help="the custom role's name")],
    permissions: Annotated[str, typer.Option(help=f"comma-separated, of: {', '.join(PERMISSIONS)}")],
) -> None:
    """Create or change a custom role; its holders have the new permissions at once."""
    wanted = [p.strip() for p in permissions.split(",") if p.strip()]

    async def run(shell: Shell) -> None:
        before, after = await shell.operators.roles.put(name, wanted)
        await shell.audit(
            "role.create" if before is None else "role.change",
            "role",
            name,
            before=sorted(before) if before is not None else None,
            after=sorted(after),
        )

    _in_shell(run)
    typer.echo(f"role {name}: {','.join(sorted(wanted))}")


@roles_cli.command("remove")
def roles_remove(name: Annotated[str, typer.Argument(help="the custom role's name")]) -> None:
    """Remove a custom role nobody holds."""

    async def run(shell: Shell) -> None:
        holders = await shell.operators.holders(name)
        if holders:
            raise SwitchboardError(
                f"role {name!r} is held by {', '.join(holders)}; revoke it from them first"
            )
        before = await shell.operators.roles.remove(name)
        await shell.audit("role.remove", "role", name, before=sorted(before))

    _in_shell(run)
    typer.echo(f"role {name} removed")
people_cli = typer.Typer(no_args_is_help=True, help="People: the directory and its addresses; data rights.")
cli.add_typer(people_cli, name="people")
_UserId = Annotated[str, typer.Argument(help="the person's user id")]


def _with_rights(action: Callable[[DataRights], Awaitable[T]]) -> T:
    """Run one data-rights action (api/person_rights.py) with Redis, the broker and ClickHouse."""
    from api.analytics_reader import LazyReader
    from api.person_rights import data_rights_of
    from api.publisher import KafkaPublisher
    from state.connection import open_redis

    settings = Settings()
    require_redis(settings.redis)
    require_kafka(settings.kafka)
    reader = LazyReader(lambda: _analytics_reader(settings))
    publisher = KafkaPublisher(
        settings.kafka,
        events_topic=settings.topic("events"),
        receipts_topic=settings.topic("receipts"),
        audit_topic=settings.topic("audit"),
        erasures_topic=settings.topic("erasures"),
    )

    async def run() -> T:
        redis = open_redis(settings.redis)
        await publisher.start()
        try:
            return await action(data_rights_of(settings, redis, publisher, reader))
        finally:
            await publisher.stop()
            await redis.aclose()

    try:
        return asyncio.run(run())
    except _reader_errors() as exc:
        raise SwitchboardError(getattr(exc, "reason", str(exc))) from None


def _cli_actor() -> Actor:
    """The shell's user, as every command audits it (`cli:<os user>`, api/audit_cli.py)."""
    from api.audit_cli import cli_actor
    from api.person_rights import Actor

    return Actor(cli_actor(), "system", "cli")


@people_cli.command("export")
def people_export(
    user_id: _UserId,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="write here (default: stdout)")
    ] = None,
    history_limit: Annotated[int, typer.Option(min=1, max=100_000, help="rows per history table")] = 10_000,
    history_offset: Annotated[int, typer.Option(min=0, help="skip this many history rows")] = 0,
) -> None:
    """Everything held about USER_ID as one JSON document (format switchboard.person/1); audited."""
    document = _with_rights(
        lambda rights: rights.export(user_id, _cli_actor(), history_limit, history_offset)
    )
    text = json.dumps(document, ensure_ascii=False, indent=2)
    if output is None:
        print(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise SwitchboardError(f"--output {output}: cannot write it ({exc.strerror or exc})") from None
    more = document["history"]["more"]
    typer.echo(f"wrote {output}" + (f"; history truncated for {', '.join(more)}" if more else ""))


@people_cli.command("erase")
def people_erase(
    user_id: _UserId,
    reason: Annotated[str, typer.Option(help="why (kept in the audit log; the id itself is blanked)")],
    mode: Annotated[
        Literal["anonymise", "delete"], typer.Option(help="anonymise rows (counts stay) or delete them")
    ] = "anonymise",
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Erase USER_ID: Redis cleared (refusals kept under address hashes), ClickHouse rows anonymised."""
    if len(reason.strip()) < 3:
        raise SwitchboardError("--reason: say why, at least 3 characters (kept in the audit log)")
    if not yes and not typer.confirm(f"erase everything held about {user_id} ({mode})?", default=False):
        raise SwitchboardError("not erased: not confirmed (pass --yes to skip the question)")
    done = _with_rights(lambda rights: rights.erase(user_id, _cli_actor(), reason, mode))
    removed = ", ".join(f"{n} {what}" for what, n in sorted(done["removed"].items())) or "nothing left"
    typer.echo(
        f"erased {user_id} as {done['pseudonym']}: Redis {removed}; kept {done['kept_refusals']} refusals"
    )
    typer.echo(f"ClickHouse: {done['clickhouse']} (request {done['request_id']})")
    for key in done["unknown_keys"]:
        typer.echo(f"warning: left key {key}: named by the person, no eraser knows it", err=True)


@people_cli.command("pseudonym")
def people_pseudonym(user_id: _UserId) -> None:
    """The pseudonym USER_ID is recorded under once erased (and in data-rights audit records)."""
    from api.person_rights import pseudonym_key
    from records.erasure import pseudonym

    typer.echo(pseudonym(pseudonym_key(Settings().signing_secret().get_secret_value()), user_id))


# --- consent: the whitelist, test mode, a person's opt-ins (audited as the shell's user, from `cli`) ---

whitelist_cli = typer.Typer(no_args_is_help=True, help="The whitelist (白名单): trusted receivers.")
test_mode_cli = typer.Typer(no_args_is_help=True, help="Test mode: an app reaches only whitelisted people.")
consent_cli = typer.Typer(no_args_is_help=True, help="A person's consent: standing, opt-ins, withdrawals.")
cli.add_typer(whitelist_cli, name="whitelist")
cli.add_typer(test_mode_cli, name="test-mode")
cli.add_typer(consent_cli, name="consent")
_Subject = Annotated[str, typer.Argument(help="a user id, or an address with --channel")]
_Channel = Annotated[str | None, typer.Option(help="the channel of an address (it is cleaned first)")]
_Category = Annotated[str, typer.Option(help="the category, e.g. marketing")]


def _consent_change(
    action: str, target: tuple[str, str], change: Callable[[Any], Awaitable[tuple[Any, Any, Any]]]
) -> Any:
    """Run `change` (returning before, result, after) on the ConsentStore and audit it as the shell's
    user from `cli`, like the operators commands (`api.access_cli`): Redis and the broker are reached
    first, so nothing changes that its audit record could not follow."""
    from api.access_cli import audited_shell
    from state.connection import open_redis
    from state.consent import ConsentStore

    settings = Settings()

    async def run() -> Any:
        async with audited_shell(settings) as shell:
            redis = open_redis(settings.redis)
            try:
                store = ConsentStore(redis, opt_in=settings.consent_opt_in, test_mode=settings.test_mode)
                try:
                    before, result, after = await change(store)
                except ValueError as exc:
                    raise SwitchboardError(str(exc)) from None
                app = target[1] if target[0] == "app" else ""
                await shell.audit(action, target[0], target[1], app=app, before=before, after=after)
                return result
            finally:
                await redis.aclose()

    return asyncio.run(run())


def _dumped(entry: Any) -> Any:
    return None if entry is None else entry.model_dump(mode="json")


def _listed(subject: str, channel: str | None) -> str:
    """The subject as the lists keep it: a user id as the API accepts one, or a cleaned address."""
    import re

    from channels.addresses import AddressRefused, clean

    if channel is None:
        if not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,128}", subject):
            raise SwitchboardError(f"{subject[:64]!r} is not a user id; give --channel for an address")
        return subject
    cleaned = clean(channel, subject)
    if isinstance(cleaned, AddressRefused):
        raise SwitchboardError(f"{subject!r} is not a {channel} address: {cleaned.reason}")
    return cleaned.value


@whitelist_cli.command("add")
def whitelist_add(
    subject: _Subject, reason: Annotated[str, typer.Option(help="why")], channel: _Channel = None
) -> None:
    """Whitelist a person or an address (caps may exempt them; test mode reaches only them)."""
    listed = _listed(subject, channel)

    async def add(store: Any) -> Any:
        before = await store.whitelist.get(listed)
        entry = await store.whitelist.add(listed, reason)
        return _dumped(before), entry, _dumped(entry)

    _consent_change("whitelist.add", ("subject", listed), add)
    typer.echo(f"whitelisted {listed}")


@whitelist_cli.command("remove")
def whitelist_remove(subject: _Subject, channel: _Channel = None) -> None:
    """Take a person or an address off the whitelist."""
    listed = _listed(subject, channel)

    async def remove(store: Any) -> Any:
        before = await store.whitelist.get(listed)
        if before is None:
            raise ValueError(f"{listed!r} is not whitelisted")
        await store.whitelist.remove(listed)
        return _dumped(before), None, None

    _consent_change("whitelist.remove", ("subject", listed), remove)
    typer.echo(f"{listed} is no longer whitelisted")


@whitelist_cli.command("list")
def whitelist_list() -> None:
    """Every whitelisted person and address, with why and since when."""
    from state.connection import open_redis
    from state.whitelist import Whitelist

    async def run() -> list[Any]:
        redis = open_redis(Settings().redis)
        try:
            return await Whitelist(redis).entries()
        finally:
            await redis.aclose()

    entries = asyncio.run(run())
    if not entries:
        typer.echo("the whitelist is empty; add with `switchboard whitelist add SUBJECT --reason WHY`")
    for entry in entries:
        typer.echo(f"{entry.subject:<40} {entry.at.isoformat(timespec='seconds')}  {entry.reason}")


def _switch_test_mode(app: str, on: bool) -> None:
    import getpass

    async def switch(store: Any) -> Any:
        before = await store.whitelist.test_mode(app)
        after = await store.whitelist.set_test_mode(app, on, by=f"{getpass.getuser()} (cli)")
        return _dumped(before), after, _dumped(after)

    _consent_change("test_mode.set", ("app", app), switch)


@test_mode_cli.command("on")
def test_mode_on(app: _AppName) -> None:
    """From now on the app reaches only whitelisted people; everyone else is suppressed."""
    _switch_test_mode(app, True)
    typer.echo(f"app {app} in test mode: only whitelisted people receive its messages")


@test_mode_cli.command("off")
def test_mode_off(app: _AppName) -> None:
    """The app reaches everyone again."""
    _switch_test_mode(app, False)
    typer.echo(f"app {app} out of test mode")


@test_mode_cli.command("status")
def test_mode_status() -> None:
    """The apps in test mode (and whether SWITCHBOARD_TEST_MODE puts every app in it)."""
    from state.connection import open_redis
    from state.whitelist import Whitelist

    settings = Settings()

    async def run() -> list[Any]:
        redis = open_redis(settings.redis)
        try:
            return await Whitelist(redis).test_mode_apps()
        finally:
            await redis.aclose()

    modes = asyncio.run(run())
    if settings.test_mode:
        typer.echo("every app is in test mode (SWITCHBOARD_TEST_MODE)")
    elif not modes:
        typer.echo("no app is in test mode")
    for mode in modes:
        typer.echo(f"{mode.app:<20} since {mode.at.isoformat(timespec='seconds')} by {mode.by}")


@consent_cli.command("show")
def consent_show(user_id: Annotated[str, typer.Argument(help="the user id")]) -> None:
    """A person's consent as JSON: unsubscriptions, opt-ins (and their history), blacklist, whitelist."""
    from state.connection import open_redis
    from state.consent import ConsentStore

    async def run() -> Any:
        redis = open_redis(Settings().redis)
        try:
            return await ConsentStore(redis).consent(user_id)
        finally:
            await redis.aclose()

    typer.echo(asyncio.run(run()).model_dump_json(indent=2))


@consent_cli.command("opt-in")
def consent_opt_in(
    user_id: Annotated[str, typer.Argument(help="the user id")],
    category: _Category,
    source: Annotated[str, typer.Option(help="where it was given, e.g. 'paper form 2026-11'")],
    channel: Annotated[str | None, typer.Option(help="one channel; every channel when omitted")] = None,
    evidence: Annotated[str, typer.Option(help="what proves it")] = "",
) -> None:
    """Record an opt-in a person gave outside Switchboard (kept with its source, time and evidence)."""

    async def opt_in(store: Any) -> Any:
        before = _dumped(await store.consent(user_id))
        entry = await store.opt_in(
            user_id, category=category, channel=channel, source=source, evidence=evidence
        )
        return before, entry, _dumped(await store.consent(user_id))

    _consent_change("consent.opt_in", ("user", user_id), opt_in)
    typer.echo(f"{user_id} opted in to {category} on {channel or 'every channel'} ({source})")


@consent_cli.command("withdraw")
def consent_withdraw(
    user_id: Annotated[str, typer.Argument(help="the user id")],
    category: _Category,
    channel: Annotated[str | None, typer.Option(help="one channel; every channel when omitted")] = None,
) -> None:
    """Withdraw a person's opt-ins to a category (all its channels, or one)."""
    import getpass

    async def withdraw(store: Any) -> Any:
        before = _dumped(await store.consent(user_id))
        by = f"{getpass.getuser()} (cli)"
        gone = await store.withdraw(user_id, category=category, channel=channel, by=by)
        return before, gone, _dumped(await store.consent(user_id))

    gone = _consent_change("consent.withdraw", ("user", user_id), withdraw)
    typer.echo(f"withdrew {len(gone)} opt-in(s) of {user_id} to {category}")


# Approvals: `switchboard approvals list|show|approve|reject|policies` (api/approval_cli.py).
from api.approval_cli import approvals_cli  # noqa: E402  (each part's group at the end, to merge easily)

cli.add_typer(approvals_cli, name="approvals")

# Stored templates: `switchboard templates list|show|save|preview|diff|publish` (api/templates_cli.py).
from api.templates_cli import templates_cli  # noqa: E402  (each part's group at the end, to merge easily)

cli.add_typer(templates_cli, name="templates")
# People: `switchboard people add|show|update|remove|addresses|list` beside export|erase (api/people_cli.py).
from api.people_cli import add_people_commands  # noqa: E402

add_people_commands(people_cli)


def main() -> None:
    """The `switchboard` console command."""
    sys.exit(cli())


if __name__ == "__main__":
    main()

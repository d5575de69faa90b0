"""The command line's side of the audit log: `audited(...)`, which every administrative command runs its
action through, and `switchboard audit`, which reads the log.

A command is audited like an API call: one record on topic `audit`, published through the API's Kafka
publisher, actor `cli:<os user>`, source `cli`. The broker is checked before the action: when it does
not answer, the command refuses and changes nothing, since its action could not be audited. Should the
broker fail between the check and the record, the action stands and the command fails loudly (exit 1,
saying what was done and that it is not in the audit log).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from records.audit import AuditRecord, Outcome, mask_secrets
from settings import Settings, SwitchboardError, redact_url

if TYPE_CHECKING:
    from api.publisher import KafkaPublisher

T = TypeVar("T")
SOURCE = "cli"


def cli_actor() -> str:
    """`cli:<os user>`: the person with a shell on the server."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = f"uid-{os.getuid()}"
    return f"cli:{user}"


def audited(
    action: str,
    target: str,
    act: Callable[[], T],
    *,
    target_kind: str = "app",
    app: str = "",
    before: Any = None,
    after: Any = None,
    outcome_of: Callable[[T], Any] | None = None,
    settings: Settings | None = None,
) -> T:
    """Run `act` (the command's action) with an audit record, or not at all if it cannot be audited.

    `after` is the state the action leaves (or `outcome_of(result)` describes it); both sides are masked.
    An action that fails is audited as `failed` with its reason, then its error goes on to the user."""
    settings = settings or Settings()

    def record(outcome: Outcome, reason: str = "", result_after: Any = None) -> AuditRecord:
        return AuditRecord(
            actor=cli_actor(),
            actor_kind="system",
            source=SOURCE,
            action=action,
            target_kind=target_kind,
            target=target,
            app=app,
            outcome=outcome,
            reason=reason[:1000],
            before=mask_secrets(before),
            after=mask_secrets(result_after),
        )

    asyncio.run(_publish(settings, None))  # the broker answers, else nothing is done
    try:
        result = act()
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        # The action failed and did nothing; its own error is what the user needs, whatever the broker says.
        with contextlib.suppress(SwitchboardError):
            asyncio.run(_publish(settings, record("failed", reason)))
        raise
    done = record("ok", result_after=outcome_of(result) if outcome_of is not None else after)
    try:
        asyncio.run(_publish(settings, done))
    except SwitchboardError as exc:
        raise SwitchboardError(
            f"{action} {target} was done, but its audit record was not published ({exc}); "
            "tell your auditors, the audit log does not show it"
        ) from None
    return result


def quiet_kafka_client() -> None:
    """aiokafka logs every refused connection at ERROR, which a command line without logging set up
    prints as a second, raw line; the command's own one-line error says it already."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def audit_publisher(settings: Settings) -> KafkaPublisher:
    from api.publisher import KafkaPublisher

    return KafkaPublisher(
        settings.kafka,
        events_topic=settings.topic("events"),
        receipts_topic=settings.topic("receipts"),
        conversions_topic=settings.topic("conversions"),
        audit_topic=settings.topic("audit"),
        check_timeout=5.0,
    )


async def _publish(settings: Settings, record: AuditRecord | None) -> None:
    """Publish `record` (None: only check that the broker answers); SwitchboardError when it does not."""
    from api.publisher import PublishError

    publisher = audit_publisher(settings)
    quiet_kafka_client()
    try:
        await publisher.start()
        await publisher.check()
        if record is not None:
            await publisher.publish_audit(record)
    except PublishError as exc:
        raise SwitchboardError(
            f"cannot audit this action: the Kafka broker at {redact_url(settings.kafka)} did not answer "
            f"({type(exc).__name__}); nothing was changed. Start it (`switchboard parts up`) and retry"
            if record is None
            else f"the broker at {redact_url(settings.kafka)} did not take the audit record: {exc}"
        ) from None
    finally:
        await publisher.stop()


def audit(
    actor: Annotated[str | None, typer.Option(help="who acted: an operator, `cli:<user>`, an app")] = None,
    action: Annotated[
        str | None, typer.Option(help="an action or its prefix: `app.`, `dead_letter.replay`")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="what was acted on (an app, an operator, a letter id)")
    ] = None,
    app: Annotated[str | None, typer.Option(help="one app's entries")] = None,
    outcome: Annotated[str | None, typer.Option(help="ok, denied or failed")] = None,
    since: Annotated[str | None, typer.Option(help="30m, 12h, 1d, 2w, a date or an ISO time")] = None,
    until: Annotated[str | None, typer.Option(help="end, same forms (default now)")] = None,
    limit: Annotated[int, typer.Option(help="entries per page, at most 1000")] = 100,
    cursor: Annotated[
        str | None, typer.Option(help="the next page: the cursor the last page printed")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object: entries and next_cursor")] = False,
) -> None:
    """The audit log, newest first: who did what, when, from where, to what, with what outcome."""
    from analytics.audit_log import audit_query, read_audit
    from analytics.report import open_report_source

    query = audit_query(
        actor=actor,
        action=action,
        target=target,
        app=app,
        outcome=outcome,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    client = open_report_source(Settings())
    try:
        page = read_audit(client, query)
    finally:
        client.close()
    if as_json:
        print(json.dumps({"entries": page.entries, "next_cursor": page.next_cursor}, ensure_ascii=False))
        return
    if not page.entries:
        typer.echo("no audit entries match")
    for entry in page.entries:
        line = (
            f"{entry['at'][:23]}  {entry['actor']:<24} {entry['action']:<24} {entry['target']:<24} "
            f"{entry['app'] or '-':<12} {entry['outcome']:<6} {entry['source']}"
        )
        typer.echo(line.rstrip() + (f"  {entry['reason']}" if entry["reason"] else ""))
    if page.next_cursor:
        typer.echo(f"more: --cursor {page.next_cursor}", err=True)

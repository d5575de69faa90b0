"""ClickHouse `audit_log`: the analytics service appends the records of topic `audit`; auditors read them
newest first, filtered and paged (API `GET /v1/audit`, CLI `switchboard audit`).

Synchronous like the receipts sink: call it on a thread from an asyncio worker.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from pydantic import ValidationError

from analytics.funnel import FunnelError, parse_moment
from analytics.sink import SinkError
from records.audit import AuditRecord
from settings.errors import SwitchboardError

TABLE = "audit_log"
COLUMNS = (
    "at",
    "audit_id",
    "actor",
    "actor_kind",
    "source",
    "action",
    "target_kind",
    "target",
    "app",
    "outcome",
    "reason",
    "before",
    "after",
)
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
OUTCOMES = ("ok", "denied", "failed")
UNREADABLE_ACTION = "audit.unreadable"

AuditTopicRecord = tuple[str, bytes]
"""A record of topic `audit`: where it was (topic:partition:offset) and its value."""


class AuditLogError(SinkError):
    """A batch of audit records could not be inserted; retrying the whole batch is safe."""


class AuditQueryError(SwitchboardError, ValueError):
    """A filter or paging parameter is wrong; `parameter` names it."""

    def __init__(self, message: str, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def read_records(records: Sequence[AuditTopicRecord]) -> list[AuditRecord]:
    """The audit records of a batch; a record that is not one becomes an `audit.unreadable` entry naming
    where it was and what is wrong (never its content, which may hold the secret it was refused for)."""
    read: list[AuditRecord] = []
    for source, value in records:
        try:
            read.append(AuditRecord.model_validate_json(value))
        except ValidationError as exc:
            read.append(unreadable(source, value, exc))
    return read


def unreadable(source: str, value: bytes, exc: ValidationError) -> AuditRecord:
    """The entry kept for a record of topic `audit` that does not validate; stable per record, so a
    redelivered bad record is still one row."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'record'}: {error['msg']}"
        for error in exc.errors(include_url=False)[:5]
    )
    digest = hashlib.blake2b(source.encode() + b"\x1f" + value, digest_size=16).hexdigest()
    return AuditRecord(
        audit_id=f"unreadable-{digest}",
        actor="analytics",
        actor_kind="system",
        source=source,
        action=UNREADABLE_ACTION,
        target_kind="record",
        target=source,
        outcome="failed",
        reason=f"not an audit record ({len(value)} bytes, sha256 "
        f"{hashlib.sha256(value).hexdigest()[:16]}): {problems}"[:2000],
    )


class AuditLog:
    """Appends audit records to the table; the client is passed in."""

    def __init__(self, client: Client, table: str = TABLE) -> None:
        self._client = client
        self._table = table

    def write(self, records: Sequence[AuditRecord]) -> int:
        if not records:
            return 0
        rows = [_row(record) for record in records]
        try:
            self._client.insert(self._table, rows, column_names=list(COLUMNS))
        except Exception as exc:
            raise AuditLogError(
                f"inserting {len(rows)} audit records into {self._table} failed: {exc}"
            ) from exc
        return len(rows)


def _row(record: AuditRecord) -> list[Any]:
    return [
        record.at.astimezone(UTC),
        record.audit_id,
        record.actor,
        record.actor_kind,
        record.source,
        record.action,
        record.target_kind,
        record.target,
        record.app,
        record.outcome,
        record.reason,
        _json(record.before),
        _json(record.after),
    ]


def _json(value: Any) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class AuditQuery:
    """Filters (all optional, combined with AND), a page size and where the page starts."""

    actor: str | None = None
    action: str | None = None  # a prefix: `app.` finds every app action
    target: str | None = None
    app: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT
    after: tuple[datetime, str] | None = None  # the cursor: the last entry of the previous page


def audit_query(
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    app: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    now: datetime | None = None,
) -> AuditQuery:
    """An AuditQuery from what a person types (query parameters, CLI options)."""
    now = now or datetime.now(UTC)
    if not 1 <= limit <= MAX_LIMIT:
        raise AuditQueryError(f"limit={limit}: give 1 to {MAX_LIMIT}", "limit")
    if outcome and outcome not in OUTCOMES:
        raise AuditQueryError(f"outcome={outcome!r}: choose {', '.join(OUTCOMES)}", "outcome")
    try:
        start = parse_moment(since, now) if since else None
        end = parse_moment(until, now, "until") if until else None
    except FunnelError as exc:
        raise AuditQueryError(str(exc), exc.parameter) from None
    return AuditQuery(
        actor=actor or None,
        action=action or None,
        target=target or None,
        app=app or None,
        outcome=outcome or None,
        since=start,
        until=end,
        limit=limit,
        after=decode_cursor(cursor) if cursor else None,
    )


@dataclass(frozen=True)
class AuditPage:
    """Entries newest first, and the cursor of the next page (None on the last one)."""

    entries: list[dict[str, Any]]
    next_cursor: str | None


class AuditLogMissing(SwitchboardError, LookupError):
    """ClickHouse has no audit table yet: the analytics service creates it when it starts."""


def read_audit(client: Client, query: AuditQuery, table: str = TABLE) -> AuditPage:
    """One page of the log, newest first (ties by audit id), each entry once even before merges."""
    if not client.command(f"EXISTS TABLE {table}"):
        raise AuditLogMissing(
            f"ClickHouse has no {table} table yet: the analytics service creates it when it starts "
            "(`switchboard analytics`)"
        )
    conditions: list[str] = []
    parameters: dict[str, Any] = {}
    for name in ("actor", "target", "app", "outcome"):
        value = getattr(query, name)
        if value is not None:
            conditions.append(f"{name} = {{{name}:String}}")
            parameters[name] = value
    if query.action is not None:
        conditions.append("startsWith(action, {action:String})")
        parameters["action"] = query.action
    if query.since is not None:
        conditions.append("at >= {since:DateTime64(3)}")
        parameters["since"] = query.since.astimezone(UTC)
    if query.until is not None:
        conditions.append("at < {until:DateTime64(3)}")
        parameters["until"] = query.until.astimezone(UTC)
    if query.after is not None:
        conditions.append("(at, audit_id) < ({after_at:DateTime64(3)}, {after_id:String})")
        parameters["after_at"], parameters["after_id"] = query.after[0].astimezone(UTC), query.after[1]
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    result = client.query(
        f"SELECT {', '.join(COLUMNS)} FROM {table} FINAL {where} "  # noqa: S608 - names are ours, values bound
        f"ORDER BY at DESC, audit_id DESC LIMIT {query.limit + 1}",
        parameters=parameters,
    )
    rows = [dict(zip(COLUMNS, row, strict=True)) for row in result.result_rows]
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    entries = [_entry(row) for row in rows]
    last = rows[-1] if rows and more else None
    return AuditPage(entries, encode_cursor(_utc(last["at"]), last["audit_id"]) if last else None)


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    entry = dict(row)
    entry["at"] = _utc(row["at"]).isoformat()
    for side in ("before", "after"):
        entry[side] = json.loads(row[side]) if row[side] else None
    return entry


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def encode_cursor(at: datetime, audit_id: str) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{audit_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, audit_id = text.split("|", 1)
        return _utc(datetime.fromisoformat(at)), audit_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise AuditQueryError(
            "cursor is not one this API gave: pass `next_cursor` of the previous page unchanged", "cursor"
        ) from None

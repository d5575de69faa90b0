"""A person's rows in ClickHouse: read them for an export, anonymise (or delete) them for an erasure.

Anonymising rewrites in place with `ALTER TABLE ... UPDATE` mutations, waited for
(`mutations_sync = 2`): `user_id` is not part of any table's sorting key (message_events sorts by
channel, status, message_id, attempt, step, conversion_id; conversions by app, conversion_id; event_log
by app, event_id), so it can be updated; no row is inserted again, so the materialized view feeding
`message_rollup_daily` does not count anything twice and every aggregate (messages and cost by
channel, status, app, day) stays exactly as it was. What changes:
- `message_events`: `user_id` of the person (and of their addresses' ids, for sends to a raw
  address) becomes the pseudonym; the person's id or an address quoted in any row's `reason` (a
  consent refusal names the address's owner) becomes the pseudonym too;
- `conversions`: `user_id`, and attribute values equal to an identifier;
- `event_log`: the person's id or address as a JSON string in `audience` or `payload`;
- any other table with a `user_id` column (added by later migrations): that column.
`delete` mode removes the person's `message_events` and `conversions` rows instead (lightweight
DELETE; the daily rollup keeps its anonymous counts) and anonymises event_log as above, since an
event belongs to its sender, not to one recipient. Either way one `erased` row in message_events
records that it happened, under the pseudonym.

Message ids are kept: they are the sorting key, and re-inserting rows under new ids would be counted
again by the rollup's materialized view. They are hashes of (app, event_id, user_id) without a key, so
whoever already knows the person's old id and an event id can find that message's rows: the rows stay
pseudonymous, not anonymous, against someone who holds the identity already (docs/operators/
data-rights.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from analytics.sink import ReceiptSink
from records.erasure import ErasureRequest
from records.topics import Receipt

SYNC = "SETTINGS mutations_sync = 2"
MAX_HISTORY = 100_000
"""The most rows of one table an export page holds."""

_EVENTS = """
SELECT event_time, message_id, event_id, app, user_id, channel, provider, status, reason, rule_id,
       rule_version, template, campaign, attempt, step, variant, cost, conversion_id
FROM message_events WHERE user_id IN {ids:Array(String)}
ORDER BY event_time, message_id, channel, status, attempt, step
LIMIT 1 BY message_id, channel, status, attempt, step, conversion_id
LIMIT {limit:UInt32} OFFSET {offset:UInt32}
"""
_CONVERSIONS = """
SELECT occurred_at, app, conversion_id, user_id, type, value, currency, message_id, message_app,
       channel, touch, touched_at, model, named_message, attributes
FROM conversions WHERE user_id IN {ids:Array(String)}
ORDER BY occurred_at, app, conversion_id LIMIT 1 BY app, conversion_id
LIMIT {limit:UInt32} OFFSET {offset:UInt32}
"""
# The audience and payload are JSON: an identifier appears in them as a JSON string.
_EVENT_LOG = """
SELECT event_time, app, event_id, payload, audience FROM event_log
WHERE multiSearchAny(audience, {quoted:Array(String)}) OR multiSearchAny(payload, {quoted:Array(String)})
ORDER BY event_time, app, event_id LIMIT 1 BY app, event_id
LIMIT {limit:UInt32} OFFSET {offset:UInt32}
"""


@dataclass(frozen=True)
class HistoryPage:
    """Up to `limit` rows of each table from `offset`; `more` names the tables that hold more."""

    message_events: list[dict[str, Any]]
    conversions: list[dict[str, Any]]
    event_log: list[dict[str, Any]]
    more: list[str]


def history(client: Client, request: ErasureRequest, limit: int = 10_000, offset: int = 0) -> HistoryPage:
    """The rows naming the person (the request's identifiers; nothing is erased by reading)."""
    if not 1 <= limit <= MAX_HISTORY:
        raise ValueError(f"history limit must be between 1 and {MAX_HISTORY}, got {limit}")
    if offset < 0:
        raise ValueError(f"history offset must not be negative, got {offset}")
    common = {"ids": request.row_ids(), "limit": limit + 1, "offset": offset}
    quoted = [json.dumps(value, ensure_ascii=False) for value in request.identifiers()]
    tables = {
        "message_events": [_own_reason(row) for row in _rows(client, _EVENTS, common)],
        "conversions": _rows(client, _CONVERSIONS, common),
        "event_log": [
            _own_audience(row, request) for row in _rows(client, _EVENT_LOG, common | {"quoted": quoted})
        ],
    }
    more = [name for name, rows in tables.items() if len(rows) > limit]
    return HistoryPage(
        message_events=tables["message_events"][:limit],
        conversions=tables["conversions"][:limit],
        event_log=tables["event_log"][:limit],
        more=more,
    )


def apply(client: Client, request: ErasureRequest) -> dict[str, int]:
    """Anonymise or delete the person's rows in every table, then record the `erased` row; returns
    how many rows still name the person in each table (0 when done). Safe to apply twice."""
    ids, pseudo = request.row_ids(), request.pseudonym
    needles = request.identifiers()
    quoted = [json.dumps(value, ensure_ascii=False) for value in needles]
    reason = _scrubbed("reason", needles, pseudo)
    quotes_person = _mentions("reason", needles)
    if request.mode == "delete":
        for table in ("message_events", "conversions"):
            client.command(f"DELETE FROM {table} WHERE user_id IN {{ids:Array(String)}} {SYNC}", {"ids": ids})  # noqa: S608 - our table names
    client.command(
        "ALTER TABLE message_events UPDATE "
        f"user_id = if(user_id IN {{ids:Array(String)}}, {{pseudo:String}}, user_id), reason = {reason} "
        f"WHERE user_id IN {{ids:Array(String)}} OR {quotes_person} {SYNC}",
        {"ids": ids, "pseudo": pseudo},
    )
    client.command(
        "ALTER TABLE conversions UPDATE "
        f"user_id = if(user_id IN {{ids:Array(String)}}, {{pseudo:String}}, user_id), "
        "attributes = mapApply("
        "(k, v) -> (k, if(v IN {needles:Array(String)}, {pseudo:String}, v)), attributes) "
        "WHERE user_id IN {ids:Array(String)} "
        f"OR arrayExists(v -> v IN {{needles:Array(String)}}, mapValues(attributes)) {SYNC}",
        {"ids": ids, "pseudo": pseudo, "needles": needles},
    )
    client.command(
        f"ALTER TABLE event_log UPDATE audience = {_replaced('audience', quoted, pseudo)}, "
        f"payload = {_replaced('payload', quoted, pseudo)} "
        "WHERE multiSearchAny(audience, {quoted:Array(String)}) "
        f"OR multiSearchAny(payload, {{quoted:Array(String)}}) {SYNC}",
        {"quoted": quoted},
    )
    for table in _other_tables(client):
        client.command(
            f"ALTER TABLE `{table}` UPDATE user_id = {{pseudo:String}} "
            f"WHERE user_id IN {{ids:Array(String)}} {SYNC}",
            {"ids": ids, "pseudo": pseudo},
        )
    ReceiptSink(client).write([erased_row(request)])
    return remaining(client, request)


def remaining(client: Client, request: ErasureRequest) -> dict[str, int]:
    """How many rows of each table still name the person (by id, or an identifier in free text)."""
    parameters = {
        "ids": request.row_ids(),
        "needles": request.identifiers(),
        "quoted": [json.dumps(v, ensure_ascii=False) for v in request.identifiers()],
    }
    mentions = _mentions("reason", request.identifiers())
    counts = {
        "message_events": "SELECT count() FROM message_events WHERE user_id IN {ids:Array(String)} "  # noqa: S608 - an expression of escaped literals
        f"OR {mentions}",
        "conversions": "SELECT count() FROM conversions WHERE user_id IN {ids:Array(String)} "
        "OR arrayExists(v -> v IN {needles:Array(String)}, mapValues(attributes))",
        "event_log": "SELECT count() FROM event_log WHERE multiSearchAny(audience, {quoted:Array(String)}) "
        "OR multiSearchAny(payload, {quoted:Array(String)})",
    }
    left = {name: _count(client, sql, parameters) for name, sql in counts.items()}
    for table in _other_tables(client):
        sql = f"SELECT count() FROM `{table}` WHERE user_id IN {{ids:Array(String)}}"  # noqa: S608 - from system.columns
        left[table] = _count(client, sql, parameters)
    return left


def _count(client: Client, sql: str, parameters: dict[str, Any]) -> int:
    return int(client.query(sql, parameters=parameters).result_rows[0][0])


def erased_row(request: ErasureRequest) -> Receipt:
    """The `erased` row: when, which request, under the pseudonym; the same row for the same request."""
    return Receipt(
        event_time=request.requested_at.astimezone(UTC),
        message_id=f"erasure-{request.request_id}",
        user_id=request.pseudonym,
        status="erased",
        reason=f"personal data {'deleted' if request.mode == 'delete' else 'anonymised'} on request "
        f"{request.request_id}",
    )


_OWNER = re.compile(r"\(the address belongs to [^)]*\)")


def _own_reason(row: dict[str, Any]) -> dict[str, Any]:
    """A refusal because of a shared address's other owner names that person (state/consent.py): in
    this person's export, they are not named."""
    return row | {"reason": _OWNER.sub("(the address belongs to another person)", str(row["reason"]))}


def _own_audience(row: dict[str, Any], request: ErasureRequest) -> dict[str, Any]:
    """An event-log row with its audience cut down to the person: the other recipients' ids and
    addresses are theirs, not part of this person's export (GDPR art. 15(4)); only how many remain."""
    try:
        audience = json.loads(row["audience"])
    except ValueError:
        return row | {"audience": None}
    mine = set(request.identifiers())
    ids = [i for i in audience.get("user_ids") or [] if isinstance(i, str)]
    addresses = [a for a in audience.get("addresses") or [] if isinstance(a, dict)]
    own = {
        "user_ids": [i for i in ids if i in mine],
        "addresses": [a for a in addresses if a.get("address") in mine],
        "tags": audience.get("tags"),
        "segment": audience.get("segment"),
        "all": audience.get("all", False),
    }
    others = len(ids) + len(addresses) - len(own["user_ids"]) - len(own["addresses"])
    return row | {"audience": own | {"other_recipients": others}}


def _other_tables(client: Client) -> list[str]:
    """Tables other than the three above holding a `user_id` column (views and rollups hold none)."""
    result = client.query(
        "SELECT table FROM system.columns WHERE database = currentDatabase() AND name = 'user_id' "
        "AND table NOT IN ('message_events', 'conversions', 'event_log') "
        "AND table IN (SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND engine LIKE '%MergeTree')"
    )
    return sorted(str(row[0]) for row in result.result_rows)


def _word(needle: str) -> str:
    # Characters of ids and addresses: a needle is a whole word when none of them touches it, so the
    # id `u1` is not found inside `u10`.
    return r"(^|[^\w.@+\-])" + re.escape(needle) + r"([^\w.@+\-]|$)"


def _mentions(column: str, needles: list[str]) -> str:
    """A condition: `column` holds one of the needles as a whole word."""
    return "(" + " OR ".join(f"match({column}, {_literal(_word(n))})" for n in needles) + ")"


def _scrubbed(column: str, needles: list[str], pseudo: str) -> str:
    """An expression of `column` with each needle, as a whole word, replaced by the pseudonym."""
    expression = column
    for needle in needles:
        replacement = _literal(r"\1" + pseudo + r"\2")
        expression = f"replaceRegexpAll({expression}, {_literal(_word(needle))}, {replacement})"
    return expression


def _replaced(column: str, quoted: list[str], pseudo: str) -> str:
    expression = column
    for value in quoted:
        expression = f"replaceAll({expression}, {_literal(value)}, {_literal(json.dumps(pseudo))})"
    return expression


def _literal(text: str) -> str:
    """A ClickHouse string literal (quotes and backslashes escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _rows(client: Client, sql: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=parameters)
    return [
        {name: _plain(value) for name, value in zip(result.column_names, row, strict=True)}
        for row in result.result_rows
    ]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # Decimal

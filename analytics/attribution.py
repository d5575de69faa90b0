"""Attribution: which message, if any, earns the credit for each conversion of a batch.

For a batch, one query finds the touches (delivered, opened, read, clicked) of the batch's people in
`message_events`; per conversion the rules of its type keep those within their windows before it
happened, and the model picks one (last touch by default). A conversion that names its message (its
`message_id`, or a verified link token) credits that message whenever it reached the person before the
conversion, whatever the windows. The credited message gets a `converted` row in `message_events`
carrying its id, channel, provider, rule, variant, template, campaign and app with the conversion's
id, type, value and currency; every conversion, credited or not, gets a row in `conversions`.

Idempotent on (app, conversion_id): conversions already in `conversions` are skipped, and both tables
collapse a repeated row. Synchronous: call it on a thread from an asyncio service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from analytics.attribution_rules import HELD_OUT, TOUCHES, AttributionRules, TypeRule
from records.conversions import Conversion

__all__ = ["AttributionError", "AttributionRules", "Credit", "TokenVerifier", "attribute", "credit"]

log = logging.getLogger(__name__)

TokenVerifier = Callable[[str], str | None]
"""The message id a link token names, or None when it is not a valid token (channels.links.LinkSigner,
wired by the caller: analytics sits below channels)."""

# Strongest first; `sent` counts only for a message the conversion names.
_STRENGTH = {status: rank for rank, status in enumerate((*TOUCHES, HELD_OUT, "sent"))}
_LINK_PROVIDER = "link"  # the `provider` of opens and clicks recorded by api.links, not a carrier
_EVENT_COLUMNS = (
    "event_time", "message_id", "event_id", "app", "user_id", "channel", "provider", "status", "reason",
    "rule_id", "rule_version", "template", "campaign", "attempt", "cost", "variant", "step",
    "conversion_id", "conversion_type", "value", "currency",
)
_CONVERSION_COLUMNS = (
    "occurred_at", "app", "conversion_id", "user_id", "type", "value", "currency", "message_id",
    "message_app", "channel", "touch", "touched_at", "model", "named_message", "attributes",
)
_DESCRIBED = ("app", "event_id", "provider", "rule_id", "rule_version", "variant", "template", "campaign")


class AttributionError(RuntimeError):
    """The batch could not be read or written; retrying the whole batch is safe."""


@dataclass(frozen=True)
class Transition:
    """One row of `message_events` that matters to attribution."""

    message_id: str
    user_id: str
    channel: str
    status: str
    at: datetime
    fields: dict[str, Any]


@dataclass(frozen=True)
class Credit:
    """The message a conversion is attributed to, and the transition that earned it."""

    message_id: str
    channel: str
    touch: str
    touched_at: datetime


def attribute(
    client: Client,
    conversions: Sequence[Conversion],
    rules: AttributionRules,
    *,
    tokens: TokenVerifier | None = None,
    events_table: str = "message_events",
    conversions_table: str = "conversions",
) -> int:
    """Attribute and record a batch; the number of rows written to both tables (0 for a replay).

    A `token` on a conversion counts only when `tokens` verifies it: a token is a claim anyone could
    forge without the link secret."""
    batch = _new(client, conversions, conversions_table)
    if not batch:
        return 0
    named = {c.app + "\x1f" + c.conversion_id: _named(c, tokens) for c in batch}
    transitions = _transitions(client, batch, rules, [m for m in named.values() if m], events_table)
    by_user: dict[str, list[Transition]] = {}
    for row in transitions:
        by_user.setdefault(row.user_id, []).append(row)
    events: list[list[Any]] = []
    records: list[list[Any]] = []
    for conversion in batch:
        rule = rules.for_type(conversion.type)
        named_message = named[conversion.app + "\x1f" + conversion.conversion_id]
        mine = by_user.get(conversion.user_id, [])
        found = credit(conversion, rule, mine, named_message)
        described = _describe(mine, found) if found else {}
        if found is not None:
            events.append(_converted_row(conversion, rule, found, described))
        records.append(_conversion_row(conversion, rule, found, described, named_message))
    try:
        # The credits first: a crash in between leaves the conversion unrecorded, so a retry attributes
        # it again (to the same message) instead of skipping it with its credit lost.
        if events:
            client.insert(events_table, events, column_names=list(_EVENT_COLUMNS))
        client.insert(conversions_table, records, column_names=list(_CONVERSION_COLUMNS))
    except Exception as exc:
        raise AttributionError(f"writing {len(batch)} attributed conversions failed: {exc}") from exc
    return len(events) + len(records)


def credit(
    conversion: Conversion, rule: TypeRule, transitions: Iterable[Transition], named: str | None = None
) -> Credit | None:
    """The credit for one conversion among its person's transitions, or None when no message earns it."""
    happened = conversion.occurred_at
    before = [t for t in transitions if t.user_id == conversion.user_id and t.at <= happened]
    if named:
        reached = [t for t in before if t.message_id == named]
        if reached:
            best = min(reached, key=lambda t: (_STRENGTH[t.status], -t.at.timestamp()))
            return Credit(best.message_id, best.channel, best.status, best.at)
    touches = [
        t for t in before
        if (window := rule.windows.of(t.status)) is not None and happened - window <= t.at
    ]
    if not touches:
        return None
    if rule.model == "first_touch":
        chosen = min(touches, key=lambda t: (t.at, _STRENGTH[t.status], t.message_id))
    else:
        chosen = max(touches, key=lambda t: (t.at, -_STRENGTH[t.status], t.message_id))
    return Credit(chosen.message_id, chosen.channel, chosen.status, chosen.at)


def _named(conversion: Conversion, tokens: TokenVerifier | None) -> str | None:
    if conversion.message_id is not None:
        return conversion.message_id
    if conversion.token is None:
        return None
    message_id = tokens(conversion.token) if tokens is not None else None
    if message_id is None:
        # Only the key's holders can vouch for a token; the windows decide instead.
        log.warning("conversion %s/%s: link token not verified, attributing by the windows",
                    conversion.app, conversion.conversion_id)
    return message_id


def _new(client: Client, conversions: Sequence[Conversion], table: str) -> list[Conversion]:
    """The batch without repeats of one (app, conversion_id) and without those already recorded."""
    unique: dict[tuple[str, str], Conversion] = {}
    for conversion in conversions:
        unique.setdefault((conversion.app, conversion.conversion_id), conversion)
    if not unique:
        return []
    try:
        result = client.query(
            f"SELECT DISTINCT app, conversion_id FROM {table} "  # noqa: S608 - table name is ours
            "WHERE app IN {apps:Array(String)} AND conversion_id IN {ids:Array(String)}",
            parameters={"apps": sorted({a for a, _ in unique}), "ids": sorted({i for _, i in unique})},
        )
    except Exception as exc:
        raise AttributionError(f"reading recorded conversions from {table} failed: {exc}") from exc
    recorded = {(str(app), str(cid)) for app, cid in result.result_rows}
    return [c for key, c in unique.items() if key not in recorded]


def _transitions(
    client: Client, batch: Sequence[Conversion], rules: AttributionRules, named: list[str], table: str
) -> list[Transition]:
    """One query for the batch: every sent-or-later row of each message that touched one of its people
    within the longest window, or that a conversion names."""
    since = min(c.occurred_at for c in batch) - rules.longest
    until = max(c.occurred_at for c in batch)
    columns = ("message_id", "user_id", "channel", "status", "event_time", "step", *_DESCRIBED)
    query = (
        f"SELECT {', '.join(columns)} FROM {table} "  # noqa: S608 - table and column names are ours
        "WHERE status IN {reached:Array(String)} AND user_id IN {users:Array(String)} "
        f"AND message_id IN (SELECT message_id FROM {table} "
        "WHERE (user_id IN {users:Array(String)} AND status IN {touches:Array(String)} "
        "AND event_time >= {since:DateTime64(3)} AND event_time <= {until:DateTime64(3)}) "
        "OR message_id IN {named:Array(String)})"
    )
    parameters = {
        "reached": list(_STRENGTH), "touches": [*TOUCHES, HELD_OUT], "named": sorted(set(named)),
        "users": sorted({c.user_id for c in batch}),
        "since": since.astimezone(UTC), "until": until.astimezone(UTC),
    }
    try:
        rows = client.query(query, parameters=parameters).result_rows
    except Exception as exc:
        raise AttributionError(f"reading the touches of {len(batch)} conversions failed: {exc}") from exc
    found: list[Transition] = []
    for row in rows:
        values = dict(zip(columns, row, strict=True))
        at: datetime = values.pop("event_time")
        found.append(Transition(
            message_id=values.pop("message_id"), user_id=values.pop("user_id"),
            channel=values.pop("channel"), status=values.pop("status"),
            at=at if at.tzinfo else at.replace(tzinfo=UTC), fields=values,
        ))
    return found


def _describe(transitions: Sequence[Transition], found: Credit) -> dict[str, Any]:
    """The credited message on its channel as its send recorded it: the carrier's provider (opens and
    clicks name the link, not the carrier), rule, variant, template, campaign, app and step."""
    rows = sorted(
        (t for t in transitions if t.message_id == found.message_id and t.channel == found.channel),
        key=lambda t: t.status != "sent",  # the send's own row first
    )
    described: dict[str, Any] = {name: "" for name in _DESCRIBED}
    described["step"] = 0
    for name in _DESCRIBED:
        for row in rows:
            value = row.fields.get(name) or ""
            if value and not (name == "provider" and value == _LINK_PROVIDER):
                described[name] = value
                break
    touch = next((t for t in rows if t.status == found.touch and t.at == found.touched_at), None)
    described["step"] = int((touch or rows[0]).fields.get("step") or 0) if rows else 0
    return described


def _converted_row(conversion: Conversion, rule: TypeRule, found: Credit, d: dict[str, Any]) -> list[Any]:
    reason = f"{conversion.type} {conversion.conversion_id}: {rule.model} {found.touch}"
    return [
        conversion.occurred_at.astimezone(UTC), found.message_id, d["event_id"], d["app"],
        conversion.user_id, found.channel, d["provider"], "converted", reason[:512], d["rule_id"],
        d["rule_version"], d["template"], d["campaign"], 0, Decimal(0), d["variant"], d["step"],
        conversion.conversion_id, conversion.type, conversion.value, conversion.currency,
    ]


def _conversion_row(
    conversion: Conversion, rule: TypeRule, found: Credit | None, d: dict[str, Any], named: str | None
) -> list[Any]:
    return [
        conversion.occurred_at.astimezone(UTC), conversion.app, conversion.conversion_id,
        conversion.user_id, conversion.type, conversion.value, conversion.currency,
        found.message_id if found else "", d.get("app", ""), found.channel if found else "",
        found.touch if found else "", found.touched_at.astimezone(UTC) if found else None,
        rule.model, named or "", {k: _text(v) for k, v in conversion.attributes.items()},
    ]


def _text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)

"""A campaign's reach and conversion from `message_events`: per channel, the distinct messages that
reached each status (sent, delivered, read, clicked, converted, failed, cancelled, recalled...), and
what the sends cost. The list of campaigns shows the same counts, for many campaigns in one query.

A message belongs to a campaign when any of its rows names it, so a row that does not repeat the
campaign (a provider's late delivery report) still counts under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from clickhouse_connect.driver.client import Client

PROGRESS: Final = ("sent", "delivered", "read", "failed", "cancelled")
"""What the campaign list shows per campaign (`read` counts inbox reads, WeChat reads and email opens),
with `settled`: messages that were sent or said why not."""
_READ: Final = ("read", "opened")


def _statuses(name: str) -> tuple[str, ...]:
    return {"read": _READ, "settled": _SETTLED}.get(name, (name,))


# Messages first (any row naming the campaign), then every row of those messages; FINAL so a redelivered
# receipt is counted (and its cost summed) once.
_REPORT = (
    "SELECT channel, status, uniqExact(message_id), sum(cost) FROM message_events FINAL"
    " WHERE app = {app:String} AND event_time >= {since:DateTime64(3, 'UTC')} AND message_id IN ("
    " SELECT DISTINCT message_id FROM message_events"
    " WHERE app = {app:String} AND campaign = {campaign:String}"
    " AND event_time >= {since:DateTime64(3, 'UTC')})"
    " GROUP BY channel, status"
)
_SETTLED: Final = (
    "sent",
    "failed",
    "suppressed",
    "capped",
    "cancelled",
    "held_out",
    "over_budget",
    "expired",
    "dead_lettered",
    "rejected",
)
"""A message with one of these has had its say: the campaign is done when every recipient's has."""
# Only our own status names are formatted in; the campaigns travel as parameters.
_PROGRESS = (
    "SELECT campaign, "  # noqa: S608
    + ", ".join(
        f"uniqExactIf(message_id, status IN ({', '.join(repr(s) for s in _statuses(name))}))"
        for name in (*PROGRESS, "settled")
    )
    + " FROM message_events"
    " WHERE app IN {apps:Array(String)} AND campaign IN {campaigns:Array(String)}"
    " AND event_time >= {since:DateTime64(3, 'UTC')}"
    " GROUP BY campaign"
)


@dataclass(frozen=True)
class ChannelReach:
    """One channel's distinct messages per status, and the sends' cost."""

    channel: str
    statuses: dict[str, int] = field(default_factory=dict)
    cost: Decimal = Decimal(0)


@dataclass(frozen=True)
class CampaignReport:
    """Every channel's reach, the campaign's totals per status (distinct messages), its cost."""

    channels: tuple[ChannelReach, ...]
    totals: dict[str, int]
    cost: Decimal

    @property
    def reach(self) -> int:
        """People reached: messages delivered (or at least sent where no delivery report comes)."""
        return max(self.totals.get("delivered", 0), self.totals.get("sent", 0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "reach": self.reach,
            "totals": self.totals,
            "conversion_rate": _rate(self.totals.get("converted", 0), self.reach),
            "read_rate": _rate(self.totals.get("read", 0), self.reach),
            "cost": str(self.cost.normalize()),
            "channels": [
                {"channel": c.channel or "(none)", "statuses": c.statuses, "cost": str(c.cost.normalize())}
                for c in self.channels
            ],
        }


def campaign_report(client: Client, app: str, campaign: str, since: datetime) -> CampaignReport:
    """The campaign's report; `since` bounds the scan (the campaign's creation: nothing of it is older)."""
    rows = client.query(
        _REPORT, parameters={"app": app, "campaign": campaign, "since": since.astimezone(UTC)}
    ).result_rows
    channels: dict[str, dict[str, int]] = {}
    costs: dict[str, Decimal] = {}
    totals: dict[str, int] = {}
    for channel, status, count, cost in rows:
        name, what = str(channel), _status(str(status))
        channels.setdefault(name, {})[what] = channels.get(name, {}).get(what, 0) + int(count)
        costs[name] = costs.get(name, Decimal(0)) + Decimal(str(cost or 0))
        totals[what] = totals.get(what, 0) + int(count)
    return CampaignReport(
        channels=tuple(ChannelReach(c, s, costs[c]) for c, s in sorted(channels.items())),
        totals=totals,
        cost=sum(costs.values(), Decimal(0)),
    )


def campaign_progress(
    client: Client, campaigns: Sequence[tuple[str, str]], since: datetime
) -> dict[str, dict[str, int]]:
    """Campaign id -> distinct messages per PROGRESS status, for many campaigns in one query; a campaign
    nothing happened to yet is absent."""
    if not campaigns:
        return {}
    rows = client.query(
        _PROGRESS,
        parameters={
            "apps": sorted({app for app, _ in campaigns}),
            "campaigns": sorted({campaign for _, campaign in campaigns}),
            "since": since.astimezone(UTC),
        },
    ).result_rows
    return {
        str(line[0]): {name: int(n) for name, n in zip((*PROGRESS, "settled"), line[1:], strict=True)}
        for line in rows
    }


def _status(status: str) -> str:
    return "read" if status in _READ else status


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None

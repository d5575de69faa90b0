"""Fallback: turn fired steps (state/fallback.py) into dispatches on the first usable channel.

The recipient's current bindings are read at fire time (an address added since the first send
counts); a raw-address recipient has only the addresses it came with. A step that comes due inside
the plan's quiet hours (in the recipient's timezone) waits, parked, for the window's end, or is
dropped if the window says so. Consent and caps are judged by send, for every dispatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from processors.ingest import AppLookup
from processors.timing import quiet_hours_end
from records.topics import ChannelName, Dispatch, Receipt
from state.fallback import FiredStep
from state.users import User, UserDirectory

# A raw-address recipient has no profile: its clock is the platform's default one, as in decide.
DEFAULT_TIMEZONE = ZoneInfo(User.model_fields["timezone"].default)


@dataclass
class FallbackResult:
    dispatches: list[Dispatch] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    parked: list[tuple[Dispatch, datetime]] = field(default_factory=list)
    """Dispatches due inside quiet hours, with the window's end: to go on the parked schedule."""


class FallbackDispatcher:
    """Picks, for each fired step, the first of its channels the recipient can be reached on."""

    def __init__(
        self, directory: UserDirectory, apps: AppLookup, available_channels: AbstractSet[str]
    ) -> None:
        self._directory = directory
        self._apps = apps
        self._available = available_channels

    async def resolve(self, fired: Sequence[FiredStep], now: datetime | None = None) -> FallbackResult:
        """One dispatch (now or parked) and a `decided` or `deferred` row per usable step; else a
        `suppressed` row with why."""
        at = now or datetime.now(UTC)
        result = FallbackResult()
        if not fired:
            return result
        users = await self._directory.get_many(f.first.user_id for f in fired if f.addresses is None)
        allowed: dict[str, frozenset[str]] = {}
        for app_name in {f.first.event.app for f in fired}:
            app = await self._apps.get(app_name)
            allowed[app_name] = app.channels if app is not None else frozenset()
        for item in fired:
            self._resolve_one(item, users.get(item.first.user_id), allowed[item.first.event.app], at, result)
        return result

    def _resolve_one(
        self,
        item: FiredStep,
        user: User | None,
        allowed: frozenset[str],
        at: datetime,
        result: FallbackResult,
    ) -> None:
        first, step = item.first, item.step
        if item.addresses is not None:
            bindings: dict[str, str] = dict(item.addresses)
        else:
            bindings = {str(k): v for k, v in user.bindings.items()} if user is not None else {}
        chosen, why = self._pick(step.channels, bindings, allowed, first.event.app)
        condition = f"fallback step {step.step}: {step.condition} after {_span(step.after.total_seconds())}"
        template = step.template or first.template
        if chosen is None:
            reason = f"{condition}; no usable channel ({'; '.join(why)})"
            result.receipts.append(_receipt(item, "suppressed", "", reason, template))
            return
        channel, address = chosen
        dispatch = first.model_copy(
            update={"channel": channel, "address": address, "step": step.step, "template": template}
        )
        quiet, plan = None, first.plan
        if plan.quiet_hours is not None and "quiet_hours" not in plan.bypass:
            zone = ZoneInfo(user.timezone) if user is not None else DEFAULT_TIMEZONE
            quiet = quiet_hours_end(at, zone, plan.quiet_hours)
        if quiet is None:
            result.receipts.append(_receipt(item, "decided", channel, condition, template))
            result.dispatches.append(dispatch)
        elif plan.quiet_hours is not None and plan.quiet_hours.action == "drop":
            reason = f"{condition}; dropped: quiet hours until {quiet.isoformat()}"
            result.receipts.append(_receipt(item, "suppressed", channel, reason, template))
        else:
            reason = f"{condition}; quiet hours: deferred until {quiet.isoformat()}"
            result.receipts.append(_receipt(item, "deferred", channel, reason, template))
            result.parked.append((dispatch, quiet))

    def _pick(
        self, channels: Sequence[ChannelName], bindings: dict[str, str], allowed: frozenset[str], app: str
    ) -> tuple[tuple[ChannelName, str] | None, list[str]]:
        """The first channel the recipient has an address on, the app may use and a provider serves."""
        why: list[str] = []
        for channel in channels:
            if channel not in bindings:
                why.append(f"{channel}: user has no address")
            elif channel not in allowed:
                why.append(f"{channel}: app {app} is not allowed to use it")
            elif channel not in self._available:
                why.append(f"{channel}: no provider configured")
            else:
                return (channel, bindings[channel]), why
        return None, why


def _receipt(
    item: FiredStep,
    status: Literal["decided", "deferred", "suppressed"],
    channel: str,
    reason: str,
    template: str | None,
) -> Receipt:
    first = item.first
    return Receipt.of(
        first.event,
        first.user_id,
        status,
        message_id=first.message_id,
        channel=channel,
        reason=reason,
        rule_id=first.rule_id,
        rule_version=first.rule_version,
        step=item.step.step,
        variant=first.plan.variant,
        template=template or first.event.template,
    )


def _span(seconds: float) -> str:
    """A duration as rule authors write it: 90 → 90s, 300 → 5m, 7200 → 2h, 86400 → 1d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"

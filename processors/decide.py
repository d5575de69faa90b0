"""Decide: enrich each delivery with the recipient's profile, ask the rule engine, emit dispatches.

Deliveries come in batches so the engine (one dedicated thread, see FIELD-NOTES) is called once per
batch. A delivery whose `send_at` is still ahead is put on the durable schedule and decided again
when it is due, so a rule change or an unsubscribe in between still counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from processors.ingest import AppLookup
from processors.records import Delivery, Dispatch, Receipt, Status
from rules.engine import AsyncRuleEngine, DecisionRequest
from state.schedule import DeliverySchedule
from state.users import User, UserDirectory

# A send_at this close to now is sent now: the schedule's resolution is about a second anyway.
_SCHEDULE_SLACK = timedelta(seconds=1)


@dataclass
class DecideResult:
    dispatches: list[Dispatch] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    scheduled: int = 0


class Decide:
    """Turns deliveries into dispatches (one per chosen channel) and `decided`/`suppressed` rows."""

    def __init__(
        self,
        directory: UserDirectory,
        apps: AppLookup,
        engine: AsyncRuleEngine,
        schedule: DeliverySchedule,
        available_channels: frozenset[str],
    ) -> None:
        self._directory = directory
        self._apps = apps
        self._engine = engine
        self._schedule = schedule
        self._available = available_channels

    async def handle(self, deliveries: Sequence[Delivery], now: datetime | None = None) -> DecideResult:
        at = now or datetime.now(UTC)
        result = DecideResult()
        due: list[Delivery] = []
        for delivery in deliveries:
            send_at = delivery.event.send_at
            if send_at is not None and send_at - at > _SCHEDULE_SLACK:
                await self._schedule.add(delivery, send_at)
                result.scheduled += 1
                result.receipts.append(
                    _receipt(delivery, "deferred", reason=f"scheduled for {send_at.isoformat()}")
                )
            else:
                due.append(delivery)
        if not due:
            return result
        users = await self._directory.get_many(d.user_id for d in due if d.addresses is None)
        allowed = await self._app_channels({d.event.app for d in due})
        requests: list[DecisionRequest] = []
        pending: list[Delivery] = []
        for delivery in due:
            user = _recipient(delivery, users)
            if user is None:
                result.receipts.append(_receipt(delivery, "suppressed", reason="unknown user"))
                continue
            requests.append(
                DecisionRequest(
                    event=delivery.event,
                    user=user,
                    allowed_channels=allowed.get(delivery.event.app, frozenset()),
                    available_channels=self._available,
                )
            )
            pending.append(delivery)
        decisions = await self._engine.decide(requests)
        for delivery, decision in zip(pending, decisions, strict=True):
            reason = "; ".join(decision.reasons)
            if decision.suppressed or not decision.channels:
                result.receipts.append(
                    _receipt(
                        delivery,
                        "suppressed",
                        reason=reason,
                        rule_id=decision.rule_id,
                        rule_version=decision.rule_version,
                    )
                )
                continue
            for channel, address in decision.channels:
                result.receipts.append(
                    _receipt(
                        delivery,
                        "decided",
                        channel=channel,
                        reason=reason,
                        rule_id=decision.rule_id,
                        rule_version=decision.rule_version,
                    )
                )
                result.dispatches.append(
                    Dispatch(
                        message_id=delivery.message_id,
                        user_id=delivery.user_id,
                        channel=channel,
                        address=address,
                        event=delivery.event,
                        rule_id=decision.rule_id,
                        rule_version=decision.rule_version,
                    )
                )
        return result

    async def _app_channels(self, names: set[str]) -> dict[str, frozenset[str]]:
        found: dict[str, frozenset[str]] = {}
        for name in names:
            app = await self._apps.get(name)
            found[name] = app.channels if app is not None else frozenset()
        return found


def _recipient(delivery: Delivery, users: dict[str, User]) -> User | None:
    if delivery.addresses is not None:
        # A raw-address recipient has no profile: it is reachable only where its address is.
        return User(user_id=delivery.user_id, bindings=dict(delivery.addresses))
    return users.get(delivery.user_id)


def _receipt(delivery: Delivery, status: Status, **fields: str) -> Receipt:
    return Receipt.of(delivery.event, delivery.user_id, status, message_id=delivery.message_id, **fields)

"""Decide: enrich each delivery with the recipient's profile, ask the rule engine, emit dispatches.

Deliveries come in batches so the engine (one dedicated thread, see FIELD-NOTES) is called once per
batch. Consent is applied before the engine: refused channels are taken out of the recipient's
bindings, so a rule's `first_of` moves on to the next channel, and a user refused everywhere is
suppressed (a category needing an opt-in, or an app in test mode, says so once for the person rather
than per channel). A raw address takes the consent of the people it is bound to and its own. Whether
the recipient is whitelisted (the user or any address they are reached at) goes to the rules, whose
caps may exempt them. The plan the engine returns is then carried out: offline keep when no channel
reaches the user, quiet hours and best time in the user's timezone, pacing slots. A delivery deferred
by any of these (or by `send_at`) goes on the durable schedule and is decided again when due; each
rule lets it through at the time it chose, so it is not deferred twice by the same rule. A recipient
in a rule's control share gets one `held_out` row and nothing else. A delivery whose sends would take
its app's or campaign's budget near or over the limit follows its rule's `budget:` (a cheaper channel,
held until the next period, or an `over_budget` row; rules/budgets.py). An event naming a strategy
(`strategy`) is decided with that strategy's channels and fallback steps within the rule's decision
(rules/apply.py); one the loaded rules do not define is a `suppressed` row naming it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from channels.addresses import CleanAddress, clean
from processors.ingest import AppLookup
from processors.timing import Timing, plan_timing
from records.plan import Pacing
from records.topics import Delivery, Dispatch, Receipt, Status
from rules.budgets import BatchBudgets
from rules.engine import AsyncRuleEngine, Decision, DecisionRequest
from state.budgets import BudgetStore
from state.campaigns import CancelledCampaigns
from state.consent import ConsentQuery, ConsentStore, ConsentVerdict
from state.engagement import EngagementHistory
from state.offline import OfflineKeep
from state.pacing import Pacer, SlotRequest
from state.schedule import DeliverySchedule
from state.users import User, UserDirectory

# A send_at this close to now is sent now: the schedule's resolution is about a second anyway.
_SCHEDULE_SLACK = timedelta(seconds=1)
# How long decide trusts a budget's spending it read: send checks again, fresh, before each provider call.
BUDGET_STANDING_SECONDS = 1.0


class FallbackArming(Protocol):
    """What decide needs of `state.fallback.FallbackSchedule`: arm a message's fallback steps."""

    async def arm_many(
        self, items: Sequence[tuple[Dispatch, dict[str, str] | None, datetime]]
    ) -> list[bool]: ...


@dataclass
class DecideResult:
    dispatches: list[Dispatch] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    scheduled: int = 0
    kept_offline: int = 0
    paced: list[tuple[Dispatch, datetime]] = field(default_factory=list)
    """Dispatches held for their pacing slot: parked as they are, not decided again."""
    to_schedule: list[tuple[Delivery, datetime]] = field(default_factory=list)
    """Deliveries deferred (send_at, quiet hours, best time): on the schedule once `handle` returns."""


@dataclass(frozen=True)
class _Decided:
    """A delivery the engine decided, with the recipient it was decided for and why consent cut it."""

    delivery: Delivery
    user: User
    decision: Decision
    consent_reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        return "; ".join((*self.consent_reasons, *self.decision.reasons))

    @property
    def template(self) -> str:
        return self.decision.template or self.delivery.event.template


class Decide:
    """Turns deliveries into dispatches (one per chosen channel) and their receipts."""

    def __init__(
        self,
        directory: UserDirectory,
        apps: AppLookup,
        engine: AsyncRuleEngine,
        schedule: DeliverySchedule,
        available_channels: AbstractSet[str],
        *,
        consent: ConsentStore | None = None,
        engagement: EngagementHistory | None = None,
        pacer: Pacer | None = None,
        offline: OfflineKeep | None = None,
        fallback: FallbackArming | None = None,
        budgets: BudgetStore | None = None,
        costs: Mapping[str, float] | None = None,
        budget_standing_seconds: float = BUDGET_STANDING_SECONDS,
        cancelled: CancelledCampaigns | None = None,
    ) -> None:
        self._directory = directory
        self._apps = apps
        self._engine = engine
        self._schedule = schedule
        self._available = available_channels
        self._consent = consent
        self._engagement = engagement
        self._pacer = pacer
        self._offline = offline
        self._fallback = fallback
        self._budgets = budgets
        self._costs = dict(costs or {})
        """Each channel's estimated cost per message: its first provider's price."""
        self._standing_seconds = budget_standing_seconds
        self._cancelled = cancelled

    async def handle(self, deliveries: Sequence[Delivery], now: datetime | None = None) -> DecideResult:
        at = now or datetime.now(UTC)
        result = DecideResult()
        try:
            await self._handle(deliveries, at, result)
        finally:
            if result.to_schedule:
                # Every deferral of the batch in one round trip (quiet hours can defer a whole broadcast).
                await self._schedule.add_many(result.to_schedule)
        return result

    async def _handle(
        self,
        deliveries: Sequence[Delivery],
        at: datetime,
        result: DecideResult,
    ) -> None:
        due: list[Delivery] = []
        for delivery in await self._not_cancelled(deliveries, result):
            send_at = delivery.event.send_at
            if send_at is not None and send_at - at > _SCHEDULE_SLACK:
                self._defer(result, delivery, send_at, f"scheduled for {send_at.isoformat()}")
            else:
                due.append(delivery)
        if not due:
            return
        decided = await self._decide(due, at, result)
        sendable: list[_Decided] = []
        for item in decided:
            if item.decision.held_out:
                # The control share: one row for the analysts, and nothing else (no keep, no fallback).
                result.receipts.append(_decided_receipt(item, "held_out", reason=item.reason))
            elif item.decision.channels:
                sendable.append(item)
            else:
                await self._unreachable(item, at, result)
        timed = await self._within_budget(await self._timed(sendable, at, result), result)
        chains: list[tuple[Dispatch, dict[str, str] | None, datetime]] = []
        for item, slot in await self._paced(timed, at, result):
            dispatches = self._dispatches(item, result)
            if slot is None:
                result.dispatches.extend(dispatches)
            else:
                result.paced.extend((dispatch, slot) for dispatch in dispatches)
            if dispatches and item.decision.plan.fallback:
                raw = item.delivery.addresses
                chains.append((dispatches[0], {str(c): a for c, a in raw.items()} if raw else None, at))
        if chains and self._fallback is not None:
            # One round trip for the batch: a campus-wide notice arms thousands of chains at once.
            await self._fallback.arm_many(chains)

    async def _not_cancelled(self, deliveries: Sequence[Delivery], result: DecideResult) -> list[Delivery]:
        """The deliveries whose campaign was not cancelled (one read per batch); the others get a
        `cancelled` row, also when they come due from the schedule."""
        if self._cancelled is None:
            return list(deliveries)
        stopped = await self._cancelled.among((d.event.app, d.event.campaign) for d in deliveries)
        if not stopped:
            return list(deliveries)
        kept: list[Delivery] = []
        for delivery in deliveries:
            cancellation = stopped.get((delivery.event.app, delivery.event.campaign))
            if cancellation is None:
                kept.append(delivery)
            else:
                result.receipts.append(_receipt(delivery, "cancelled", reason=cancellation.reason))
        return kept

    async def _decide(self, due: list[Delivery], at: datetime, result: DecideResult) -> list[_Decided]:
        """Recipients, consent, last activity, then one engine call for the batch."""
        # Profiles, app authorisations and last activity at once (one round trip's wait); consent
        # needs the profiles' bindings, so it is the second.
        users, allowed, active = await asyncio.gather(
            self._directory.get_many(d.user_id for d in due if d.addresses is None),
            self._app_channels({d.event.app for d in due}),
            self._last_active(list({d.user_id for d in due if d.addresses is None})),
        )
        recipients: list[tuple[Delivery, User]] = []
        for delivery in due:
            user = _recipient(delivery, users)
            if user is None:
                result.receipts.append(_receipt(delivery, "suppressed", reason="unknown user"))
            else:
                recipients.append((delivery, user))
        refused, whitelisted = await self._refusals(recipients)
        requests: list[DecisionRequest] = []
        pending: list[tuple[Delivery, User, tuple[str, ...]]] = []
        for delivery, user in recipients:
            verdicts = refused.get(delivery.message_id, {})
            refusals = {channel: verdict.refused for channel, verdict in verdicts.items()}
            if refusals and len(refusals) == len(user.bindings):
                reason = _suppressed_reason(verdicts)
                result.receipts.append(_receipt(delivery, "suppressed", reason=reason))
                continue
            consented = user.model_copy(
                update={"bindings": {c: a for c, a in user.bindings.items() if c not in refusals}}
            )
            requests.append(
                DecisionRequest(
                    event=delivery.event,
                    user=consented,
                    allowed_channels=allowed.get(delivery.event.app, frozenset()),
                    available_channels=frozenset(self._available),  # a live view: as of now
                    now=at,
                    last_active_at=active.get(user.user_id),
                    whitelisted=delivery.message_id in whitelisted,
                )
            )
            pending.append((delivery, user, tuple(f"{c}: {why}" for c, why in refusals.items())))
        decisions = await self._engine.decide(requests) if requests else []
        return [
            _Decided(delivery, user, decision, reasons)
            for (delivery, user, reasons), decision in zip(pending, decisions, strict=True)
        ]

    async def _refusals(
        self, recipients: list[tuple[Delivery, User]]
    ) -> tuple[dict[str, dict[str, ConsentVerdict]], set[str]]:
        """Per message, the channels consent refuses and why, and the messages whose recipient is
        whitelisted (one script call for the batch)."""
        if self._consent is None:
            return {}, set()
        queries = [
            (
                delivery.message_id,
                ConsentQuery(
                    user.user_id,
                    channel,
                    delivery.event.category,
                    # A raw address is checked in the form bindings and the blacklist hold it in.
                    _canonical(channel, address) if delivery.addresses is not None else address,
                    delivery.event.app,
                ),
            )
            for delivery, user in recipients
            for channel, address in user.bindings.items()
        ]
        answers = await self._consent.verdicts([q for _, q in queries])
        refused: dict[str, dict[str, ConsentVerdict]] = {}
        whitelisted: set[str] = set()
        for (message_id, query), verdict in zip(queries, answers, strict=True):
            if verdict.refused is not None:
                refused.setdefault(message_id, {})[query.channel] = verdict
            if verdict.whitelisted:
                whitelisted.add(message_id)
        return refused, whitelisted

    async def _last_active(self, user_ids: list[str]) -> dict[str, datetime]:
        if self._engagement is None or not user_ids:
            return {}
        return await self._engagement.last_active(user_ids)

    async def _unreachable(self, item: _Decided, at: datetime, result: DecideResult) -> None:
        """No channel: keep it offline if the plan says so, else suppress it with the reasons."""
        keep = item.decision.plan.keep_offline
        if keep is not None and self._offline is not None and item.delivery.addresses is None:
            until = await self._offline.keep(
                item.delivery,
                {str(channel): address for channel, address in item.user.bindings.items()},
                at + keep,
                variant=item.decision.plan.variant,
                rule_id=item.decision.rule_id,
                rule_version=item.decision.rule_version,
                now=at,
            )
            result.kept_offline += 1
            reason = f"kept offline until {until.isoformat()}: {item.reason}"
            result.receipts.append(_decided_receipt(item, "deferred", reason=reason))
            return
        result.receipts.append(_decided_receipt(item, "suppressed", reason=item.reason))

    async def _timed(self, items: list[_Decided], at: datetime, result: DecideResult) -> list[_Decided]:
        """Quiet hours and best time; returns the deliveries due now."""
        wanting = [i for i in items if i.decision.plan.best_time is not None]
        best_hours: dict[str, int] = {}
        chosen: dict[str, datetime] = {}
        if self._engagement is not None and wanting:
            best_hours = await self._engagement.best_hours(
                [i.user for i in wanting if i.delivery.addresses is None]
            )
            chosen = await self._engagement.chosen_times([i.delivery.message_id for i in wanting])
        now_due: list[_Decided] = []
        remember: dict[str, datetime] = {}
        for item in items:
            plan, message_id = item.decision.plan, item.delivery.message_id
            timing: Timing = plan_timing(
                at, item.user.timezone, plan, best_hours.get(item.user.user_id), chosen.get(message_id)
            )
            if timing.action == "drop":
                result.receipts.append(_decided_receipt(item, "suppressed", reason=timing.reason))
            elif timing.action == "defer" and timing.at is not None:
                if timing.best_time is not None:
                    remember[message_id] = timing.best_time
                self._defer(result, item.delivery, timing.at, timing.reason, item)
            else:
                now_due.append(item)
        if remember and self._engagement is not None:
            await self._engagement.choose_times(remember, now=at)
        return now_due

    async def _within_budget(self, items: list[_Decided], result: DecideResult) -> list[_Decided]:
        """Budget verdicts (one read per batch, cached briefly): send, a cheaper channel, hold, drop."""
        if self._budgets is None or not items:
            return items
        applying = await self._budgets.applying(
            (i.delivery.event.app, i.delivery.event.campaign) for i in items
        )
        if not applying:
            return items
        budgets = list({b.id: b for under in applying.values() for b in under}.values())
        standing = BatchBudgets(
            await self._budgets.standings(budgets, max_age=self._standing_seconds), self._costs
        )
        kept: list[_Decided] = []
        for item in items:
            event, decision = item.delivery.event, item.decision
            if "budget" in decision.plan.bypass:
                kept.append(item)
                continue
            verdict = standing.verdict(
                event.app, event.campaign, decision.channels, decision.plan.budget, decision.reachable
            )
            if verdict.action == "send":
                kept.append(item)
            elif verdict.action == "cheaper":
                cheaper = dataclasses.replace(
                    decision, channels=verdict.channels, reasons=(*decision.reasons, verdict.reason)
                )
                kept.append(dataclasses.replace(item, decision=cheaper))
            elif verdict.action == "hold" and verdict.until is not None:
                self._defer(result, item.delivery, verdict.until, verdict.reason, item)
            else:
                for channel, _ in decision.channels:
                    result.receipts.append(
                        _decided_receipt(item, "over_budget", channel=channel, reason=verdict.reason)
                    )
        return kept

    async def _paced(
        self, items: list[_Decided], at: datetime, result: DecideResult
    ) -> list[tuple[_Decided, datetime | None]]:
        """定速: each paced delivery gets a slot; one in the future waits for it (None: send now).

        The decision stands: its dispatches are parked until the slot rather than decided again, and
        send still checks consent and caps when they come out."""
        paced = [(i, p) for i in items if (p := _pacing(i)) is not None]
        if self._pacer is None or not paced:
            return [(item, None) for item in items]
        requests = [SlotRequest(p.key, p.per_second, i.delivery.message_id) for i, p in paced]
        given = await self._pacer.slots(requests, at)
        slots = {i.delivery.message_id: slot for (i, _), slot in zip(paced, given, strict=True)}
        due: list[tuple[_Decided, datetime | None]] = []
        for item in items:
            slot = slots.get(item.delivery.message_id)
            pacing = _pacing(item)
            if slot is None or pacing is None or slot <= at:
                due.append((item, None))
                continue
            reason = f"pacing {pacing.key} at {pacing.per_second:g}/s: deferred until {slot.isoformat()}"
            result.receipts.append(_decided_receipt(item, "deferred", reason=reason))
            due.append((item, slot))
        return due

    def _dispatches(self, item: _Decided, result: DecideResult) -> list[Dispatch]:
        """The item's dispatches, with their `decided` rows; the first anchors its fallback chain."""
        delivery, decision = item.delivery, item.decision
        template = item.template
        dispatches: list[Dispatch] = []
        for channel, address in decision.channels:
            result.receipts.append(_decided_receipt(item, "decided", channel=channel, reason=item.reason))
            every = _every_address(item, channel)
            for to in every or (address,):
                dispatch = Dispatch.model_validate(
                    {
                        "message_id": delivery.message_id,
                        "user_id": delivery.user_id,
                        "channel": channel,
                        "address": to,
                        "event": delivery.event,
                        "rule_id": decision.rule_id,
                        "rule_version": decision.rule_version,
                        "plan": decision.plan,
                        "template": template if template != delivery.event.template else None,
                        "every_address": bool(every),
                    }
                )
                dispatches.append(dispatch)
        return dispatches

    def _defer(
        self,
        result: DecideResult,
        delivery: Delivery,
        until: datetime,
        reason: str,
        item: _Decided | None = None,
    ) -> None:
        result.to_schedule.append((delivery, until))
        result.scheduled += 1
        if item is None:
            result.receipts.append(_receipt(delivery, "deferred", reason=reason))
        else:
            result.receipts.append(_decided_receipt(item, "deferred", reason=reason))

    async def _app_channels(self, names: set[str]) -> dict[str, frozenset[str]]:
        ordered = sorted(names)
        apps = await asyncio.gather(*(self._apps.get(name) for name in ordered))
        return {
            name: app.channels if app is not None else frozenset()
            for name, app in zip(ordered, apps, strict=True)
        }


def _suppressed_reason(verdicts: dict[str, ConsentVerdict]) -> str:
    """Why consent refused every channel: once when it is one person-wide reason (test mode, the same
    missing opt-in), else per channel."""
    reasons = {verdict.reason for verdict in verdicts.values()}
    if len(reasons) == 1 and all(v.kind in ("test_mode", "opt_in") for v in verdicts.values()):
        return reasons.pop()
    return "consent: " + "; ".join(f"{channel}: {v.refused}" for channel, v in verdicts.items())


def _pacing(item: _Decided) -> Pacing | None:
    """The rule's pace, or the event's own steady rate (a campaign's 定速) under a key of its campaign
    (else of the event), shared by every worker; with both, the slower rate under the event's key."""
    plan, event = item.decision.plan, item.delivery.event
    if "pacing" in plan.bypass:
        return None
    if event.pace_per_second is None:
        return plan.pacing
    key = (
        f"campaign:{event.app}/{event.campaign}" if event.campaign else f"event:{event.app}/{event.event_id}"
    )
    rate = float(event.pace_per_second)
    if plan.pacing is not None:
        rate = min(rate, plan.pacing.per_second)
    return Pacing(per_second=rate, key=key)


def _canonical(channel: str, address: str) -> str:
    cleaned = clean(channel, address)
    return cleaned.value if isinstance(cleaned, CleanAddress) else address.strip()


def _every_address(item: _Decided, channel: str) -> tuple[str, ...]:
    """The addresses of a person who gets `channel` on all of theirs (`all`: every device), when
    they hold more than one; empty otherwise (the decision's one address is used)."""
    if item.delivery.addresses is not None or item.user.choice(channel) != "all":
        return ()
    every = item.user.recipients(channel)
    return every if len(every) > 1 else ()


def _recipient(delivery: Delivery, users: dict[str, User]) -> User | None:
    if delivery.addresses is not None:
        # A raw-address recipient has no profile: it is reachable only where its address is.
        return User(user_id=delivery.user_id, bindings=dict(delivery.addresses))
    return users.get(delivery.user_id)


def _receipt(delivery: Delivery, status: Status, **fields: Any) -> Receipt:
    return Receipt.of(delivery.event, delivery.user_id, status, message_id=delivery.message_id, **fields)


def _decided_receipt(item: _Decided, status: Status, **fields: Any) -> Receipt:
    """A receipt after the engine: it names the rule, its version, the variant and the template."""
    decision = item.decision
    return _receipt(
        item.delivery,
        status,
        rule_id=decision.rule_id,
        rule_version=decision.rule_version,
        variant=decision.plan.variant,
        template=item.template,
        **fields,
    )

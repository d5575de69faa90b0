"""Send: check consent and caps, render the template, claim the send, deliver through the adapter.

Consent (with opt-ins and test mode) is checked again here (a fallback step or a scheduled dispatch
may go out long after decide, after an opt-in was withdrawn): a refused recipient gets a `suppressed`
receipt and no provider call. Frequency caps are counted here, atomically, before the send is
claimed: an exceeded cap either drops the send or parks the dispatch until every window allows it,
each with a `capped` receipt.

The claim (message, channel, step) is taken in Redis before the provider is called, so a redelivered
dispatch never reaches a person twice. A send that gave up on retryable errors (every provider
throttled or down) releases its claim and is parked for a later round (`deferred`), a few times with
growing pauses, before it fails for good; a permanent failure keeps the claim. A dispatch that finds a
claim still unfinished is parked until the claim lapses, so a worker dying mid-send loses nothing.

Budgets: just before the provider is called, the batch's budgets are read fresh and each send's
estimated cost taken in order (over: an `over_budget` row, or parked until the next period when its
rule holds); the send's actual cost is counted in the same round trip that records its outcome, once
per send however often it is recorded (state/budgets.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from channels.base import Channel, PermanentSendError, RetryPolicy, deliver
from channels.inbox import InboxChannel
from channels.templates import RenderedMessage, TemplateCatalog, TemplateError
from metrics import catalog
from processors.content import ContentGuard, Refused
from processors.failures import describe, is_infrastructure
from records.topics import Dispatch, Receipt, Status
from rules.budgets import BatchBudgets
from state.budgets import COUNT_SCRIPT, Budget, BudgetStore, to_micros
from state.campaigns import CancelledCampaigns
from state.caps import PASSED, CapVerdict, FrequencyCaps
from state.coalesced import CoalescedPipeline
from state.consent import ConsentQuery, ConsentStore, ConsentVerdict
from state.idempotency import SendKey, SendLedger, SendRecord
from state.inbox import InboxMessage
from state.provider_messages import TAKE_EARLY, ProviderMessages
from state.scripts import run_pipeline
from state.users import User, UserDirectory

log = logging.getLogger("switchboard.send")
_T = TypeVar("_T")

# After a round of retries ends on retryable errors (every provider throttled or down), the dispatch
# waits this long before the next round; after the last one it fails for good.
REQUEUE_DELAYS: tuple[float, ...] = (30.0, 60.0, 120.0, 240.0, 480.0)


@dataclass
class SendResult:
    receipts: list[Receipt] = field(default_factory=list)
    already_sent: int = 0
    # Dispatches whose send is claimed but unfinished, with when to look again: the claim may belong
    # to a worker that died mid-send, and then only its lapse lets the message go out.
    parked: list[tuple[Dispatch, datetime]] = field(default_factory=list)
    capped: int = 0
    suppressed: int = 0


@dataclass(frozen=True)
class _Handled:
    """How one dispatch went: its receipts, and how long to park it when it is to be tried again."""

    receipts: list[Receipt] = field(default_factory=list)
    park_for: float | None = None


class Send:
    """Delivers dispatches, a batch at a time, with bounded concurrency."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        templates: TemplateCatalog,
        directory: UserDirectory,
        ledger: SendLedger,
        retry: RetryPolicy,
        concurrency: int = 32,
        *,
        consent: ConsentStore | None = None,
        caps: FrequencyCaps | None = None,
        content: ContentGuard | None = None,
        sent: ProviderMessages | None = None,
        requeue_delays: Sequence[float] = REQUEUE_DELAYS,
        budgets: BudgetStore | None = None,
        costs: Mapping[str, float] | None = None,
        cancelled: CancelledCampaigns | None = None,
    ) -> None:
        self._channels = channels
        self._cancelled = cancelled
        self._templates = templates
        self._directory = directory
        self._ledger = ledger
        self._redis: Redis = ledger.redis
        self._retry = retry
        self._slots = asyncio.Semaphore(concurrency)
        self._consent = consent
        self._caps = caps
        self._content = content or ContentGuard()
        # Provider message ids -> our messages, so a provider's delivery callback finds its message.
        self._sent = sent
        self._requeue_delays = tuple(requeue_delays)
        self._budgets = budgets
        self._costs = dict(costs or {})
        # Outcomes ready in the same turn of the loop share a round trip (each still waits for it).
        self._outcomes = CoalescedPipeline(
            lambda fill: _durably(
                lambda: run_pipeline(self._redis, fill, [TAKE_EARLY, COUNT_SCRIPT]), "sends' outcomes"
            )
        )

    async def handle(self, dispatches: Sequence[Dispatch], now: datetime | None = None) -> SendResult:
        at = now or datetime.now(UTC)
        result = SendResult()
        users = await self._directory.get_many(
            d.user_id for d in dispatches if not d.user_id.startswith("addr:")
        )
        # Addresses are cleaned before consent: a blacklist holds addresses in their canonical form.
        cleaned: list[Dispatch] = []
        for dispatch in dispatches:
            if dispatch.channel not in self._channels:
                result.receipts.append(
                    _receipt(dispatch, "failed", reason=f"no provider configured for {dispatch.channel}")
                )
                continue
            checked = self._content.address(dispatch)
            if isinstance(checked, Refused):
                result.suppressed += 1
                result.receipts.append(_receipt(dispatch, "suppressed", reason=checked.reason))
            else:
                cleaned.append(checked)
        consents = await self._refusals(cleaned)
        ready: list[tuple[Dispatch, Channel, RenderedMessage]] = []
        for dispatch, consent in zip(cleaned, consents, strict=True):
            if consent.refused is not None:
                result.suppressed += 1
                result.receipts.append(_receipt(dispatch, "suppressed", reason=consent.reason))
                continue
            prepared = self._prepare(dispatch, users.get(dispatch.user_id))
            if isinstance(prepared, Receipt):
                result.receipts.append(prepared)
            else:
                ready.append((dispatch, *prepared))
        ready = await self._not_cancelled(ready, result)
        verdicts = await self._cap_verdicts([d for d, _, _ in ready], at)
        sendable: list[tuple[Dispatch, Channel, RenderedMessage]] = []
        for (dispatch, channel, message), verdict in zip(ready, verdicts, strict=True):
            if verdict.outcome == "passed":
                sendable.append((dispatch, channel, message))
                continue
            result.capped += 1
            result.receipts.append(
                _receipt(dispatch, "capped", provider=channel.provider, reason=verdict.reason)
            )
            if verdict.outcome == "delay" and verdict.until is not None:
                result.parked.append((dispatch, verdict.until))
            elif await self._ledger.claim(*send_key(dispatch)):
                # A dropped send is settled: a redelivery of it must not slip through a later window.
                await self._ledger.mark_done(*send_key(dispatch), "capped")
        under = await self._applying(d for d, _, _ in sendable)
        to_send = await self._within_budget(await self._claimed(sendable, at, result), under, result)
        # The inbox is Redis itself: its writes join the batch's outcome pipeline, no adapter call.
        inbox = [(d, c, m) for d, c, m in to_send if isinstance(c, InboxChannel)]
        others = [(d, c, m) for d, c, m in to_send if not isinstance(c, InboxChannel)]
        result.receipts.extend(await self._to_inboxes(inbox))
        outcomes = await asyncio.gather(
            *(self._one(d, c, m, under.get((d.event.app, d.event.campaign), ())) for d, c, m in others)
        )
        for (dispatch, _, _), handled in zip(others, outcomes, strict=True):
            if handled.park_for is not None:
                result.parked.append((dispatch, at + timedelta(seconds=handled.park_for + 1)))
            result.receipts.extend(handled.receipts)
        return result

    async def _not_cancelled(self, ready: list[_Ready], result: SendResult) -> list[_Ready]:
        """The sends whose campaign was not cancelled, read for the batch once it is rendered, before
        caps, claims and the provider; the others get a `cancelled` row (a paced or parked dispatch
        coming out after the cancellation too)."""
        if self._cancelled is None or not ready:
            return ready
        stopped = await self._cancelled.among((d.event.app, d.event.campaign) for d, _, _ in ready)
        if not stopped:
            return ready
        kept: list[_Ready] = []
        for dispatch, channel, message in ready:
            cancellation = stopped.get((dispatch.event.app, dispatch.event.campaign))
            if cancellation is None:
                kept.append((dispatch, channel, message))
            else:
                result.receipts.append(
                    _receipt(dispatch, "cancelled", provider=channel.provider, reason=cancellation.reason)
                )
        return kept

    async def _applying(self, dispatches: Iterable[Dispatch]) -> dict[tuple[str, str], list[Budget]]:
        if self._budgets is None:
            return {}
        return await self._budgets.applying((d.event.app, d.event.campaign) for d in dispatches)

    async def _within_budget(
        self, claimed: list[_Ready], under: dict[tuple[str, str], list[Budget]], result: SendResult
    ) -> list[_Ready]:
        """The claimed sends their budgets allow, by standings read fresh for the batch just before the
        providers are called. Over budget, a send is settled with an `over_budget` row (a redelivery
        says it again), or, held by its rule, released and parked until the next period (`deferred`);
        either way it no longer uses its frequency caps."""
        if self._budgets is None or not under:
            return claimed
        budgets = list({b.id: b for found in under.values() for b in found}.values())
        standing = BatchBudgets(await self._budgets.standings(budgets), self._costs)
        allowed: list[_Ready] = []
        for dispatch, channel, message in claimed:
            event, plan = dispatch.event, dispatch.plan
            send = send_key(dispatch)
            if "budget" in plan.bypass:
                allowed.append((dispatch, channel, message))
                continue
            pair = [(dispatch.channel, dispatch.address)]
            verdict = standing.verdict(event.app, event.campaign, pair, plan.budget)
            if verdict.action in ("send", "cheaper"):
                allowed.append((dispatch, channel, message))
                continue
            if verdict.action == "hold" and verdict.until is not None:
                await self._ledger.release(*send)
                result.parked.append((dispatch, verdict.until))
                result.receipts.append(
                    _receipt(dispatch, "deferred", provider=channel.provider, reason=verdict.reason)
                )
            else:
                record = _record("over_budget", channel.provider, datetime.now(UTC), reason=verdict.reason,
                                 version=message.version)
                await self._ledger.record(*send, record)
                result.receipts.extend(_receipts_again(dispatch, record))
            if self._caps is not None:
                await self._caps.forget(dispatch)
        return allowed

    async def _claimed(self, sendable: list[_Ready], at: datetime, result: SendResult) -> list[_Ready]:
        """Claim the batch's sends in one round trip; returns the ones this worker now holds.

        A send already finished re-emits its receipts (the same rows: ClickHouse's ReplacingMergeTree
        keeps one), so a worker killed between recording and publishing loses no row; one held by
        another claim is parked until that claim lapses (its worker may have died mid-send)."""
        claims = await self._ledger.claim_many([send_key(d) for d, _, _ in sendable])
        mine: list[_Ready] = []
        for ready, claim in zip(sendable, claims, strict=True):
            dispatch = ready[0]
            if claim.state == "claimed":
                mine.append(ready)
            elif claim.state == "held":
                result.parked.append((dispatch, at + timedelta(seconds=claim.seconds_left + 1)))
            else:
                result.already_sent += 1
                if claim.record is not None:
                    result.receipts.extend(_receipts_again(dispatch, claim.record))
        return mine

    async def _to_inboxes(
        self, sends: Sequence[tuple[Dispatch, InboxChannel, RenderedMessage]]
    ) -> list[Receipt]:
        """Store a batch of inbox messages and their sends' outcomes in one round trip."""
        if not sends:
            return []
        at = datetime.now(UTC)
        started = time.monotonic()
        stored: list[tuple[Dispatch, InboxChannel, str, InboxMessage]] = []
        failures: list[tuple[Dispatch, SendRecord]] = []
        for dispatch, channel, message in sends:
            try:
                user_id, inbox_message = channel.stored(message, dispatch.address, dispatch)
            except PermanentSendError as exc:
                failed = _record("failed", channel.provider, at, reason=str(exc), version=message.version)
                failures.append((dispatch, failed))
                continue
            stored.append((dispatch, channel, user_id, inbox_message))
        versions = {id(d): m.version for d, _, m in sends}
        records = [(d, _record("delivered", c.provider, at, version=versions[id(d)]))
                   for d, c, _, _ in stored] + failures

        def fill(pipe: Pipeline) -> None:
            for _, channel, user_id, inbox_message in stored:
                channel.inbox.add_into(pipe, user_id, inbox_message)
            for dispatch, record in records:
                self._ledger.record_into(pipe, send_key(dispatch), record)

        scripts = [stored[0][1].inbox.add_script] if stored else []
        await _durably(lambda: run_pipeline(self._redis, fill, scripts), "inbox sends")
        _count_outcomes(records, time.monotonic() - started)
        return [receipt for dispatch, record in records for receipt in _receipts_again(dispatch, record, at)]

    async def _refusals(self, dispatches: Sequence[Dispatch]) -> list[ConsentVerdict]:
        if self._consent is None:
            return [ConsentVerdict()] * len(dispatches)
        return await self._consent.verdicts(
            [ConsentQuery(d.user_id, d.channel, d.event.category, d.address, d.event.app) for d in dispatches]
        )

    async def _cap_verdicts(self, dispatches: list[Dispatch], at: datetime) -> list[CapVerdict]:
        if self._caps is None:
            return [PASSED] * len(dispatches)
        return await self._caps.check_many(dispatches, at)

    def _prepare(self, dispatch: Dispatch, user: User | None) -> tuple[Channel, RenderedMessage] | Receipt:
        """The channel and the rendered message, or the `failed` receipt saying why there are none."""
        channel = self._channels.get(dispatch.channel)
        if channel is None:
            return _receipt(dispatch, "failed", reason=f"no provider configured for {dispatch.channel}")
        template = dispatch.template or dispatch.event.template
        try:
            message = self._templates.render(template, dispatch.channel, dispatch.event.data, user)
        except TemplateError as exc:
            return _receipt(dispatch, "failed", provider=channel.provider, reason=f"template: {exc}")
        checked = self._content.message(message, dispatch)
        if isinstance(checked, Refused):
            return _receipt(dispatch, "suppressed", provider=channel.provider, reason=checked.reason)
        return channel, checked

    async def _one(
        self, dispatch: Dispatch, channel: Channel, message: RenderedMessage, budgets: Sequence[Budget] = ()
    ) -> _Handled:
        """Send one claimed dispatch, then record its outcome (and provider id, and its cost against its
        budgets) in one round trip."""
        async with self._slots:
            outcome = await deliver(channel, message, dispatch.address, dispatch, self._retry)
        common = {"provider": outcome.provider, "attempt": outcome.attempts}
        if outcome.status == "failed":
            if outcome.retryable:
                await self._ledger.release(*send_key(dispatch))
            else:
                record = _record(
                    "failed", outcome.provider, datetime.now(UTC), outcome.attempts, reason=outcome.reason,
                    version=message.version,
                )
                await self._record(dispatch, record)
            if self._caps is not None:
                await self._caps.forget(dispatch)  # nobody was reached: the cap is not used up
            if outcome.retryable:
                return await self._later(dispatch, outcome.reason, common)
            return _Handled(_receipts_again(dispatch, record))
        record = _record(outcome.status, outcome.provider, datetime.now(UTC), outcome.attempts, outcome.cost,
                         version=message.version)
        remember = (
            self._sent is not None and bool(outcome.provider_message_id) and dispatch.channel != "inbox"
        )
        taken = await self._record(dispatch, record, outcome.provider_message_id if remember else "", budgets)
        receipts = _receipts_again(dispatch, record)
        # Reports the provider sent before we got here come back as receipts to publish now.
        receipts += ProviderMessages.early_receipts(outcome.provider, dispatch, taken)
        return _Handled(receipts)

    async def _record(
        self,
        dispatch: Dispatch,
        record: SendRecord,
        provider_message_id: str = "",
        budgets: Sequence[Budget] = (),
    ) -> list[bytes]:
        """The send's outcome, its provider message id and its cost in one round trip; returns the
        provider's early reports taken. Redis being down is waited out, never turned into "send again"."""
        sent, counter = self._sent, self._budgets
        key = send_key(dispatch)

        def fill(pipe: Pipeline) -> int:
            self._ledger.record_into(pipe, key, record)
            answers = 1
            if provider_message_id and sent is not None:
                answers += sent.remember_into(pipe, record.provider, provider_message_id, dispatch)
            if counter is not None and budgets:
                # After the others: the early reports' answer stays at index 2.
                answers += counter.count_into(pipe, budgets, key, to_micros(record.cost))
            return answers

        answers = await self._outcomes.run(fill)
        return list(answers[2]) if provider_message_id and sent is not None else []

    async def _later(self, dispatch: Dispatch, reason: str, common: dict[str, object]) -> _Handled:
        """Throttled or down everywhere: try again after a pause, a few times, then fail for good."""
        rounds = await self._ledger.note_give_up(*send_key(dispatch))
        if rounds > len(self._requeue_delays):
            why = f"{reason} (gave up for good after {rounds} rounds)"
            return _Handled([_receipt(dispatch, "failed", reason=why, **common)])
        delay = self._requeue_delays[rounds - 1]
        why = f"{reason}; round {rounds} of {len(self._requeue_delays) + 1}, trying again in {delay:g}s"
        return _Handled([_receipt(dispatch, "deferred", reason=why, **common)], park_for=delay)


_Ready = tuple[Dispatch, Channel, RenderedMessage]


def _record(
    outcome: str, provider: str, at: datetime, attempt: int = 1, cost: float = 0.0, reason: str = "",
    version: int = 0,
) -> SendRecord:
    return SendRecord(
        outcome=outcome, provider=provider, attempt=attempt, cost=cost, at=at.isoformat(), reason=reason,
        template_version=version,
    )


def send_key(dispatch: Dispatch) -> SendKey:
    """The send ledger's key of a dispatch: (message, channel, step), and the address when the person
    gets it on every address of the channel (`all`), so each device is claimed and sent to once."""
    if not dispatch.every_address:
        return (dispatch.message_id, dispatch.channel, dispatch.step)
    digest = hashlib.blake2b(dispatch.address.encode(), digest_size=8).hexdigest()
    return (dispatch.message_id, f"{dispatch.channel}@{digest}", dispatch.step)


def _receipts_again(dispatch: Dispatch, record: SendRecord, at: datetime | None = None) -> list[Receipt]:
    """The receipts of a finished send, made from its record (`at`: its time, when at hand): the same
    rows each time."""
    if not record.at:
        return []  # recorded before records kept enough to say it again
    common: dict[str, object] = {
        "provider": record.provider,
        "attempt": record.attempt,
        "event_time": at or datetime.fromisoformat(record.at),
        "template_version": record.template_version,
    }
    if record.outcome in ("failed", "capped", "over_budget"):
        status: Status = record.outcome  # type: ignore[assignment]
        return [_receipt(dispatch, status, reason=record.reason, **common)]
    receipts = [_receipt(dispatch, "sent", cost=record.cost, **common)]
    if record.outcome == "delivered":
        receipts.append(_receipt(dispatch, "delivered", **common))
    return receipts


async def _durably(write: Callable[[], Awaitable[_T]], what: str) -> _T:
    """Retry a write of an effect that already happened until Redis takes it: the message went out,
    so giving up would let the claim lapse and the message go out again."""
    delay = 0.1
    while True:
        try:
            return await write()
        except Exception as exc:
            if not is_infrastructure(exc):
                raise
            log.warning("recording %s failed (%s); retrying in %.1fs", what, describe(exc), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _receipt(dispatch: Dispatch, status: Status, **fields: object) -> Receipt:
    return Receipt.of(
        dispatch.event,
        dispatch.user_id,
        status,
        message_id=dispatch.message_id,
        channel=dispatch.channel,
        rule_id=dispatch.rule_id,
        rule_version=dispatch.rule_version,
        template=dispatch.template or dispatch.event.template,
        variant=dispatch.plan.variant,
        step=dispatch.step,
        **fields,
    )


def _count_outcomes(records: Sequence[tuple[Dispatch, SendRecord]], seconds: float) -> None:
    """The inbox batch's outcomes in the send metrics, as `deliver` counts every other channel's."""
    counts = Counter((d.channel, r.provider, r.outcome) for d, r in records)
    for (channel, provider, outcome), n in counts.items():
        catalog.send_outcomes(channel, provider, outcome, n, seconds)

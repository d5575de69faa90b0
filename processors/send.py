"""Send: check consent and caps, render the template, claim the send, deliver through the adapter.

Consent is checked again here (a fallback step or a scheduled dispatch may go out long after decide):
a refused recipient gets a `suppressed` receipt and no provider call. Frequency caps are counted here,
atomically, before the send is claimed: an exceeded cap either drops the send or parks the dispatch
until every window allows it, each with a `capped` receipt.

The claim (message, channel, step) is taken in Redis before the provider is called, so a redelivered
dispatch never reaches a person twice. A send that gave up on retryable errors (every provider
throttled or down) releases its claim and is parked for a later round (`deferred`), a few times with
growing pauses, before it fails for good; a permanent failure keeps the claim. A dispatch that finds a
claim still unfinished is parked until the claim lapses, so a worker dying mid-send loses nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from channels.base import Channel, RetryPolicy, deliver
from channels.templates import RenderedMessage, TemplateCatalog, TemplateError
from processors.content import ContentGuard, Refused
from records.topics import Dispatch, Receipt, Status
from state.caps import PASSED, CapVerdict, FrequencyCaps
from state.consent import ConsentQuery, ConsentStore
from state.idempotency import SendLedger
from state.provider_messages import ProviderMessages
from state.users import User, UserDirectory

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
    """How one dispatch went: its receipts, or that it was sent before, or how long to park it."""

    receipts: list[Receipt] = field(default_factory=list)
    already_sent: bool = False
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
    ) -> None:
        self._channels = channels
        self._templates = templates
        self._directory = directory
        self._ledger = ledger
        self._retry = retry
        self._slots = asyncio.Semaphore(concurrency)
        self._consent = consent
        self._caps = caps
        self._content = content or ContentGuard()
        # Provider message ids -> our messages, so a provider's delivery callback finds its message.
        self._sent = sent
        self._requeue_delays = tuple(requeue_delays)

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
        refusals = await self._refusals(cleaned)
        ready: list[tuple[Dispatch, Channel, RenderedMessage]] = []
        for dispatch, refused in zip(cleaned, refusals, strict=True):
            if refused is not None:
                result.suppressed += 1
                result.receipts.append(_receipt(dispatch, "suppressed", reason=f"consent: {refused}"))
                continue
            prepared = self._prepare(dispatch, users.get(dispatch.user_id))
            if isinstance(prepared, Receipt):
                result.receipts.append(prepared)
            else:
                ready.append((dispatch, *prepared))
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
            elif await self._ledger.claim(dispatch.message_id, dispatch.channel, dispatch.step):
                # A dropped send is settled: a redelivery of it must not slip through a later window.
                await self._ledger.mark_done(dispatch.message_id, dispatch.channel, dispatch.step, "capped")
        outcomes = await asyncio.gather(*(self._one(d, c, m) for d, c, m in sendable))
        for (dispatch, _, _), handled in zip(sendable, outcomes, strict=True):
            if handled.already_sent:
                result.already_sent += 1
                result.receipts.extend(handled.receipts)
            elif handled.park_for is not None:
                result.parked.append((dispatch, at + timedelta(seconds=handled.park_for + 1)))
                result.receipts.extend(handled.receipts)
            else:
                result.receipts.extend(handled.receipts)
        return result

    async def _refusals(self, dispatches: Sequence[Dispatch]) -> list[str | None]:
        if self._consent is None:
            return [None] * len(dispatches)
        return await self._consent.refusals(
            [ConsentQuery(d.user_id, d.channel, d.event.category, d.address) for d in dispatches]
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

    async def _one(self, dispatch: Dispatch, channel: Channel, message: RenderedMessage) -> _Handled:
        if not await self._claim(dispatch):
            left = await self._ledger.claim_seconds_left(dispatch.message_id, dispatch.channel, dispatch.step)
            if left is not None:
                return _Handled(park_for=left)
            # Sent before: its receipts again, the same rows (a worker may have died before producing them).
            recorded = await self._ledger.outcome(dispatch.message_id, dispatch.channel, dispatch.step)
            return _Handled(recorded_receipts(dispatch, recorded), already_sent=True)
        at = datetime.now(UTC)
        async with self._slots:
            outcome = await deliver(channel, message, dispatch.address, dispatch, self._retry)
        common = {"provider": outcome.provider, "attempt": outcome.attempts}
        if outcome.status == "failed" and outcome.retryable:
            await self._ledger.release(dispatch.message_id, dispatch.channel, dispatch.step)
        else:
            record = {"status": outcome.status, "at": at.isoformat(), "cost": outcome.cost, **common}
            await self._ledger.mark_done(
                dispatch.message_id, dispatch.channel, dispatch.step, json.dumps(record)
            )
        if outcome.status == "failed":
            if self._caps is not None:
                await self._caps.forget(dispatch)  # nobody was reached: the cap is not used up
            if outcome.retryable:
                return await self._later(dispatch, outcome.reason, common)
            return _Handled([_receipt(dispatch, "failed", reason=outcome.reason, **common)])
        receipts = [_receipt(dispatch, "sent", cost=outcome.cost, event_time=at, **common)]
        if outcome.status == "delivered":
            receipts.append(_receipt(dispatch, "delivered", event_time=at, **common))
        if self._sent is not None and outcome.provider_message_id and dispatch.channel != "inbox":
            # Reports the provider sent before we got here come back as receipts to publish now.
            receipts += await self._sent.remember(outcome.provider, outcome.provider_message_id, dispatch)
        return _Handled(receipts)

    async def _later(self, dispatch: Dispatch, reason: str, common: dict[str, object]) -> _Handled:
        """Throttled or down everywhere: try again after a pause, a few times, then fail for good."""
        rounds = await self._ledger.note_give_up(dispatch.message_id, dispatch.channel, dispatch.step)
        if rounds > len(self._requeue_delays):
            why = f"{reason} (gave up for good after {rounds} rounds)"
            return _Handled([_receipt(dispatch, "failed", reason=why, **common)])
        delay = self._requeue_delays[rounds - 1]
        why = f"{reason}; round {rounds} of {len(self._requeue_delays) + 1}, trying again in {delay:g}s"
        return _Handled([_receipt(dispatch, "deferred", reason=why, **common)], park_for=delay)

    async def _claim(self, dispatch: Dispatch) -> bool:
        if await self._ledger.claim(dispatch.message_id, dispatch.channel, dispatch.step):
            return True
        # The key may have lapsed between the refused claim and now: one more try decides it.
        state = await self._ledger.outcome(dispatch.message_id, dispatch.channel, dispatch.step)
        return state is None and await self._ledger.claim(
            dispatch.message_id, dispatch.channel, dispatch.step
        )


def recorded_receipts(dispatch: Dispatch, recorded: str | None) -> list[Receipt]:
    """The `sent` (and `delivered`) receipts of a send whose outcome the ledger holds, as first made.

    Produced again on every redelivery: the rows have the same key and time, so ClickHouse keeps one.
    Other outcomes (failed, capped) and outcomes recorded as a bare status re-emit nothing."""
    try:
        record = json.loads(recorded or "")
        if not isinstance(record, dict) or record.get("status") not in ("sent", "delivered"):
            return []
        common: dict[str, object] = {
            "provider": str(record["provider"]),
            "attempt": int(record["attempt"]),
            "event_time": datetime.fromisoformat(str(record["at"])),
        }
        cost = float(record["cost"])
    except (ValueError, TypeError, KeyError):
        return []
    receipts = [_receipt(dispatch, "sent", cost=cost, **common)]
    if record["status"] == "delivered":
        receipts.append(_receipt(dispatch, "delivered", **common))
    return receipts


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

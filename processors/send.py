"""Send: render the template for the channel, claim the send, deliver through the channel adapter.

The claim (message, channel, step) is taken in Redis before the provider is called, so a redelivered
dispatch never reaches a person twice. A send that gave up on a retryable error releases its claim,
so a later redelivery may try again; a permanent failure keeps it. A dispatch that finds a claim still
unfinished is parked until the claim lapses, so a worker dying mid-send loses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from channels.base import Channel, RetryPolicy, deliver
from channels.templates import TemplateCatalog, TemplateError
from processors.records import Dispatch, Receipt, Status
from state.idempotency import SendLedger
from state.users import User, UserDirectory


@dataclass
class SendResult:
    receipts: list[Receipt] = field(default_factory=list)
    already_sent: int = 0
    # Dispatches whose send is claimed but unfinished, with when to look again: the claim may belong
    # to a worker that died mid-send, and then only its lapse lets the message go out.
    parked: list[tuple[Dispatch, datetime]] = field(default_factory=list)


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
    ) -> None:
        self._channels = channels
        self._templates = templates
        self._directory = directory
        self._ledger = ledger
        self._retry = retry
        self._slots = asyncio.Semaphore(concurrency)

    async def handle(self, dispatches: Sequence[Dispatch]) -> SendResult:
        users = await self._directory.get_many(
            d.user_id for d in dispatches if not d.user_id.startswith("addr:")
        )
        outcomes = await asyncio.gather(*(self._one(d, users.get(d.user_id)) for d in dispatches))
        result = SendResult()
        now = datetime.now(UTC)
        for dispatch, handled in zip(dispatches, outcomes, strict=True):
            if handled.already_sent:
                result.already_sent += 1
            elif handled.park_for is not None:
                result.parked.append((dispatch, now + timedelta(seconds=handled.park_for + 1)))
            else:
                result.receipts.extend(handled.receipts)
        return result

    async def _one(self, dispatch: Dispatch, user: User | None) -> _Handled:
        channel = self._channels.get(dispatch.channel)
        if channel is None:
            return _Handled(
                [_receipt(dispatch, "failed", reason=f"no provider configured for {dispatch.channel}")]
            )
        try:
            message = self._templates.render(
                dispatch.event.template, dispatch.channel, dispatch.event.data, user
            )
        except TemplateError as exc:
            return _Handled(
                [_receipt(dispatch, "failed", provider=channel.provider, reason=f"template: {exc}")]
            )
        if not await self._claim(dispatch):
            left = await self._ledger.claim_seconds_left(dispatch.message_id, dispatch.channel, dispatch.step)
            return _Handled(already_sent=True) if left is None else _Handled(park_for=left)
        async with self._slots:
            outcome = await deliver(channel, message, dispatch.address, dispatch, self._retry)
        if outcome.status == "failed" and outcome.retryable:
            await self._ledger.release(dispatch.message_id, dispatch.channel, dispatch.step)
        else:
            await self._ledger.mark_done(dispatch.message_id, dispatch.channel, dispatch.step, outcome.status)
        common = {"provider": outcome.provider, "attempt": outcome.attempts}
        if outcome.status == "failed":
            return _Handled([_receipt(dispatch, "failed", reason=outcome.reason, **common)])
        receipts = [_receipt(dispatch, "sent", cost=outcome.cost, **common)]
        if outcome.status == "delivered":
            receipts.append(_receipt(dispatch, "delivered", **common))
        return _Handled(receipts)

    async def _claim(self, dispatch: Dispatch) -> bool:
        if await self._ledger.claim(dispatch.message_id, dispatch.channel, dispatch.step):
            return True
        # The key may have lapsed between the refused claim and now: one more try decides it.
        state = await self._ledger.outcome(dispatch.message_id, dispatch.channel, dispatch.step)
        return state is None and await self._ledger.claim(
            dispatch.message_id, dispatch.channel, dispatch.step
        )


def _receipt(dispatch: Dispatch, status: Status, **fields: object) -> Receipt:
    return Receipt.of(
        dispatch.event,
        dispatch.user_id,
        status,
        channel=dispatch.channel,
        rule_id=dispatch.rule_id,
        rule_version=dispatch.rule_version,
        **fields,
    )

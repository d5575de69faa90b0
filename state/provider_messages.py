"""What Switchboard sent under a provider's message id, so a provider's callback becomes a Receipt.

Key `sb:pmsg:{provider}:{provider_message_id}` holds a `SentMessage` as JSON for `ttl` seconds
(as long as the provider may still report on it).

A provider may report faster than the send is remembered (WeChat pushes within milliseconds of
accepting). Such early reports wait in `sb:pmsg-early:{provider}:{id}`; whichever side comes second,
the sender remembering or the API parking, takes them (LRANGE and DEL in one transaction) and turns
them into receipts, so an early report is neither lost nor published twice. Each key is taken by
its own script, so a batch spans any number of Redis Cluster slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from records.topics import Dispatch, Receipt
from records.vocabulary import Status
from state.scripts import LuaScript

# Read and delete a provider id's early reports at once, so a report parked meanwhile is not lost.
TAKE_EARLY = LuaScript("local r = redis.call('LRANGE', KEYS[1], 0, -1) redis.call('DEL', KEYS[1]) return r")

PROVIDER_MESSAGE_KEY = "sb:pmsg:{}:{}"
EARLY_REPORTS_KEY = "sb:pmsg-early:{}:{}"

# Read and delete one key's early reports at once: whoever takes them publishes them.
_TAKE = """
local reports = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return reports
"""


class EarlyReport(BaseModel):
    """A provider's report on a message id not yet remembered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider_message_id: str
    status: Status
    reason: str = ""


class SentMessage(BaseModel):
    """The fields of a dispatch that name its receipts, without the event's data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message_id: str
    user_id: str
    channel: str
    provider: str
    event_id: str
    app: str
    category: str
    template: str
    campaign: str = ""
    rule_id: str = ""
    rule_version: str = ""
    variant: str = ""
    step: int = 0

    @classmethod
    def of(cls, provider: str, dispatch: Dispatch) -> SentMessage:
        event = dispatch.event
        return cls(
            message_id=dispatch.message_id,
            user_id=dispatch.user_id,
            channel=dispatch.channel,
            provider=provider,
            event_id=event.event_id,
            app=event.app,
            category=event.category,
            template=dispatch.template or event.template,
            campaign=event.campaign,
            rule_id=dispatch.rule_id,
            rule_version=dispatch.rule_version,
            variant=dispatch.plan.variant,
            step=dispatch.step,
        )

    def receipt(self, status: Status, **fields: Any) -> Receipt:
        """A later transition of this message (delivered, read, clicked...), named like its send."""
        return Receipt.model_validate({**self.model_dump(exclude={"category"}), "status": status, **fields})


class ProviderMessages:
    """Provider message id -> SentMessage, kept `ttl_seconds`; batched reads and writes."""

    def __init__(self, redis: Redis, ttl_seconds: int = 7 * 24 * 3600) -> None:
        if ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be at least 1, got {ttl_seconds}")
        self._redis = redis
        self._ttl = ttl_seconds
        self._take = redis.register_script(_TAKE)

    async def remember(self, provider: str, provider_message_id: str, dispatch: Dispatch) -> list[Receipt]:
        return await self.remember_many([(provider, provider_message_id, dispatch)])

    async def remember_many(self, sends: Sequence[tuple[str, str, Dispatch]]) -> list[Receipt]:
        """Store every (provider, provider message id, dispatch) in one pipeline; empty ids are skipped.

        Returns receipts for reports the providers sent before this call remembered their sends."""
        sends = [s for s in sends if s[1]]
        if not sends:
            return []
        stored = {(provider, pid): SentMessage.of(provider, d) for provider, pid, d in sends}
        async with self._redis.pipeline(transaction=False) as pipe:
            for (provider, pid), message in stored.items():
                pipe.set(PROVIDER_MESSAGE_KEY.format(provider, pid), message.model_dump_json(), ex=self._ttl)
            await pipe.execute()
        early = await self._take_early(list(stored))
        return [stored[key].receipt(r.status, reason=r.reason, provider=key[0]) for key, r in early]

    def remember_into(
        self, pipe: Pipeline, provider: str, provider_message_id: str, dispatch: Dispatch
    ) -> int:
        """Queue `remember` on `pipe` (run with `run_pipeline` and `TAKE_EARLY`) so it shares the round
        trip of the send's outcome; returns how many answers it adds (the last is for `early_receipts`)."""
        message = SentMessage.of(provider, dispatch)
        pipe.set(
            PROVIDER_MESSAGE_KEY.format(provider, provider_message_id),
            message.model_dump_json(),
            ex=self._ttl,
        )
        TAKE_EARLY.queue(pipe, [EARLY_REPORTS_KEY.format(provider, provider_message_id)], [])
        return 2

    @staticmethod
    def early_receipts(provider: str, dispatch: Dispatch, taken: Sequence[bytes]) -> list[Receipt]:
        """Receipts for the early reports `remember_into` took."""
        if not taken:
            return []
        message = SentMessage.of(provider, dispatch)
        reports = [EarlyReport.model_validate_json(item) for item in taken]
        return [message.receipt(r.status, reason=r.reason, provider=provider) for r in reports]

    async def park_early(self, provider: str, reports: Sequence[EarlyReport]) -> list[Receipt]:
        """Keep reports on ids not yet remembered; returns receipts for any remembered meanwhile."""
        if not reports:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for report in reports:
                key = EARLY_REPORTS_KEY.format(provider, report.provider_message_id)
                pipe.rpush(key, report.model_dump_json())
                pipe.expire(key, self._ttl)
            await pipe.execute()
        # The send may have been remembered between the caller's lookup and the park: look again.
        known = await self.lookup(provider, [r.provider_message_id for r in reports])
        early = await self._take_early([(provider, pid) for pid in known])
        return [known[key[1]].receipt(r.status, reason=r.reason, provider=provider) for key, r in early]

    async def _take_early(self, keys: Sequence[tuple[str, str]]) -> list[tuple[tuple[str, str], EarlyReport]]:
        """Take (read and delete, atomically per key) the early reports of these (provider, id)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for provider, pid in keys:
                await self._take(keys=[EARLY_REPORTS_KEY.format(provider, pid)], client=pipe)
            answers = await pipe.execute()
        taken: list[tuple[tuple[str, str], EarlyReport]] = []
        for key, raw in zip(keys, answers, strict=True):
            taken.extend((key, EarlyReport.model_validate_json(item)) for item in raw)
        return taken

    async def lookup(self, provider: str, ids: Sequence[str]) -> dict[str, SentMessage]:
        """The known ones among `ids`; unknown or expired ids are absent from the answer."""
        unique = list(dict.fromkeys(i for i in ids if i))
        if not unique:
            return {}
        # GETs in a pipeline rather than one MGET: the keys lie in many Redis Cluster slots.
        async with self._redis.pipeline(transaction=False) as pipe:
            for i in unique:
                pipe.get(PROVIDER_MESSAGE_KEY.format(provider, i))
            raw = await pipe.execute()
        return {
            provider_message_id: SentMessage.model_validate_json(value)
            for provider_message_id, value in zip(unique, raw, strict=True)
            if value is not None
        }

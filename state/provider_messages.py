"""What Switchboard sent under a provider's message id, so a provider's callback becomes a Receipt.

Key `sb:pmsg:{provider}:{provider_message_id}` holds a `SentMessage` as JSON for `ttl` seconds
(as long as the provider may still report on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from processors.records import Dispatch, Receipt
from processors.vocabulary import Status

PROVIDER_MESSAGE_KEY = "sb:pmsg:{}:{}"


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
        return Receipt.model_validate(
            {**self.model_dump(exclude={"category"}), "status": status, **fields}
        )


class ProviderMessages:
    """Provider message id -> SentMessage, kept `ttl_seconds`; batched reads and writes."""

    def __init__(self, redis: Redis, ttl_seconds: int = 7 * 24 * 3600) -> None:
        if ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be at least 1, got {ttl_seconds}")
        self._redis = redis
        self._ttl = ttl_seconds

    async def remember(self, provider: str, provider_message_id: str, dispatch: Dispatch) -> None:
        await self.remember_many([(provider, provider_message_id, dispatch)])

    async def remember_many(self, sends: Sequence[tuple[str, str, Dispatch]]) -> None:
        """Store every (provider, provider message id, dispatch) in one pipeline; empty ids are skipped."""
        sends = [s for s in sends if s[1]]
        if not sends:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for provider, provider_message_id, dispatch in sends:
                stored = SentMessage.of(provider, dispatch)
                pipe.set(
                    PROVIDER_MESSAGE_KEY.format(provider, provider_message_id),
                    stored.model_dump_json(),
                    ex=self._ttl,
                )
            await pipe.execute()

    async def lookup(self, provider: str, ids: Sequence[str]) -> dict[str, SentMessage]:
        """The known ones among `ids`; unknown or expired ids are absent from the answer."""
        unique = list(dict.fromkeys(i for i in ids if i))
        if not unique:
            return {}
        raw = await self._redis.mget([PROVIDER_MESSAGE_KEY.format(provider, i) for i in unique])
        return {
            provider_message_id: SentMessage.model_validate_json(value)
            for provider_message_id, value in zip(unique, raw, strict=True)
            if value is not None
        }

"""The send ledger: one Redis key per (message id, channel, step), claimed before a provider is called.

A redelivered or replayed dispatch finds the key and is not sent twice. Key `sb:sent:{message_id}:
{channel}:{step}` holds `claimed` while a worker sends, then the send's record (`SendRecord` as JSON:
outcome, provider, attempt, cost, time) for the dedup window, so a dispatch redelivered after its
outcome was recorded re-emits the same receipts instead of being skipped (ClickHouse then agrees with
what was sent even when the worker died between recording and publishing). A batch is claimed in one
round trip (`claim_many`) and its outcomes are recorded in one (`record_into` on a shared pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from state.scripts import LuaScript, run_pipeline

SENT_KEY = "sb:sent:{}:{}:{}"
GIVE_UP_KEY = "sb:giveup:{}:{}:{}"
CLAIMED = "claimed"

# Delete only a claim still in progress: a finished send must stay remembered.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Claim, or say who holds it: atomic, so a claim lapsing between a refused SET and a GET cannot
# leave a send unclaimed and unsent. Returns 1 when claimed, else {value, pttl}.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""

SendKey = tuple[str, str, int]
"""(message id, channel, step)."""


class SendRecord(msgspec.Struct, frozen=True):
    """How a send ended, as much as its receipts need to be made again identically."""

    outcome: str
    provider: str = ""
    attempt: int = 0
    cost: float = 0.0
    at: str = ""
    """The ISO time of the receipts first published (empty for records older than this format)."""
    reason: str = ""
    template_version: int = 0
    """The stored template's version rendered (0: a file), so a re-emitted row names it too."""

    def encode(self) -> bytes:
        return _ENCODER.encode(self)

    @classmethod
    def decode(cls, value: bytes | str) -> SendRecord:
        raw = value.encode() if isinstance(value, str) else value
        if not raw.startswith(b"{"):
            return cls(outcome=raw.decode())  # a bare outcome, as the ledger wrote before it kept records
        return _DECODER.decode(raw)


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(SendRecord)


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: `claimed` (send now), `held` (another worker's claim, unfinished, lapsing
    in `seconds_left`) or `done` (finished: `record` says how)."""

    state: Literal["claimed", "held", "done"]
    seconds_left: float = 0.0
    record: SendRecord | None = None


class SendLedger:
    """Exclusive claims on sends. `ttl_seconds` is how long a finished send is remembered."""

    def __init__(self, redis: Redis, ttl_seconds: int, claim_ttl_seconds: int = 600) -> None:
        if ttl_seconds < 1 or claim_ttl_seconds < 1:
            raise ValueError(
                "ttl_seconds and claim_ttl_seconds must be at least 1, "
                f"got {ttl_seconds} and {claim_ttl_seconds}"
            )
        self._redis = redis
        self._ttl = ttl_seconds
        # A claim outlives the retries of one send but expires if the worker dies holding it,
        # so a later redelivery can still send.
        self._claim_ttl = min(claim_ttl_seconds, ttl_seconds)
        self._release = redis.register_script(_RELEASE)
        self._claim = LuaScript(_CLAIM)

    @property
    def redis(self) -> Redis:
        """The client, for a stage to put the ledger's writes on the pipeline of a send's other effects."""
        return self._redis

    async def claim(self, message_id: str, channel: str, step: int) -> bool:
        """True when this worker may send: the key was absent and is now claimed (SET NX EX)."""
        key = SENT_KEY.format(message_id, channel, step)
        return bool(await self._redis.set(key, CLAIMED, nx=True, ex=self._claim_ttl))

    async def claim_many(self, sends: Sequence[SendKey]) -> list[Claim]:
        """Claim every send of a batch in one round trip; one answer per send, in order."""
        if not sends:
            return []

        def fill(pipe: Pipeline) -> None:
            for message_id, channel, step in sends:
                key = SENT_KEY.format(message_id, channel, step)
                self._claim.queue(pipe, [key], [CLAIMED, self._claim_ttl])

        answers = await run_pipeline(self._redis, fill, [self._claim])
        return [_claim_of(answer) for answer in answers]

    async def release(self, message_id: str, channel: str, step: int) -> bool:
        """Drop an unfinished claim (after giving up on retryable errors) so a redelivery may try."""
        key = SENT_KEY.format(message_id, channel, step)
        return bool(await self._release(keys=[key], args=[CLAIMED]))

    async def mark_done(self, message_id: str, channel: str, step: int, outcome: str) -> None:
        """Remember the send's outcome (e.g. `sent`, `delivered`, `failed`) for the dedup window."""
        await self.record(message_id, channel, step, SendRecord(outcome=outcome))

    async def record(self, message_id: str, channel: str, step: int, record: SendRecord) -> None:
        """Remember how the send ended, for the dedup window."""
        async with self._redis.pipeline(transaction=False) as pipe:
            self.record_into(pipe, (message_id, channel, step), record)
            await pipe.execute()

    def record_into(self, pipe: Pipeline, send: SendKey, record: SendRecord) -> None:
        """Queue the record of a finished send on `pipe`, so it shares the round trip of its other effects."""
        if not record.outcome or record.outcome == CLAIMED:
            raise ValueError(f"outcome must name how the send ended, got {record.outcome!r}")
        pipe.set(SENT_KEY.format(*send), record.encode(), ex=self._ttl)

    async def note_give_up(self, message_id: str, channel: str, step: int) -> int:
        """Count one more round of retries that ended on retryable errors; returns the count so far."""
        key = GIVE_UP_KEY.format(message_id, channel, step)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self._ttl)
            count, _ = await pipe.execute()
        return int(count)

    async def claim_seconds_left(self, message_id: str, channel: str, step: int) -> float | None:
        """Seconds until an unfinished claim lapses; None when the send finished or was never claimed."""
        key = SENT_KEY.format(message_id, channel, step)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            value, pttl = await pipe.execute()
        held = value.decode() if isinstance(value, bytes) else value
        if held != CLAIMED:
            return None
        return max(int(pttl), 0) / 1000.0

    async def outcome(self, message_id: str, channel: str, step: int) -> str | None:
        """`claimed` while in progress, the outcome once done, None when never claimed or expired."""
        value = await self._redis.get(SENT_KEY.format(message_id, channel, step))
        if value is None:
            return None
        return SendRecord.decode(value).outcome

    async def send_record(self, message_id: str, channel: str, step: int) -> SendRecord | None:
        """How the send ended; None while it is claimed or when it was never claimed or expired."""
        value = await self._redis.get(SENT_KEY.format(message_id, channel, step))
        if value is None:
            return None
        record = SendRecord.decode(value)
        return None if record.outcome == CLAIMED else record


def _claim_of(answer: object) -> Claim:
    if answer == 1:
        return Claim("claimed")
    value, pttl = answer if isinstance(answer, list) else (None, 0)
    if value is None:
        # Lapsed between SET NX and GET cannot happen inside one script; treat as held briefly.
        return Claim("held", seconds_left=1.0)
    record = SendRecord.decode(value)
    if record.outcome == CLAIMED:
        return Claim("held", seconds_left=max(int(pttl), 0) / 1000.0)
    return Claim("done", record=record)

"""The send ledger: one Redis key per (message id, channel, step), claimed before a provider is called.

A redelivered or replayed dispatch finds the key and is not sent twice. Key `sb:sent:{message_id}:
{channel}:{step}` holds `claimed` while a worker sends, then the outcome for the dedup window.
"""

from __future__ import annotations

from redis.asyncio import Redis

SENT_KEY = "sb:sent:{}:{}:{}"
GIVE_UP_KEY = "sb:giveup:{}:{}:{}"
CLAIMED = "claimed"

# Delete only a claim still in progress: a finished send must stay remembered.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


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

    async def claim(self, message_id: str, channel: str, step: int) -> bool:
        """True when this worker may send: the key was absent and is now claimed (SET NX EX)."""
        key = SENT_KEY.format(message_id, channel, step)
        return bool(await self._redis.set(key, CLAIMED, nx=True, ex=self._claim_ttl))

    async def release(self, message_id: str, channel: str, step: int) -> bool:
        """Drop an unfinished claim (after giving up on retryable errors) so a redelivery may try."""
        key = SENT_KEY.format(message_id, channel, step)
        return bool(await self._release(keys=[key], args=[CLAIMED]))

    async def mark_done(self, message_id: str, channel: str, step: int, outcome: str) -> None:
        """Remember the send's outcome (e.g. `sent`, `delivered`, `failed`) for the dedup window."""
        if not outcome or outcome == CLAIMED:
            raise ValueError(f"outcome must name how the send ended, got {outcome!r}")
        await self._redis.set(SENT_KEY.format(message_id, channel, step), outcome, ex=self._ttl)

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
        return value.decode() if isinstance(value, bytes) else str(value)

"""The in-app inbox: a bounded, newest-first list of messages per user, kept in Redis.

Layout: `sb:inbox:{user}` sorted set (score = created time) of message ids, and
`sb:inbox:{user}:m` hash of message id -> message JSON. Unread ids live in `sb:inbox:{user}:unread`.
The braces are literal: the user id is the keys' hash tag, so one script reaches all three in a
Redis Cluster (before, the keys were `sb:inbox:user...`; `switchboard redis migrate` renames them).

A campaign's messages are indexed as they are added, for recall (撤回): `sb:inbox:campaign:{app/id}`
hash of message id -> user id, kept `recall_seconds` after the campaign's last inbox message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from records.topics import Category
from state.keyspace import tag
from state.scripts import LuaScript, run_pipeline


def inbox_keys(user_id: str) -> tuple[str, str, str]:
    """The user's index, message hash and unread set: one slot, by the user's hash tag."""
    base = "sb:inbox:" + tag(user_id)
    return base, base + ":m", base + ":unread"

# Store a message and trim the oldest beyond the bound, atomically, so two workers writing
# to one user cannot leave the index and the message hash out of step.
_ADD = """
local index, messages, unread = KEYS[1], KEYS[2], KEYS[3]
local id, score, body, bound = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if redis.call('HSETNX', messages, id, body) == 0 then return 0 end
redis.call('ZADD', index, score, id)
redis.call('SADD', unread, id)
local excess = redis.call('ZCARD', index) - bound
if excess > 0 then
  local old = redis.call('ZRANGE', index, 0, excess - 1)
  redis.call('ZREMRANGEBYRANK', index, 0, excess - 1)
  redis.call('HDEL', messages, unpack(old))
  redis.call('SREM', unread, unpack(old))
end
return 1
"""


# Mark a message read (and clicked), atomically: two concurrent clicks, or a click racing a read or a
# delete, must neither both count as first nor bring a deleted message back.
_MARK = """
local body = redis.call('HGET', KEYS[1], ARGV[1])
if not body then return false end
local message = cjson.decode(body)
local first = 0
if ARGV[3] == 'click' and (message['clicked_at'] == nil or message['clicked_at'] == cjson.null) then
  message['clicked_at'] = ARGV[2]
  first = 1
end
if message['read_at'] == nil or message['read_at'] == cjson.null then
  message['read_at'] = ARGV[2]
  if ARGV[3] == 'read' then first = 1 end
end
redis.call('SREM', KEYS[2], ARGV[1])
if first == 0 and ARGV[3] == 'read' then return {body, 0} end
body = cjson.encode(message)
redis.call('HSET', KEYS[1], ARGV[1], body)
return {body, first}
"""


# Take one message out of its user's inbox; returns its body (nil: it was not there any more).
_REMOVE = """
local body = redis.call('HGET', KEYS[2], ARGV[1])
if not body then return false end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return body
"""
RECALL_SECONDS = 30 * 24 * 3600
"""How long a campaign's inbox messages can be recalled after its last one was added."""


def campaign_index(app: str, campaign: str) -> str:
    """The campaign's inbox messages (message id -> user id), tagged by the campaign."""
    return "sb:inbox:campaign:" + tag(f"{app}/{campaign}")


class InboxMessage(BaseModel):
    """A message as the inbox holds it, with what a receipt needs to name it."""

    model_config = ConfigDict(extra="forbid")

    message_id: str
    title: str
    body: str
    link: str = ""
    app: str
    event_id: str
    template: str
    category: Category
    campaign: str = ""
    rule_id: str = ""
    rule_version: str = ""
    created_at: datetime
    read_at: datetime | None = None
    clicked_at: datetime | None = None


class Inbox:
    """Per-user inboxes with a bound on how many messages each keeps."""

    def __init__(self, redis: Redis, max_per_user: int = 200, recall_seconds: int = RECALL_SECONDS) -> None:
        if max_per_user < 1:
            raise ValueError(f"max_per_user must be at least 1, got {max_per_user}")
        self._redis = redis
        self._bound = max_per_user
        self._recall_seconds = recall_seconds
        self._remove = LuaScript(_REMOVE)
        self._add = redis.register_script(_ADD)
        self.add_script = LuaScript(_ADD)
        self._mark = redis.register_script(_MARK)

    async def add(self, user_id: str, message: InboxMessage) -> bool:
        """Store the message; False when it was already there (a redelivery)."""
        keys = list(inbox_keys(user_id))
        args: list[str | float | int] = [
            message.message_id,
            message.created_at.timestamp(),
            message.model_dump_json(),
            self._bound,
        ]
        added = bool(await self._add(keys=keys, args=args))
        if added and message.campaign:
            async with self._redis.pipeline(transaction=False) as pipe:
                self._index_into(pipe, user_id, message)
                await pipe.execute()
        return added

    def add_into(self, pipe: Pipeline, user_id: str, message: InboxMessage) -> None:
        """Queue the store of a message on `pipe` (see `add`; run it with `state.scripts.run_pipeline`
        and `add_script`), so a batch of inbox sends is one round trip."""
        keys = list(inbox_keys(user_id))
        self.add_script.queue(
            pipe,
            keys,
            [message.message_id, message.created_at.timestamp(), message.model_dump_json(), self._bound],
        )
        if message.campaign:
            self._index_into(pipe, user_id, message)

    def _index_into(self, pipe: Pipeline, user_id: str, message: InboxMessage) -> None:
        """Remember a campaign's message for recall (a redelivery sets the same field again)."""
        index = campaign_index(message.app, message.campaign)
        pipe.hset(index, message.message_id, user_id)
        pipe.expire(index, self._recall_seconds)

    async def recall(
        self, app: str, campaign: str, batch: int = 500
    ) -> AsyncIterator[list[tuple[str, InboxMessage]]]:
        """Take the campaign's messages out of their users' inboxes, a batch per round trip; yields
        (user id, message) of each batch's removed ones (one already deleted by its user is not)."""
        index = campaign_index(app, campaign)
        cursor = 0
        while True:
            # Deleting the fields handled is safe mid-scan: every field still there is returned once.
            cursor, found = await self._redis.hscan(index, cursor, count=batch)
            if not found:
                if cursor == 0:
                    return
                continue
            pairs = [(_text(m), _text(u)) for m, u in found.items()]  # type: ignore[union-attr]

            def fill(pipe: Pipeline, pairs: list[tuple[str, str]] = pairs) -> None:
                for message_id, user_id in pairs:
                    self._remove.queue(pipe, list(inbox_keys(user_id)), [message_id])

            bodies = await run_pipeline(self._redis, fill, [self._remove])
            await self._redis.hdel(index, *(m for m, _ in pairs))
            yield [
                (user_id, InboxMessage.model_validate_json(body))
                for (_, user_id), body in zip(pairs, bodies, strict=True)
                if body is not None
            ]
            if cursor == 0:
                return

    async def list(self, user_id: str, limit: int = 20, offset: int = 0) -> list[InboxMessage]:
        ids = await self._redis.zrevrange(inbox_keys(user_id)[0], offset, offset + limit - 1)
        if not ids:
            return []
        keys = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        bodies = await self._redis.hmget(inbox_keys(user_id)[1], keys)
        return [InboxMessage.model_validate_json(b) for b in bodies if b is not None]

    async def get(self, user_id: str, message_id: str) -> InboxMessage | None:
        body = await self._redis.hget(inbox_keys(user_id)[1], message_id)
        return None if body is None else InboxMessage.model_validate_json(body)

    async def unread_count(self, user_id: str) -> int:
        return int(await self._redis.scard(inbox_keys(user_id)[2]))

    async def total(self, user_id: str) -> int:
        return int(await self._redis.zcard(inbox_keys(user_id)[0]))

    async def mark_read(self, user_id: str, message_id: str) -> tuple[InboxMessage | None, bool]:
        """Returns the message (None if unknown) and whether this call is the first read."""
        return await self._marked(user_id, message_id, "read")

    async def mark_clicked(self, user_id: str, message_id: str) -> tuple[InboxMessage | None, bool]:
        """A click implies a read. Returns the message and whether this call is the first click."""
        return await self._marked(user_id, message_id, "click")

    async def _marked(self, user_id: str, message_id: str, action: str) -> tuple[InboxMessage | None, bool]:
        keys = list(inbox_keys(user_id)[1:])
        at = datetime.now(UTC).isoformat()
        answer = await self._mark(keys=keys, args=[message_id, at, action])
        if not answer:
            return None, False
        body, first = answer
        return InboxMessage.model_validate_json(body), bool(first)

    async def delete(self, user_id: str, message_id: str) -> bool:
        index, messages, unread = inbox_keys(user_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(index, message_id)
            pipe.hdel(messages, message_id)
            pipe.srem(unread, message_id)
            removed, _, _ = await pipe.execute()
        return bool(removed)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

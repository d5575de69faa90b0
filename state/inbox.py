"""The in-app inbox: a bounded, newest-first list of messages per user, kept in Redis.

Layout: `sb:inbox:{user}` sorted set (score = created time) of message ids, and
`sb:inbox:{user}:m` hash of message id -> message JSON. Unread ids live in `sb:inbox:{user}:unread`.
The braces are literal: the user id is the keys' hash tag, so one script reaches all three in a
Redis Cluster (before, the keys were `sb:inbox:user...`; `switchboard redis migrate` renames them).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from records.topics import Category
from state.keyspace import tag
from state.scripts import LuaScript


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

    def __init__(self, redis: Redis, max_per_user: int = 200) -> None:
        if max_per_user < 1:
            raise ValueError(f"max_per_user must be at least 1, got {max_per_user}")
        self._redis = redis
        self._bound = max_per_user
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
        return bool(await self._add(keys=keys, args=args))

    def add_into(self, pipe: Pipeline, user_id: str, message: InboxMessage) -> None:
        """Queue the store of a message on `pipe` (see `add`; run it with `state.scripts.run_pipeline`
        and `add_script`), so a batch of inbox sends is one round trip."""
        keys = list(inbox_keys(user_id))
        self.add_script.queue(
            pipe,
            keys,
            [message.message_id, message.created_at.timestamp(), message.model_dump_json(), self._bound],
        )

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

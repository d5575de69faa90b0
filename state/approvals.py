"""Held items awaiting approval, durable in Redis: a message (a held event) or, with issue 13, a
template version. The store is generic over the subject's kind; what approval sets in motion is the
worker's (processors/approvals.py).

Redis layout (one hash tag, so each script's keys share a Redis Cluster slot):
- `sb:{approvals}:item:{id}` hash: `j` the item's JSON, `v` its version (every change bumps it, and
  a change names the version it read: two approvers, or an approver and the expiry, cannot both win);
- `sb:{approvals}:index` sorted set of every id by creation time (listing, newest first);
- `sb:{approvals}:pending` sorted set of the pending ids by creation time;
- `sb:{approvals}:due` sorted set, id → when the worker should look at it next (at once after a
  change: tell the approvers, release, write the row; otherwise at its expiry).
Nothing expires by itself: an item stays until an operator's tooling removes it, so a held message
survives any worker restart and its outcome stays readable.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from redis.asyncio import Redis

SubjectKind = Literal["message", "template_version"]
ApprovalState = Literal["pending", "approved", "rejected", "expired"]
Verdict = Literal["approve", "reject"]
STATES: tuple[ApprovalState, ...] = ("pending", "approved", "rejected", "expired")

ITEM_KEY = "sb:{{approvals}}:item:{}"
INDEX_KEY = "sb:{approvals}:index"
PENDING_KEY = "sb:{approvals}:pending"
DUE_KEY = "sb:{approvals}:due"

# KEYS: item, index, pending, due. ARGV: id, json, created (score), due (score).
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', '1', 'j', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
return 1
"""
# KEYS: item, pending, due. ARGV: id, version read, json, state, due score ('' = leave the due mark).
_CHANGE = """
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(ARGV[2]) + 1), 'j', ARGV[3])
if ARGV[4] ~= 'pending' then redis.call('ZREM', KEYS[2], ARGV[1]) end
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1]) end
return 1
"""
# KEYS: item, due. ARGV: id, version read, next score ('' = nothing more to do: off the due set).
_RESCHEDULE = """
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('ZREM', KEYS[2], ARGV[1])
else redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
return 1
"""


class Decision(BaseModel):
    """One approver's verdict at one level."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: int
    role: str
    operator: str
    verdict: Verdict
    comment: str = ""
    at: AwareDatetime


class ApprovalItem(BaseModel):
    """Something held until its levels approve it: who submitted it, where it stands, what was said."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approval_id: str
    kind: SubjectKind
    subject: str
    """What is held, in words: `app:event_id` of a message, `template@version` of a template version."""
    app: str
    policy: str
    levels: tuple[str, ...]
    level: int = 0
    """The index of the level that decides next (== len(levels) once approved)."""
    state: ApprovalState = "pending"
    submitted_by: str = ""
    """`operator:NAME` or `app:NAME` (the API sets it from the credentials), or '' when unknown."""
    created_at: AwareDatetime
    expires_at: AwareDatetime
    audience: str = ""
    audience_size: int = 0
    payload: dict[str, Any] = Field(default_factory=dict)
    """The held subject itself: the event of a message, as it was submitted."""
    decisions: tuple[Decision, ...] = ()
    reason: str = ""
    """Why it was rejected or expired, once it was."""
    notified_level: int = -1
    """The last level whose approvers were told; the worker tells the next one."""
    settled: bool = False
    """Whether the worker has carried the outcome out (released, row written)."""

    @property
    def role(self) -> str | None:
        """The role that decides next; None once decided."""
        return self.levels[self.level] if self.state == "pending" and self.level < len(self.levels) else None

    def deciders(self) -> set[str]:
        return {decision.operator for decision in self.decisions}

    def expired_by(self, now: datetime) -> bool:
        return self.state == "pending" and now >= self.expires_at


def approval_id_for(kind: SubjectKind, subject: str) -> str:
    """Deterministic, so holding the same event again (a redelivered record) finds the same item."""
    digest = hashlib.blake2b(f"{kind}\x1f{subject}".encode(), digest_size=10).hexdigest()
    return f"ap_{digest}"


class Conflict(RuntimeError):
    """The item changed since it was read (another decision, the expiry): read it again."""


class ApprovalStore:
    """Held items in Redis, changed only through versioned scripts; the client is passed in."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._create = redis.register_script(_CREATE)
        self._change = redis.register_script(_CHANGE)
        self._reschedule = redis.register_script(_RESCHEDULE)

    async def hold(self, item: ApprovalItem) -> tuple[ApprovalItem, bool]:
        """Store `item` unless its id is held already; returns the stored item and whether it is new."""
        created = await self._create(
            keys=[ITEM_KEY.format(item.approval_id), INDEX_KEY, PENDING_KEY, DUE_KEY],
            args=[item.approval_id, item.model_dump_json(), item.created_at.timestamp(),
                  datetime.now(UTC).timestamp()],
        )
        if created:
            return item, True
        found = await self.get(item.approval_id)
        return (found or item), False

    async def read(self, approval_id: str) -> tuple[ApprovalItem, str] | None:
        """The item and its version (to name in a change), or None."""
        raw = await self._redis.hmget(ITEM_KEY.format(approval_id), ["v", "j"])
        if raw[0] is None or raw[1] is None:
            return None
        version = raw[0].decode() if isinstance(raw[0], bytes) else str(raw[0])
        return ApprovalItem.model_validate_json(raw[1]), version

    async def get(self, approval_id: str) -> ApprovalItem | None:
        found = await self.read(approval_id)
        return None if found is None else found[0]

    async def change(self, version: str, item: ApprovalItem, due_now: bool = True) -> str:
        """Write `item` if it is still at `version`, else raise Conflict; returns the new version.
        `due_now` asks the worker to look at it at once (tell approvers, carry out an outcome)."""
        due = str(datetime.now(UTC).timestamp()) if due_now else ""
        changed = await self._change(
            keys=[ITEM_KEY.format(item.approval_id), PENDING_KEY, DUE_KEY],
            args=[item.approval_id, version, item.model_dump_json(), item.state, due],
        )
        if not changed:
            raise Conflict(f"approval {item.approval_id} changed meanwhile")
        return str(int(version) + 1)

    async def due(self, now: datetime, limit: int = 100) -> list[str]:
        """Ids the worker should look at by `now`, earliest first."""
        members = await self._redis.zrangebyscore(DUE_KEY, "-inf", now.timestamp(), start=0, num=limit)
        return [_text(member) for member in members]  # type: ignore[arg-type]

    async def reschedule(self, approval_id: str, version: str, at: datetime | None) -> bool:
        """Look at the item next at `at` (None: never), unless it changed since `version`: then its
        change left a due mark of its own, which stays."""
        done = await self._reschedule(
            keys=[ITEM_KEY.format(approval_id), DUE_KEY],
            args=[approval_id, version, "" if at is None else str(at.timestamp())],
        )
        return bool(done)

    async def postpone(self, approval_id: str, seconds: float) -> None:
        await self._redis.zadd(DUE_KEY, {approval_id: datetime.now(UTC).timestamp() + seconds})

    async def forget_due(self, approval_id: str) -> None:
        await self._redis.zrem(DUE_KEY, approval_id)

    async def listing(self, state: ApprovalState | None, limit: int = 100) -> list[ApprovalItem]:
        """Items newest first, of one state (None: any)."""
        key = PENDING_KEY if state == "pending" else INDEX_KEY
        # Other states are filtered from the index: read a few pages' worth so the filter finds enough.
        wanted = limit if state in (None, "pending") else limit * 10
        ids = [_text(m) for m in await self._redis.zrevrange(key, 0, wanted - 1)]  # type: ignore[arg-type]
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for approval_id in ids:
                pipe.hget(ITEM_KEY.format(approval_id), "j")
            raw = await pipe.execute()
        items = [ApprovalItem.model_validate_json(value) for value in raw if value is not None]
        return [item for item in items if state is None or item.state == state][:limit]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

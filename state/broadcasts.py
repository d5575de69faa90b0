"""Broadcast jobs: an event to a large audience, expanded page by page from a cursor kept in Redis.

Ingest records the job and moves on; a worker timer expands it a page at a time (`processors/
broadcast.py`), producing the page's deliveries before checkpointing the cursor. A worker killed
mid-expansion leaves the last checkpoint: whoever takes the job next re-emits at most one page, which
decide and send treat as the redelivery it is (message ids are deterministic, sends are claimed).

Redis layout, in one hash slot (`{bc}`) since a job's writes touch its hash and the active set:
`sb:{bc}:job:{app}/{event_id}` hash (event, sets, indexes, lane, source, cursor, expanded, total,
state, created_at, finished_at); `sb:{bc}:active` set of running job ids; `sb:{bc}:jobs` sorted set
of every job by creation time; `sb:{bc}:lease:{id}` the worker expanding a job, for a few seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from records.topics import EventCore
from state.users import AudienceIndex

_JOB = "sb:{{bc}}:job:{}"
_ACTIVE = "sb:{bc}:active"
_JOBS = "sb:{bc}:jobs"
_LEASE = "sb:{{bc}}:lease:{}"
KEEP_FINISHED = 1000  # finished jobs listed by `switchboard broadcasts`; older ones are forgotten

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
"""

_FINISH = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'finished_at', ARGV[2])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_RENEW = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if held then return 0 end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


@dataclass(frozen=True)
class Broadcast:
    """One job: the event (without its audience), who it selects, and how far it has come."""

    job_id: str
    event: EventCore
    audience: AudienceIndex
    lane: str
    source: str
    cursor: str
    expanded: int
    total: int
    state: str
    created_at: float
    finished_at: float | None
    segment: str = ""
    """The segment definition each page is filtered by, as ingest found it (`state.segments`); "" none."""

    @property
    def done(self) -> bool:
        return self.state == "done"


def job_id_of(event: EventCore) -> str:
    return f"{event.app}/{event.event_id}"


class BroadcastJobs:
    """Creates, leases, checkpoints and lists broadcast jobs; the client is passed in."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._create = redis.register_script(_CREATE)
        self._finish = redis.register_script(_FINISH)
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)

    async def create(
        self, event: EventCore, audience: AudienceIndex, lane: str, source: str, total: int, segment: str = ""
    ) -> bool:
        """Record the job once: False when it exists already (the same event redelivered)."""
        job_id = job_id_of(event)
        now = time.time()
        fields: dict[str, str] = {
            "event": event.model_dump_json(),
            "sets": json.dumps(audience.sets),
            "indexes": json.dumps(audience.indexes),
            "lane": lane,
            "source": source,
            "cursor": "",
            "expanded": "0",
            "total": str(total),
            "state": "running",
            "created_at": repr(now),
            "segment": segment,
        }
        flat = [part for pair in fields.items() for part in pair]
        created = await self._create(keys=[_JOB.format(job_id), _ACTIVE, _JOBS], args=[job_id, now, *flat])
        if created:
            await self._forget_old()
        return bool(created)

    async def active(self) -> list[str]:
        return sorted(_text(m) for m in await self._redis.smembers(_ACTIVE))

    async def get(self, job_id: str) -> Broadcast | None:
        raw = await self._redis.hgetall(_JOB.format(job_id))
        return _broadcast(job_id, raw) if raw else None

    async def recent(self, limit: int = 50) -> list[Broadcast]:
        """The latest `limit` jobs, newest first."""
        ids = _texts(await self._redis.zrange(_JOBS, 0, limit - 1, desc=True))
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(_JOB.format(job_id))
            raws = await pipe.execute()
        return [_broadcast(job_id, raw) for job_id, raw in zip(ids, raws, strict=True) if raw]

    async def lease(self, job_id: str, holder: str, seconds: float) -> bool:
        """Take or keep the job for `seconds`: one worker expands a job at a time."""
        ms = max(1, int(seconds * 1000))
        return bool(await self._renew(keys=[_LEASE.format(job_id)], args=[holder, ms]))

    async def release(self, job_id: str, holder: str) -> None:
        await self._release(keys=[_LEASE.format(job_id)], args=[holder])

    async def checkpoint(self, job_id: str, cursor: str, emitted: int) -> None:
        """The page up to `cursor` is produced: the next walk starts after it."""
        key = _JOB.format(job_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "cursor", cursor)
            pipe.hincrby(key, "expanded", emitted)
            await pipe.execute()

    async def finish(self, job_id: str) -> bool:
        """Mark the job done; True only for the call that did (counted once)."""
        done = await self._finish(keys=[_JOB.format(job_id), _ACTIVE], args=[job_id, repr(time.time())])
        return bool(done)

    async def _forget_old(self) -> None:
        stale = _texts(await self._redis.zrange(_JOBS, 0, -KEEP_FINISHED - 1))
        if not stale:
            return
        running = set(await self.active())
        old = [job_id for job_id in stale if job_id not in running]
        if old:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(*(_JOB.format(job_id) for job_id in old))
                pipe.zrem(_JOBS, *old)
                await pipe.execute()


def _broadcast(job_id: str, raw: Mapping[bytes | str, bytes | str]) -> Broadcast:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    finished = fields.get("finished_at")
    return Broadcast(
        job_id=job_id,
        event=EventCore.model_validate_json(fields["event"]),
        audience=AudienceIndex(tuple(json.loads(fields["sets"])), tuple(json.loads(fields["indexes"]))),
        lane=fields.get("lane", "bulk"),
        source=fields.get("source", ""),
        cursor=fields.get("cursor", ""),
        expanded=int(fields.get("expanded", "0")),
        total=int(fields.get("total", "0")),
        state=fields.get("state", "running"),
        created_at=float(fields.get("created_at", "0")),
        finished_at=float(finished) if finished else None,
        segment=fields.get("segment", ""),
    )


def _texts(values: list[Any]) -> list[str]:
    """Members of a ZRANGE without scores."""
    return [_text(value) for value in values]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

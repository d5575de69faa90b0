"""Segments: named definitions (`state.segment_definitions`) stored in Redis and evaluated when a message
is sent, page by page over the narrowest index, beside the older saved sets of ids (`state.users`).

Redis layout: `sb:segments` hash, name -> JSON of the stored segment (app, description, definition,
who created and updated it and when). A name defined here is evaluated; a name only saved as a set
(`sb:segment:{name}`) is that set, as before; a definition takes precedence over a set of the same name.

Evaluation reads, for each page of ids, every profile (and, when the definition asks, the engagement
within its widest window and the consent and opt-in fields) in one pipeline: a page costs one round
trip however many people it holds, and nothing beyond a page is held in memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from records.topics import Name
from state.connection import is_cluster
from state.consent import CONSENT_KEY, OPT_IN_KEY
from state.engagement import HISTORY_KEY
from state.segment_definitions import (
    Definition,
    Needs,
    Person,
    matches,
    needs_of,
    parse_definition,
    required_tag_sets,
)
from state.users import SEGMENT_KEY, TAG_KEY, USER_KEY, AudienceIndex, AudienceWalk

SEGMENTS_KEY = "sb:segments"
PREVIEW_PAGE = 1000

# ARGV: the profile, engagement, consent and opt-in key prefixes, the engagement window's start in ms
# ('' when not read), '1' when consent is read, then the ids. Answers, per id, the profile (nil when
# none) and, as asked, the engagement members since the start and the consent and opt-in fields: one
# reply for a page, where a pipeline costs the client a parsed reply per command (~20 µs a person).
# The keys are built here, which a single Redis allows; a Redis Cluster reads them in a pipeline.
_READ_PAGE = """
local users, history, consent, optin = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local since, consents = ARGV[5], ARGV[6] == '1'
local out = {}
for i = 7, #ARGV do
  local id = ARGV[i]
  out[#out + 1] = redis.call('HGET', users .. id, 'p')
  if since ~= '' then out[#out + 1] = redis.call('ZRANGEBYSCORE', history .. id, since, '+inf') end
  if consents then
    out[#out + 1] = redis.call('HKEYS', consent .. id)
    out[#out + 1] = redis.call('HKEYS', optin .. id)
  end
end
return out
"""


class StoredSegment(BaseModel):
    """A named definition, its owner app (`*`: shared by every app) and who wrote it when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    app: str
    description: str = Field("", max_length=2000)
    definition: dict[str, Any]
    created_by: str = ""
    created_at: datetime
    updated_by: str = ""
    updated_at: datetime

    @property
    def condition(self) -> Any:
        return parse_definition(self.definition).root


def normalised(definition: Definition) -> dict[str, Any]:
    """The definition as stored and shown: only what its author wrote, with the language's key names."""
    dumped: dict[str, Any] = definition.model_dump(mode="json", by_alias=True, exclude_unset=True)["root"]
    return dumped


@dataclass(frozen=True)
class SegmentAudience:
    """Who a segment name selects: the index walked, and the condition each page is filtered by (None
    for a saved set, whose members are all in)."""

    name: str
    index: AudienceIndex
    condition: Any | None


@dataclass(frozen=True)
class Page:
    """One page of a filtered walk: the members found, and the last id scanned ("" when none was)."""

    members: list[str]
    last: str


@dataclass(frozen=True)
class Preview:
    """An exact count by a full walk, a sample of members (id, name), how many were read and how long."""

    count: int
    sample: list[tuple[str, str]]
    scanned: int
    seconds: float


class SegmentStore:
    """Stores definitions and says who a segment name selects; the client is passed in."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.evaluator = SegmentEvaluator(redis)

    async def get(self, name: str) -> StoredSegment | None:
        raw = await self._redis.hget(SEGMENTS_KEY, name)
        return StoredSegment.model_validate_json(raw) if raw is not None else None

    async def all(self) -> list[StoredSegment]:
        raw = await self._redis.hgetall(SEGMENTS_KEY)
        return sorted((StoredSegment.model_validate_json(v) for v in raw.values()), key=lambda s: s.name)

    async def put(
        self, name: str, app: str, description: str, definition: Definition, by: str
    ) -> tuple[StoredSegment | None, StoredSegment]:
        """Create or replace; returns (before, after). Creation time and author survive a replacement."""
        before = await self.get(name)
        now = datetime.now(UTC)
        after = StoredSegment(
            name=name, app=app, description=description, definition=normalised(definition),
            created_by=before.created_by if before else by, created_at=before.created_at if before else now,
            updated_by=by, updated_at=now,
        )
        await self._redis.hset(SEGMENTS_KEY, name, after.model_dump_json())
        return before, after

    async def remove(self, name: str) -> StoredSegment | None:
        before = await self.get(name)
        if before is not None:
            await self._redis.hdel(SEGMENTS_KEY, name)
        return before

    async def has_segment(self, name: str) -> bool:
        """Defined or saved as a set (what the API checks events against)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hexists(SEGMENTS_KEY, name)
            pipe.exists(SEGMENT_KEY.format(name))
            defined, saved = await pipe.execute()
        return bool(defined) or bool(saved)

    async def audience(self, name: str) -> SegmentAudience | None:
        """Who `name` selects: a definition over its narrowest index, else a saved set; None if neither."""
        segment = await self.get(name)
        if segment is not None:
            condition = segment.condition
            return SegmentAudience(name, await self.evaluator.narrowest(condition), condition)
        if await self._redis.exists(SEGMENT_KEY.format(name)):
            return SegmentAudience(name, AudienceIndex.of_segment(name), None)
        return None


    async def count(self, name: str) -> int | None:
        """See `count_segment`."""
        audience = await self.audience(name)
        if audience is None:
            return None
        if audience.condition is None:
            return int(await self._redis.scard(SEGMENT_KEY.format(name)))
        return (await self.evaluator.preview(audience, sample=0)).count


class SegmentEvaluator:
    """Evaluates conditions over pages of people; the client is passed in."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.walk = AudienceWalk(redis)
        self._read_page = redis.register_script(_READ_PAGE)

    async def narrowest(self, condition: Any) -> AudienceIndex:
        """The smallest index holding every member: a tag (or union of tags) the condition requires,
        else everyone."""
        choices = required_tag_sets(condition)
        if not choices:
            return AudienceIndex.everyone()
        tags = sorted({tag for choice in choices for tag in choice})
        async with self._redis.pipeline(transaction=False) as pipe:
            for tag in tags:
                pipe.scard(TAG_KEY.format(tag))
            sizes = dict(zip(tags, await pipe.execute(), strict=True))
        best = min(choices, key=lambda choice: (sum(int(sizes[t]) for t in choice), choice))
        return AudienceIndex.of_tags(best)

    async def members(self, condition: Any, user_ids: Sequence[str], now_ms: int | None = None) -> list[str]:
        """Those of `user_ids` the condition selects, in their order (one pipeline)."""
        people = await self.read(condition, user_ids, now_ms)
        at = now_ms if now_ms is not None else _now_ms()
        return [u for u, person in people if person is not None and matches(condition, person, at)]

    async def read(
        self, condition: Any, user_ids: Sequence[str], now_ms: int | None = None
    ) -> list[tuple[str, Person | None]]:
        """What the condition needs of each person (None: no profile), read in one pipeline."""
        if not user_ids:
            return []
        needs = needs_of(condition)
        since = (now_ms if now_ms is not None else _now_ms()) - needs.engagement_seconds * 1000
        if not is_cluster(self._redis):
            prefixes = [key.format("") for key in (USER_KEY, HISTORY_KEY, CONSENT_KEY, OPT_IN_KEY)]
            flags = [str(since) if needs.engagement_seconds else "", "1" if needs.consent else ""]
            answers = await self._read_page(keys=[], args=[*prefixes, *flags, *user_ids])
            return _people(user_ids, answers, needs)
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hget(USER_KEY.format(user_id), "p")
                if needs.engagement_seconds:
                    pipe.zrangebyscore(HISTORY_KEY.format(user_id), since, "+inf")
                if needs.consent:
                    pipe.hkeys(CONSENT_KEY.format(user_id))
                    pipe.hkeys(OPT_IN_KEY.format(user_id))
            answers = await pipe.execute()
        return _people(user_ids, answers, needs)

    async def page(self, audience: SegmentAudience, after: str, limit: int) -> Page:
        """The members among the next `limit` ids of the index after `after`."""
        ids = await self.walk.page(audience.index, after, limit)
        if not ids:
            return Page([], "")
        if audience.condition is None:
            return Page(ids, ids[-1])
        return Page(await self.members(audience.condition, ids), ids[-1])

    async def preview(self, audience: SegmentAudience, sample: int = 10, page: int = PREVIEW_PAGE) -> Preview:
        """Count every member by a full streamed walk, keeping the first `sample` with their names."""
        started = time.perf_counter()
        await self.walk.prepare(audience.index)
        count, scanned, cursor = 0, 0, ""
        chosen: list[str] = []
        while True:
            ids = await self.walk.page(audience.index, cursor, page)
            if not ids:
                break
            scanned += len(ids)
            cursor = ids[-1]
            found = ids if audience.condition is None else await self.members(audience.condition, ids)
            count += len(found)
            chosen.extend(found[: max(0, sample - len(chosen))])
        names = await self._names(chosen)
        return Preview(count, [(u, names.get(u, "")) for u in chosen], scanned, time.perf_counter() - started)

    async def _names(self, user_ids: Sequence[str]) -> dict[str, str]:
        if not user_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hget(USER_KEY.format(user_id), "p")
            raw = await pipe.execute()
        return {u: str(json.loads(r).get("name", "")) for u, r in zip(user_ids, raw, strict=True) if r}


def segment_snapshot(segment: SegmentAudience | None) -> str:
    """The definition a broadcast job filters by, as it stood when its event was expanded ("" for none)."""
    if segment is None or segment.condition is None:
        return ""
    definition = segment.condition.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return json.dumps({"name": segment.name, "definition": definition})


def from_snapshot(text: str, index: AudienceIndex) -> SegmentAudience | None:
    """The segment a job recorded with `segment_snapshot`, over the job's index."""
    if not text:
        return None
    held = json.loads(text)
    return SegmentAudience(str(held["name"]), index, parse_definition(held["definition"]).root)


async def count_segment(redis: Redis, name: str) -> int | None:
    """How many people segment `name` selects now (a full streamed evaluation for a definition, the
    set's size for a saved set); None when no segment has that name."""
    return await SegmentStore(redis).count(name)


def _people(user_ids: Sequence[str], answers: list[Any], needs: Needs) -> list[tuple[str, Person | None]]:
    step = 1 + (1 if needs.engagement_seconds else 0) + (2 if needs.consent else 0)
    people: list[tuple[str, Person | None]] = []
    for i, user_id in enumerate(user_ids):
        at = i * step
        raw = answers[at]
        if raw is None:
            people.append((user_id, None))
            continue
        person = Person(json.loads(raw))
        at += 1
        if needs.engagement_seconds:
            person.engaged = [_engagement(m) for m in answers[at]]
            at += 1
        if needs.consent:
            person.refused = frozenset(_text(k) for k in answers[at])
            person.opted_in = frozenset(_text(k) for k in answers[at + 1])
        people.append((user_id, person))
    return people


def _engagement(member: bytes | str) -> tuple[int, str]:
    ms, _, status = _text(member).partition(":")  # members are `{ms}:{status}` (state.engagement)
    return int(ms), status


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

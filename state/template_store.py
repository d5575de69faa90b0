"""Templates that operators manage through the API: a template (name, owner app, description) with
immutable numbered versions, one of which is live.

A version holds per-channel parts in the shape of a template file's (`templates/*.yaml`), declared
variables with types and sample values, its author, time and comment. Saving makes the next number;
nothing changes or deletes a version, so every receipt naming one (`template_version`) can be traced
to its exact content. Publishing sets the live version, directly or once its approval completes
(`publication`: pending, approved, rejected with the reason, expired).

Redis layout (one hash tag, so each script and transaction stays in one Redis Cluster slot):
- `sb:{templates}:meta` hash: name → the template's JSON (app, description, created by and when);
- `sb:{templates}:n:{name}` the last version number given;
- `sb:{templates}:v:{name}` hash: number → the version's JSON;
- `sb:{templates}:pub:{name}` hash: number → what became of its publication (JSON);
- `sb:{templates}:live` hash: name → the live number;
- `sb:{templates}:gen` counter, bumped by every change of a live version: workers read only this
  every second, and the live versions when it moved.
"""

from __future__ import annotations

import keyword
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator
from redis.asyncio import Redis

META_KEY = "sb:{templates}:meta"
LIVE_KEY = "sb:{templates}:live"
GENERATION_KEY = "sb:{templates}:gen"
COUNTER_KEY = "sb:{{templates}}:n:{}"
VERSIONS_KEY = "sb:{{templates}}:v:{}"
PUBLICATIONS_KEY = "sb:{{templates}}:pub:{}"

TemplateName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
VariableType = Literal["string", "number", "integer", "boolean", "date", "datetime", "url", "email", "phone"]
PublicationState = Literal["pending_approval", "approved", "rejected", "expired"]
Sample = str | int | float | bool | None

# KEYS: counter, versions. ARGV: the version's JSON (without its number). Returns the new number.
_SAVE = """
local n = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], tostring(n), ARGV[1])
return n
"""


class Variable(BaseModel):
    """A declared variable: its type, whether an event must give it, and a sample for previews."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: VariableType = "string"
    required: bool = True
    sample: Sample = None
    description: Annotated[str, StringConstraints(max_length=500)] = ""

    @field_validator("name")
    @classmethod
    def _identifier(cls, name: str) -> str:
        if not name.isidentifier() or keyword.iskeyword(name) or name == "user":
            raise ValueError(f"{name!r} is not a variable name (an identifier, not a keyword, not 'user')")
        return name


class TemplateVersion(BaseModel):
    """One immutable version: per-channel parts (as in a template file), variables, who and when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: int = 0
    """Given by the store when saved (1, 2, 3...)."""
    variables: tuple[Variable, ...] = ()
    parts: dict[str, dict[str, Any]]
    """Channel → the part's fields, exactly as under that channel in a template file."""
    author: str
    created_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    comment: Annotated[str, StringConstraints(max_length=1000)] = ""


class StoredTemplate(BaseModel):
    """A template managed through the API: its name, the app that owns it, and what it is for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: TemplateName
    app: str
    description: Annotated[str, StringConstraints(max_length=500)] = ""
    created_by: str = ""
    created_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))


class Publication(BaseModel):
    """What became of a request to make a version live."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: PublicationState
    requested_by: str
    requested_at: AwareDatetime
    approval_id: str = ""
    reason: str = ""
    decided_at: AwareDatetime | None = None


class TemplateStore:
    """Stored templates in Redis; the client is passed in."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._save = redis.register_script(_SAVE)

    async def create(self, template: StoredTemplate) -> tuple[StoredTemplate, bool]:
        """Store the template unless its name is taken; returns the stored one and whether it is new."""
        created = await self._redis.hsetnx(META_KEY, template.name, template.model_dump_json())
        if created:
            return template, True
        found = await self.get(template.name)
        return (found or template), False

    async def get(self, name: str) -> StoredTemplate | None:
        raw = await self._redis.hget(META_KEY, name)
        return None if raw is None else StoredTemplate.model_validate_json(raw)

    async def all(self) -> list[StoredTemplate]:
        raw = await self._redis.hgetall(META_KEY)
        return sorted((StoredTemplate.model_validate_json(v) for v in raw.values()), key=lambda t: t.name)

    async def save(self, name: str, version: TemplateVersion) -> TemplateVersion:
        """Store `version` as the template's next number; returns it with its number."""
        number = await self._save(
            keys=[COUNTER_KEY.format(name), VERSIONS_KEY.format(name)],
            args=[version.model_dump_json(exclude={"number"})],
        )
        return version.model_copy(update={"number": int(number)})

    async def version(self, name: str, number: int) -> TemplateVersion | None:
        raw = await self._redis.hget(VERSIONS_KEY.format(name), str(number))
        return None if raw is None else _numbered(raw, number)

    async def versions(self, name: str) -> list[TemplateVersion]:
        raw = await self._redis.hgetall(VERSIONS_KEY.format(name))
        found = [_numbered(value, int(key)) for key, value in raw.items()]
        return sorted(found, key=lambda v: v.number)

    async def live(self) -> dict[str, int]:
        """Every template's live number (templates with none are absent)."""
        raw = await self._redis.hgetall(LIVE_KEY)
        return {_text(name): int(number) for name, number in raw.items()}

    async def live_number(self, name: str) -> int | None:
        raw = await self._redis.hget(LIVE_KEY, name)
        return None if raw is None else int(raw)

    async def set_live(self, name: str, number: int) -> int | None:
        """Make `number` the live version; returns the one it replaced. Workers see it within a second
        or two (they follow the generation counter)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hget(LIVE_KEY, name)
            pipe.hset(LIVE_KEY, name, str(number))
            pipe.incr(GENERATION_KEY)
            previous, _, _ = await pipe.execute()
        return None if previous is None else int(previous)

    async def generation(self) -> int:
        raw = await self._redis.get(GENERATION_KEY)
        return 0 if raw is None else int(raw)

    async def live_versions(self) -> tuple[int, dict[str, TemplateVersion]]:
        """The generation and every live version, read in two round trips whatever their number."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(GENERATION_KEY)
            pipe.hgetall(LIVE_KEY)
            generation, live = await pipe.execute()
        pairs = [(_text(name), int(number)) for name, number in live.items()]
        if not pairs:
            return int(generation or 0), {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, number in pairs:
                pipe.hget(VERSIONS_KEY.format(name), str(number))
            raw = await pipe.execute()
        versions = {name: _numbered(value, number)
                    for (name, number), value in zip(pairs, raw, strict=True) if value is not None}
        return int(generation or 0), versions

    async def publication(self, name: str, number: int) -> Publication | None:
        raw = await self._redis.hget(PUBLICATIONS_KEY.format(name), str(number))
        return None if raw is None else Publication.model_validate_json(raw)

    async def publications(self, name: str) -> dict[int, Publication]:
        raw = await self._redis.hgetall(PUBLICATIONS_KEY.format(name))
        return {int(key): Publication.model_validate_json(value) for key, value in raw.items()}

    async def record_publication(self, name: str, number: int, publication: Publication) -> None:
        await self._redis.hset(PUBLICATIONS_KEY.format(name), str(number), publication.model_dump_json())


def _numbered(raw: bytes | str, number: int) -> TemplateVersion:
    return TemplateVersion.model_validate_json(raw).model_copy(update={"number": number})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

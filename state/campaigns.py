"""Campaigns: what an operator composes on the send screen, kept in Redis until it is submitted as one
event (`campaign=<id>`), and the small set of cancelled campaigns every stage checks before it acts.

A campaign's id starts with its app (`<app>.c<hex>`), so a request about one is authorised on its app
before anyone learns whether it exists. States: `draft` → `scheduled` (a future `send_at`) or `running`
(submitted) → `done`; `cancelled` from scheduled or running. `done` is what the list derives once the
campaign's messages are all settled (api/campaigns.py); Redis keeps submitted and cancelled.

Redis layout, in one hash slot (`{cmp}`) so a transition and its cancellation are one script:
`sb:{cmp}:campaign:{id}` JSON of the campaign; `sb:{cmp}:campaigns` sorted set of ids by creation
time; `sb:{cmp}:cancelled` hash `app/id` -> JSON of who cancelled and when (what the stages read, one
HMGET per batch), `sb:{cmp}:cancelled:at` the same fields by time, so entries older than
`keep_cancelled` are dropped on the next cancellation and the hash stays small.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from redis.asyncio import Redis

from records.topics import Audience, Event
from records.vocabulary import Category, ChannelName, Name, Priority

CampaignState = Literal["draft", "scheduled", "running", "done", "cancelled"]
CAMPAIGN_STATES: tuple[CampaignState, ...] = ("draft", "scheduled", "running", "done", "cancelled")
_CAMPAIGN = "sb:{{cmp}}:campaign:{}"
_CAMPAIGNS = "sb:{cmp}:campaigns"
_CANCELLED = "sb:{cmp}:cancelled"
_CANCELLED_AT = "sb:{cmp}:cancelled:at"
KEEP_CANCELLED = timedelta(days=30)
"""How long the stages know a campaign was cancelled: longer than anything of it can stay scheduled,
deferred or parked (the delivery schedule and dedup keep a week)."""
MAX_APP_IN_ID = 100
"""An id is `<app>.c<12 hex>` and a campaign name on a receipt holds at most 128 characters."""

# Compare-and-set: the stored body must still be the one the caller read (two operators submitting or
# cancelling at once: one wins, the other reads again). ARGV[3..4]: a cancellation to record, if any.
_REPLACE = """
local body = redis.call('GET', KEYS[1])
if body ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then
  local now = tonumber(ARGV[5])
  local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[6]))
  if #old > 0 then
    redis.call('HDEL', KEYS[2], unpack(old))
    redis.call('ZREM', KEYS[3], unpack(old))
  end
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  redis.call('ZADD', KEYS[3], now, ARGV[3])
end
return 1
"""


class Composition(BaseModel):
    """A message as the send screen composes it: targets, channels, time, strategy, content."""

    model_config = ConfigDict(extra="forbid")

    app: Name
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    audience: Audience = Field(description="Everyone, tags, user ids, a segment, addresses or an upload")
    channels: list[ChannelName] | None = Field(
        None,
        min_length=1,
        description="Send on these channels at once; omit to leave the choice to the rules",
    )
    send_at: datetime | None = Field(None, description="Scheduled time (ISO with offset); omit for now")
    pace_per_second: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        None, description="Steady rate (定速): at most N messages per second for the whole campaign"
    )
    strategy: Name | None = Field(None, description="A named fallback strategy; omit to send concurrently")
    priority: Priority = "normal"
    category: Category
    type: Name = Field("campaign", description="The event type the rules match on")
    template: Name
    data: dict[str, Any] = Field(default_factory=dict, description="The template's variables")

    def event(self, campaign_id: str, submitted_by: str) -> Event:
        """The one event this composition is sent as; approval policies see `submitted_by` as for any."""
        return Event(
            event_id=f"campaign-{campaign_id}",
            app=self.app,
            type=self.type,
            template=self.template,
            data=self.data,
            category=self.category,
            priority=self.priority,
            send_at=self.send_at,
            campaign=campaign_id,
            channels=self.channels,
            strategy=self.strategy,
            pace_per_second=self.pace_per_second,
            audience=self.audience,
            submitted_by=submitted_by,
        )

    @model_validator(mode="after")
    def _aware(self) -> Composition:
        if self.send_at is not None and self.send_at.tzinfo is None:
            raise ValueError("send_at must carry a timezone offset, e.g. 2026-11-23T08:00:00+08:00")
        if len(self.app) > MAX_APP_IN_ID:
            raise ValueError(f"a campaign's app name has at most {MAX_APP_IN_ID} characters")
        return self


class Cancellation(BaseModel):
    """Who cancelled a campaign and when: the reason its unsent messages' `cancelled` rows give."""

    model_config = ConfigDict(frozen=True)

    by: str
    at: datetime

    @property
    def reason(self) -> str:
        return f"campaign cancelled by {self.by} at {self.at.isoformat(timespec='seconds')}"


class Campaign(BaseModel):
    """A stored campaign: its composition, who made it, and what happened to it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    app: str
    name: str
    state: CampaignState = "draft"
    composition: Composition
    created_by: str
    created_at: datetime
    submitted_by: str | None = None
    submitted_at: datetime | None = None
    cancelled: Cancellation | None = None
    recalled_by: str | None = None
    recalled_at: datetime | None = None
    recalled: int = 0

    @property
    def event_id(self) -> str:
        """The id of the one event the campaign is submitted as (ingest deduplicates on it)."""
        return f"campaign-{self.id}"

    def event(self, submitted_by: str) -> Event:
        return self.composition.event(self.id, submitted_by)


def new_campaign_id(app: str) -> str:
    return f"{app}.c{secrets.token_hex(6)}"


def app_of(campaign_id: str) -> str | None:
    """The app a campaign id names (None: not a campaign id), so a request is authorised first."""
    app, dot, suffix = campaign_id.rpartition(".")
    if not dot or not app or len(suffix) != 13 or not suffix.startswith("c"):
        return None
    return app


class CampaignStore:
    """Campaigns and the cancelled set in Redis; the client is passed in."""

    def __init__(self, redis: Redis, keep_cancelled: timedelta = KEEP_CANCELLED) -> None:
        self._redis = redis
        self._replace = redis.register_script(_REPLACE)
        self._keep = keep_cancelled

    async def create(self, campaign: Campaign) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(_CAMPAIGN.format(campaign.id), campaign.model_dump_json(), nx=True)
            pipe.zadd(_CAMPAIGNS, {campaign.id: campaign.created_at.timestamp()})
            created, _ = await pipe.execute()
        if not created:
            raise ValueError(f"campaign {campaign.id!r} exists already")

    async def get(self, campaign_id: str) -> Campaign | None:
        body = await self._redis.get(_CAMPAIGN.format(campaign_id))
        return None if body is None else Campaign.model_validate_json(body)

    async def listing(self, apps: set[str] | None, limit: int = 100, offset: int = 0) -> list[Campaign]:
        """Newest first, of `apps` (None: every app)."""
        ids = [_text(i) for i in await self._redis.zrevrange(_CAMPAIGNS, 0, -1) if isinstance(i, bytes | str)]
        ids = [i for i in ids if apps is None or app_of(i) in apps][offset : offset + limit]
        if not ids:
            return []
        bodies = await self._redis.mget([_CAMPAIGN.format(i) for i in ids])
        return [Campaign.model_validate_json(b) for b in bodies if b is not None]

    async def replace(self, before: Campaign, after: Campaign) -> bool:
        """Store `after` if the campaign is still `before`; records `after.cancelled` for the stages.
        False: someone changed it in between (read it again)."""
        cancellation = after.cancelled if before.cancelled is None else None
        now = datetime.now(UTC).timestamp()
        args: list[str | float] = [
            before.model_dump_json(),
            after.model_dump_json(),
            _field(after.app, after.id) if cancellation else "",
            cancellation.model_dump_json() if cancellation else "",
            now,
            self._keep.total_seconds(),
        ]
        keys = [_CAMPAIGN.format(before.id), _CANCELLED, _CANCELLED_AT]
        return bool(await self._replace(keys=keys, args=args))


class CancelledCampaigns:
    """What the stages ask: which of a batch's campaigns were cancelled, in one round trip."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def among(self, campaigns: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Cancellation]:
        """The cancelled ones of (app, campaign) pairs; no round trip when no pair names a campaign."""
        wanted = sorted({pair for pair in campaigns if pair[1]})
        if not wanted:
            return {}
        answers = await self._redis.hmget(_CANCELLED, [_field(app, c) for app, c in wanted])
        return {
            pair: Cancellation.model_validate(json.loads(answer))
            for pair, answer in zip(wanted, answers, strict=True)
            if answer is not None
        }


def _field(app: str, campaign: str) -> str:
    return f"{app}/{campaign}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""Approval policies: which messages wait for people before they flow, and whose say-so they need.

A policy names the apps it covers (none: every app), conditions (categories, explicit channels, a
campaign present, an audience larger than N) combined with `match: any` (the default: "marketing, or
more than 1,000 recipients") or `match: all`, the levels (each a role whose holders decide, in
order) and how long a held message waits before it expires.

Redis layout: `sb:{approvals}:policies` hash, policy name → the policy's JSON. One hash tag for every
approvals key, so the approval scripts see them all on one Redis Cluster node.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from redis.asyncio import Redis

from records.topics import Event
from records.vocabulary import Category, ChannelName, Name

POLICIES_KEY = "sb:{approvals}:policies"
MAX_LEVELS = 5
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_EXPIRY = timedelta(days=30)

RoleName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_\-]*$")]


def expiry_of(text: str) -> timedelta:
    """`72h`, `30m`, `2d`, `45s` as a timedelta; anything else raises ValueError with an example."""
    found = _DURATION.match(text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not a duration: write a number and a unit (s m h d), e.g. 72h")
    duration = timedelta(seconds=int(found.group(1)) * _UNIT_SECONDS[found.group(2)])
    if duration > MAX_EXPIRY:
        raise ValueError(f"{text!r} is longer than the longest wait of {MAX_EXPIRY.days}d")
    return duration


class ApprovalPolicy(BaseModel):
    """Which messages need approval, by how many levels of which roles, and how long they may wait."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    description: Annotated[str, StringConstraints(max_length=500)] = ""
    apps: list[Name] = Field(default_factory=list, description="The apps it covers; empty: every app.")
    categories: list[Category] = Field(default_factory=list)
    channels: list[ChannelName] = Field(
        default_factory=list, description="Matches events whose explicit `channels` name one of these."
    )
    campaign: bool = Field(default=False, description="Matches events that name a campaign.")
    audience_over: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Matches events whose audience is larger than this."
    )
    templates: bool = Field(
        default=False,
        description="Holds the template versions of its apps published through the API until approved "
        "(issue 13); not a condition on messages.",
    )
    match: Literal["any", "all"] = "any"
    levels: list[RoleName] = Field(min_length=1, max_length=MAX_LEVELS)
    expires_after: str = "72h"
    enabled: bool = True

    @field_validator("expires_after")
    @classmethod
    def _duration(cls, value: str) -> str:
        expiry_of(value)
        return value

    @model_validator(mode="after")
    def _holds_something_in_particular(self) -> ApprovalPolicy:
        if not self.apps and not self._conditions_named() and not self.templates:
            raise ValueError(
                "a policy needs apps or at least one condition (categories, channels, campaign, "
                "audience_over, templates); one without would hold every message of every app"
            )
        return self

    @property
    def expiry(self) -> timedelta:
        return expiry_of(self.expires_after)

    @property
    def needs_audience_size(self) -> bool:
        return self.audience_over is not None

    def covers(self, event: Event) -> bool:
        """Whether the event is of an app this policy is about."""
        return self.enabled and (not self.apps or event.app in self.apps)

    def covers_templates(self, app: str) -> bool:
        """Whether template versions of `app` wait for this policy's approval before going live."""
        return self.enabled and self.templates and (not self.apps or app in self.apps)

    def matches(self, event: Event, audience_size: int | None) -> bool:
        """Whether the policy holds `event`; `audience_size` is needed only if `needs_audience_size`."""
        if not self.covers(event):
            return False
        if self.templates and not self._conditions_named():
            return False  # a policy about template versions only holds no message
        verdicts = []
        if self.categories:
            verdicts.append(event.category in self.categories)
        if self.channels:
            verdicts.append(bool(set(event.channels or ()) & set(self.channels)))
        if self.campaign:
            verdicts.append(bool(event.campaign))
        if self.audience_over is not None:
            verdicts.append(audience_size is not None and audience_size > self.audience_over)
        if not verdicts:
            return True  # apps only: every message of those apps
        return any(verdicts) if self.match == "any" else all(verdicts)

    def _conditions_named(self) -> bool:
        return bool(self.categories or self.channels or self.campaign or self.audience_over is not None)


def strictest(policies: Sequence[ApprovalPolicy]) -> ApprovalPolicy | None:
    """Of several policies that hold one event, the one with most levels (then by name): one hold per
    event, and never a weaker one than some policy asks for."""
    if not policies:
        return None
    return sorted(policies, key=lambda p: (-len(p.levels), p.name))[0]


class PolicyStore:
    """The approval policies in Redis; the client is passed in."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def all(self) -> list[ApprovalPolicy]:
        raw = await self._redis.hgetall(POLICIES_KEY)
        policies = [ApprovalPolicy.model_validate_json(value) for value in raw.values()]
        return sorted(policies, key=lambda p: p.name)

    async def get(self, name: str) -> ApprovalPolicy | None:
        raw = await self._redis.hget(POLICIES_KEY, name)
        return None if raw is None else ApprovalPolicy.model_validate_json(raw)

    async def put(self, policy: ApprovalPolicy) -> ApprovalPolicy | None:
        """Create or replace the policy; returns the one it replaced. Held messages keep the levels
        of the policy that held them."""
        previous = await self.get(policy.name)
        await self._redis.hset(POLICIES_KEY, policy.name, policy.model_dump_json())
        return previous

    async def remove(self, name: str) -> ApprovalPolicy | None:
        previous = await self.get(name)
        if previous is not None:
            await self._redis.hdel(POLICIES_KEY, name)
        return previous

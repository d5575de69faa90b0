"""The delivery plan: everything a rule decides besides the channels, carried on each dispatch.

The rule engine (rules/) produces it; decide, send and track (processors/) execute it with state in
Redis (state/). It travels inside `Dispatch` on the `dispatch` topic, so it is a pydantic model and
every field has a default: a plan of defaults means "send now, no caps, no fallback".
"""

from __future__ import annotations

from datetime import time, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from records.vocabulary import ChannelName

CapScope = Literal["user", "channel", "category", "app", "campaign"]
"""What a frequency cap counts per; an empty scope counts globally."""
Bypass = Literal["quiet_hours", "caps", "pacing", "best_time", "budget"]
"""What an urgent rule may skip."""
FallbackCondition = Literal["not_delivered", "not_read", "not_clicked", "failed"]
"""When a fallback step fires: the earlier sends of the message have not reached this state (or failed)."""


class _Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FallbackStep(_Plan):
    """补发: `after` the first send, if `condition` holds, send on the first usable of `channels`."""

    step: int = Field(ge=1)
    """1 for the first fallback step; step 0 is the original send."""
    after: timedelta
    condition: FallbackCondition
    channels: tuple[ChannelName, ...]
    template: str | None = None
    """Another template for this step (e.g. a shorter SMS), else the event's."""


class QuietHours(_Plan):
    """A daily window in the recipient's own timezone during which nothing is sent."""

    start: time
    end: time
    """May be before `start`: the window then spans midnight (22:00-07:00)."""
    action: Literal["defer", "drop"] = "defer"


class CapLimit(_Plan):
    count: int = Field(ge=1)
    window: timedelta


class FrequencyCap(_Plan):
    """At most `count` per `window` for every limit at once, counted per `scope`."""

    id: str
    scope: tuple[CapScope, ...] = ("user",)
    limits: tuple[CapLimit, ...]
    on_exceed: Literal["delay", "drop"] = "drop"


class Pacing(_Plan):
    """定速: at most `per_second` sends per second for all messages sharing `key` (default: campaign)."""

    per_second: float = Field(gt=0)
    key: str


class BestTime(_Plan):
    """Send at the recipient's most engaged hour, if that comes within `within`; else now."""

    within: timedelta


class BudgetPolicy(_Plan):
    """What to do when a send would take its app's or campaign's budget near or over its limit."""

    over: Literal["drop", "hold", "cheaper"] = "drop"
    """drop: an `over_budget` row; hold: defer to the next period; cheaper: the cheapest reachable channel."""
    near: Literal["send", "cheaper"] = "send"
    costs: tuple[tuple[ChannelName, float], ...] = ()
    """The rule's own cost estimate per channel, over the providers' (first provider's price)."""


class DeliveryPlan(_Plan):
    """How and when to carry out a decision; defaults mean: now, once, no caps."""

    fallback: tuple[FallbackStep, ...] = ()
    quiet_hours: QuietHours | None = None
    best_time: BestTime | None = None
    pacing: Pacing | None = None
    caps: tuple[FrequencyCap, ...] = ()
    """Caps that apply to this delivery; exemptions were already resolved by the rules."""
    keep_offline: timedelta | None = None
    """离线保存: keep for this long if no channel reaches the user now, and send when one does."""
    variant: str = ""
    """The variant the recipient fell into, recorded on every receipt for A/B comparison."""
    bypass: frozenset[Bypass] = frozenset()
    budget: BudgetPolicy | None = None
    """Near or over budget; None: over budget drops, near budget sends."""

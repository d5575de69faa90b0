"""The rule-file language: pydantic models that reject anything they do not know.

A rule file holds a ruleset name, ruleset-wide policies (quiet hours windows, frequency caps, what
urgent messages bypass) and an ordered list of rules; the first rule whose `when` matches a delivery
decides it. Durations are written `30s`, `5m`, `1h`, `7d`, `2w` (or `1h30m`); clock times `"22:00"`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from records.plan import Bypass, CapLimit, CapScope, FallbackCondition
from records.topics import Category, ChannelName, Name, Priority

RuleId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
ChannelChoice = Literal[ChannelName, "preferred"]
"""A `first_of` entry: a channel, or `preferred` for the user's own channel preference."""
QUIET_OFF = "off"
"""A rule's `quiet_hours: false`: no quiet hours for what it decides."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(?:\d+[smhdw])+$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _bad(message: str) -> PydanticCustomError:
    """A field's value is wrong: the loader prefixes the field's name (kind `rule_value`)."""
    return PydanticCustomError("rule_value", message)


def parse_duration(value: Any) -> timedelta:
    """`5m`, `1h30m`, `7d` as a timedelta; anything else is refused with an example."""
    if isinstance(value, timedelta):
        return value
    text = value.strip() if isinstance(value, str) else None
    if text is None or not _DURATION.match(text):
        raise _bad(f"{value!r} is not a duration: write a number and a unit (s m h d w), e.g. 5m, 7d")
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", text))
    if seconds == 0:
        raise _bad(f"{value!r} is zero: a duration must be longer than that")
    return timedelta(seconds=seconds)


def _clock(value: Any) -> time:
    if isinstance(value, time):
        return value
    match = _CLOCK.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise _bad(f"{value!r} is not a clock time: write hours and minutes in quotes, e.g. \"22:00\"")
    return time(int(match.group(1)), int(match.group(2)))


def _cap_limit(value: Any) -> Any:
    if isinstance(value, str):
        count, slash, window = value.partition("/")
        if not slash or not count.strip().isdigit() or int(count) < 1:
            raise _bad(f"{value!r} is not a limit: write count/duration, e.g. 3/1d or 1/1h")
        return CapLimit(count=int(count), window=parse_duration(window))
    if isinstance(value, dict) and set(value) == {"count", "per"}:
        return CapLimit(count=value["count"], window=parse_duration(value["per"]))
    if isinstance(value, dict):
        keys = ", ".join(sorted(map(str, value)))
        raise _bad(f"a limit object has the keys count and per, e.g. {{count: 3, per: 1d}}; got {keys}")
    raise _bad(f"{value!r} is not a limit: write count/duration, e.g. 3/1d")


def _quiet_choice(value: Any) -> Any:
    # YAML reads `off`/`no`/`false` as False: all three mean "no quiet hours" here.
    if value is False:
        return QUIET_OFF
    if value is True:
        raise _bad("takes false (no quiet hours) or the id of a quiet hours window, not true")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
ClockTime = Annotated[time, BeforeValidator(_clock)]
Limit = Annotated[CapLimit, BeforeValidator(_cap_limit)]
Channels = Annotated[list[ChannelName] | None, Field(min_length=1)]
Choices = Annotated[list[ChannelChoice] | None, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class When(_Strict):
    """Conditions of a rule, AND-ed; each list means 'any of these values'. Empty `when` matches all."""

    category: Annotated[list[Category] | None, Field(min_length=1)] = None
    priority: Annotated[list[Priority] | None, Field(min_length=1)] = None
    type: Annotated[list[Name] | None, Field(min_length=1)] = None
    app: Annotated[list[Name] | None, Field(min_length=1)] = None
    template: Annotated[list[Name] | None, Field(min_length=1)] = None
    campaign: Annotated[list[Name] | None, Field(min_length=1)] = None
    channel_pref: Annotated[list[ChannelName] | None, Field(min_length=1)] = None
    bound: Annotated[list[ChannelName] | None, Field(min_length=1)] = None
    """The user has an address on ALL of these channels."""
    tags_any: Annotated[list[Name] | None, Field(min_length=1)] = None
    active_within: Duration | None = None
    """The user was active (read, clicked, used the app) at most this long ago."""
    inactive_for: Duration | None = None
    """The user has not been active for at least this long (or never was)."""

    def conditions(self) -> dict[str, Any]:
        """The conditions that are set, by key, in declaration order."""
        return {key: value for key, value in self if value is not None}


class FallbackSpec(_Strict):
    """补发 step: `after` the first send, `if_not` it reached a state (or `if` it failed), send again."""

    after: Duration
    if_not: Literal["delivered", "read", "clicked"] | None = None
    if_: Literal["failed"] | None = Field(None, alias="if")
    first_of: Annotated[list[ChannelChoice], Field(min_length=1)]
    template: Name | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> FallbackSpec:
        if (self.if_not is None) == (self.if_ is None):
            raise ValueError("'fallback' step needs one of if_not: delivered|read|clicked or if: failed")
        return self

    @property
    def condition(self) -> FallbackCondition:
        return "failed" if self.if_ is not None else f"not_{self.if_not}"  # type: ignore[return-value]


class Variant(_Strict):
    """One arm of a split: recipients fall into it by a stable hash of rule id and user id."""

    name: RuleId
    weight: int = Field(ge=1, le=10_000)
    channels: Channels = None
    first_of: Choices = None
    template: Name | None = None
    control: bool = False
    """A control share: its recipients receive nothing and are recorded `held_out`, so the other
    variants' lift is measured against doing nothing."""

    @model_validator(mode="after")
    def _at_most_one_choice(self) -> Variant:
        if self.channels is not None and self.first_of is not None:
            raise ValueError("'variants' entry takes channels or first_of, not both")
        if self.control:
            sending = [key for key in ("channels", "first_of", "template") if getattr(self, key) is not None]
            if sending:
                raise ValueError(
                    f"control variant {self.name!r} receives nothing, so it takes no {', '.join(sending)}"
                )
        return self


class BestTimeSpec(_Strict):
    within: Duration


class Pace(_Strict):
    """定速: at most `per_second` sends per second for everything sharing the key."""

    per_second: float = Field(gt=0, le=100_000)
    key: Literal["campaign", "app", "type", "rule"] = "campaign"
    """campaign: the event's campaign, else its app and type; app; type (app and type); rule."""


class Then(_Strict):
    """What a matching rule does: one of `channels`, `first_of`, `suppress` (or `variants`), and how."""

    channels: Channels = None
    """Send on each of these channels the user has an address on."""
    first_of: Choices = None
    """Send on the first of these the user can be reached on."""
    suppress: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    """Send nothing; the text is the reason recorded."""
    template: Name | None = None
    variants: Annotated[list[Variant] | None, Field(min_length=2)] = None
    fallback: Annotated[list[FallbackSpec] | None, Field(min_length=1, max_length=10)] = None
    quiet_hours: Annotated[str | None, BeforeValidator(_quiet_choice)] = None
    best_time: BestTimeSpec | None = None
    pace: Pace | None = None
    keep_offline: Duration | None = None
    bypass: Annotated[list[Bypass] | None, Field(min_length=1)] = None

    @model_validator(mode="after")
    def _one_action(self) -> Then:
        chosen = [key for key in ("channels", "first_of", "suppress") if getattr(self, key) is not None]
        if len(chosen) > 1:
            got = ", ".join(chosen)
            raise ValueError(f"'then' needs exactly one of channels, first_of, suppress; got {got}")
        if self.suppress is not None:
            extra = [k for k in self.model_fields_set if k != "suppress" and getattr(self, k) is not None]
            if extra:
                raise ValueError(f"'then' suppresses, so it cannot also set {', '.join(sorted(extra))}")
        elif not chosen and not (
            self.variants and all(v.channels or v.first_of for v in self.variants if not v.control)
        ):
            raise ValueError(
                "'then' needs exactly one of channels, first_of, suppress; got none "
                "(or give every variant but the control its own channels or first_of)"
            )
        return self

    @model_validator(mode="after")
    def _variants_and_steps_in_order(self) -> Then:
        names = [variant.name for variant in self.variants or ()]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"'variants' names must differ; used more than once: {', '.join(twice)}")
        controls = [variant.name for variant in self.variants or () if variant.control]
        if len(controls) > 1:
            got = f"{len(controls)}: {', '.join(controls)}"
            raise ValueError(f"'variants' may have one control share (control: true); got {got}")
        steps = self.fallback or []
        for number, (before, step) in enumerate(itertools.pairwise(steps), start=2):
            if step.after <= before.after:
                raise ValueError(
                    f"'fallback' steps run in order of 'after': step {number} ({duration_text(step.after)}) "
                    f"must come later than step {number - 1} ({duration_text(before.after)})"
                )
        return self


class Rule(_Strict):
    """One rule: when its conditions hold, its action decides the delivery."""

    id: RuleId
    description: str = ""
    when: When = Field(default_factory=When)
    then: Then


class QuietWindow(_Strict):
    """A daily window (recipient's timezone) in which nothing is sent; applies where `match` holds."""

    id: RuleId
    description: str = ""
    start: ClockTime
    end: ClockTime
    action: Literal["defer", "drop"] = "defer"
    match: When | None = None
    """Deliveries it applies to; without `match` it applies only to rules that name it."""

    @model_validator(mode="after")
    def _not_empty(self) -> QuietWindow:
        if self.start == self.end:
            raise ValueError("'quiet_hours' window needs start and end to differ")
        return self


class CapExempt(_Strict):
    """Deliveries a cap never counts nor holds back."""

    category: Annotated[list[Category] | None, Field(min_length=1)] = None
    priority: Annotated[list[Priority] | None, Field(min_length=1)] = None
    tags_any: Annotated[list[Name] | None, Field(min_length=1)] = None
    users: Annotated[list[Name] | None, Field(min_length=1)] = None


class CapRule(_Strict):
    """A frequency cap: every limit at once, counted per `scope`, for deliveries `match` selects."""

    id: RuleId
    description: str = ""
    match: When = Field(default_factory=When)
    scope: list[CapScope] = Field(default_factory=lambda: list[CapScope](["user"]))
    limits: Annotated[list[Limit], Field(min_length=1)]
    on_exceed: Literal["delay", "drop"] = "drop"
    exempt: CapExempt = Field(default_factory=CapExempt)


class RuleFile(_Strict):
    """The contents of one rule file."""

    ruleset: Name
    order: int | None = Field(None, ge=0, le=1_000_000)
    """Where this file's rules go among a folder's files: lower is tried first."""
    description: str = ""
    urgent_bypass: Annotated[list[Bypass] | None, Field(min_length=1)] = None
    """What every delivery of priority `urgent` skips, whichever rule decides it."""
    quiet_hours: list[QuietWindow] = Field(default_factory=list)
    caps: list[CapRule] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)


@dataclass(frozen=True)
class Ruleset:
    """Validated rules and policies from one or more files, rules in the order they are tried."""

    name: str
    version: str
    rules: tuple[Rule, ...]
    origins: dict[str, str] = field(default_factory=dict, compare=False)
    """Rule id -> `file:line` where it is defined, for explanations."""
    quiet_hours: tuple[QuietWindow, ...] = ()
    caps: tuple[CapRule, ...] = ()
    urgent_bypass: frozenset[Bypass] = frozenset()

    def tags(self) -> tuple[str, ...]:
        """Every tag named by any rule, in first-use order."""
        seen: dict[str, None] = {}
        for rule in self.rules:
            for tag in rule.when.tags_any or ():
                seen.setdefault(tag)
        return tuple(seen)

    def window(self, window_id: str) -> QuietWindow | None:
        return next((w for w in self.quiet_hours if w.id == window_id), None)


def duration_text(duration: timedelta) -> str:
    """A timedelta the way rule files write it: `1d`, `1h30m`."""
    seconds = int(duration.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"

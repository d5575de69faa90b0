"""The rule-file language: pydantic models that reject anything they do not know.

A rule file holds a ruleset name, ruleset-wide policies (quiet hours windows, frequency caps, what
urgent messages bypass) and an ordered list of rules; the first rule whose `when` matches a delivery
decides it. Durations are written `30s`, `5m`, `1h`, `7d`, `2w` (or `1h30m`), from 1s to 366d; clock
times `"22:00"`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, StringConstraints, model_validator
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
MAX_DURATION = timedelta(days=366)
"""The longest duration a rule file may write: nothing in a plan waits, keeps or looks back further."""
MAX_LIMIT_COUNT = 1_000_000_000
"""The largest count of a frequency cap's limit."""
_UNIT_WORDS = {
    "s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "m": "m", "min": "m", "mins": "m", "minute": "m", "minutes": "m",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "d": "d", "day": "d", "days": "d", "w": "w", "wk": "w", "week": "w", "weeks": "w",
}
"""Units as people spell them, for the did-you-mean of a duration the loader refuses."""
_SPELLED = re.compile(r"(\d+)\s*([A-Za-z]+)")


def _bad(message: str) -> PydanticCustomError:
    """A field's value is wrong: the loader prefixes the field's name (kind `rule_value`)."""
    return PydanticCustomError("rule_value", message)


def misplaced(message: str, *at: str | int) -> PydanticCustomError:
    """A model's check that concerns one of its keys: the loader reports it at `at` under the model."""
    return PydanticCustomError("rule_place", message, {"at": at})


def _spelled_duration(text: str) -> str | None:
    """`1 day`, `1D`, `2 hours 30 min` as the rule file's spelling (`1d`, `2h30m`), if it is one."""
    parts = _SPELLED.findall(text)
    if not parts or _SPELLED.sub("", text).strip(" ,") != "":
        return None
    units = [_UNIT_WORDS.get(unit if unit == "M" else unit.lower()) for _, unit in parts]
    if any(unit is None for unit in units):
        return None  # `M` is not lowered: it may mean months, which have no unit
    return "".join(f"{int(number)}{unit}" for (number, _), unit in zip(parts, units, strict=True))


def parse_duration(value: Any) -> timedelta:
    """`5m`, `1h30m`, `7d` as a timedelta, up to `MAX_DURATION`; anything else is refused with an example."""
    if isinstance(value, timedelta):
        return value
    text = value.strip() if isinstance(value, str) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise _bad(f"{value!r} is not a duration: it needs a unit, e.g. {value}m or {value}d")
    if text is not None and text.startswith("-"):
        raise _bad(f"{value!r} is negative: a duration is a length of time, e.g. 5m, 7d")
    if text is None or not _DURATION.match(text):
        spelled = _spelled_duration(text) if text is not None else None
        hint = f" (did you mean {spelled}?)" if spelled else ""
        raise _bad(f"{value!r} is not a duration: write a number and a unit (s m h d w), e.g. 5m, 7d{hint}")
    # Compared as integers before any timedelta is made: a huge one would overflow it.
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", text))
    if seconds == 0:
        raise _bad(f"{value!r} is zero: a duration must be longer than that")
    if seconds > MAX_DURATION.total_seconds():
        raise _bad(f"{value!r} is too long: a duration is at most {duration_text(MAX_DURATION)}")
    return timedelta(seconds=seconds)


def _clock(value: Any) -> time:
    if isinstance(value, time):
        return value
    match = _CLOCK.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise _bad(f"{value!r} is not a clock time: write hours and minutes in quotes, e.g. \"22:00\"")
    return time(int(match.group(1)), int(match.group(2)))


_LIMIT_FORM = "a limit is COUNT/DURATION, e.g. 3/1d or 1/1h"


def _cap_limit(value: Any) -> Any:
    if isinstance(value, str):
        return _limit_text(value)
    if isinstance(value, dict) and set(value) == {"count", "per"}:
        count = value["count"]
        if isinstance(count, bool) or not isinstance(count, int):
            raise _bad(f"count {count!r} is not a whole number: write count: 3")
        if count > MAX_LIMIT_COUNT:
            raise _bad(f"count {count} is too large: a limit counts at most {MAX_LIMIT_COUNT:,}")
        return CapLimit(count=count, window=parse_duration(value["per"]))
    if isinstance(value, dict):
        keys = ", ".join(sorted(map(str, value)))
        raise _bad(f"a limit object has the keys count and per, e.g. {{count: 3, per: 1d}}; got {keys}")
    raise _bad(f"{value!r} is not a limit: {_LIMIT_FORM}")


def _limit_text(value: str) -> CapLimit:
    count, slash, window = (part.strip() for part in value.partition("/"))
    if not slash:
        words = re.fullmatch(r"(\d+)\s*(?:per|a|an|every|each)\s+(.+)", value.strip())
        unit = _window_spelling(words.group(2)) if words else None
        hint = f" (did you mean {words.group(1)}/{unit}?)" if words and unit else ""
        raise _bad(f"{value!r} is not a limit: {_LIMIT_FORM}{hint}")
    if not count.isdigit() or int(count) < 1:
        wrong = f"its count {count!r} is not a whole number from 1"
        raise _bad(f"{value!r} is not a limit: {wrong}; {_LIMIT_FORM}")
    if int(count) > MAX_LIMIT_COUNT:
        raise _bad(f"{value!r}: the count {count} is too large: a limit counts at most {MAX_LIMIT_COUNT:,}")
    if not _DURATION.match(window):
        unit = _window_spelling(window)
        hint = f" (did you mean {count}/{unit}?)" if unit else ""
        raise _bad(f"{value!r} is not a limit: {_LIMIT_FORM}{hint}")
    try:
        return CapLimit(count=int(count), window=parse_duration(window))
    except PydanticCustomError as exc:  # zero or too long: the same message, naming the whole limit
        raise _bad(f"{value!r}: its duration {exc.message()}") from None


def _window_spelling(text: str) -> str | None:
    """`day` or `1 day` as `1d`: what a limit's window probably meant."""
    return _spelled_duration(text) or _spelled_duration(f"1 {text}")


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


def steps_in_order(steps: list[FallbackSpec]) -> None:
    """Fallback steps run in order of `after`: a step out of order is refused at its `after`."""
    for number, (before, step) in enumerate(itertools.pairwise(steps), start=2):
        if step.after <= before.after:
            raise misplaced(
                f"'fallback' steps run in order of 'after': step {number} ({duration_text(step.after)}) "
                f"must come later than step {number - 1} ({duration_text(before.after)})",
                "fallback", number - 1, "after",
            )


class Strategy(_Strict):
    """A named 补发 strategy: the first send's channels and the fallback steps after it.

    Defined once at the top of a rule file, used by name from a rule (`then: {strategy: ...}`) or an
    event (`strategy`), as UMS references a resend strategy by id.
    """

    description: str = ""
    channels: Channels = None
    """Send first on each of these channels the user has an address on."""
    first_of: Choices = None
    """Send first on the first of these the user can be reached on."""
    fallback: Annotated[list[FallbackSpec], Field(max_length=10)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_choice_and_steps_in_order(self) -> Strategy:
        if self.channels is not None and self.first_of is not None:
            raise misplaced("a strategy takes channels or first_of, not both", "first_of")
        if self.channels is None and self.first_of is None:
            raise ValueError("a strategy needs its first channels: channels: [...] or first_of: [...]")
        steps_in_order(self.fallback)
        return self

    @property
    def first(self) -> list[str]:
        """The channels of the first send, as written (`preferred` included)."""
        return [str(c) for c in self.channels or self.first_of or ()]


class Variant(_Strict):
    """One arm of a split: recipients fall into it by a stable hash of rule id and user id."""

    name: RuleId
    weight: Annotated[int, Strict()] = Field(ge=1, le=10_000)
    channels: Channels = None
    first_of: Choices = None
    template: Name | None = None
    control: Annotated[bool, Strict()] = False
    """A control share: its recipients receive nothing and are recorded `held_out`, so the other
    variants' lift is measured against doing nothing."""

    @model_validator(mode="after")
    def _at_most_one_choice(self) -> Variant:
        if self.channels is not None and self.first_of is not None:
            raise misplaced("'variants' entry takes channels or first_of, not both", "first_of")
        if self.control:
            sending = [key for key in ("channels", "first_of", "template") if getattr(self, key) is not None]
            if sending:
                raise misplaced(
                    f"control variant {self.name!r} receives nothing, so it takes no {', '.join(sending)}",
                    sending[0],
                )
        return self


class BestTimeSpec(_Strict):
    within: Duration


class Pace(_Strict):
    """定速: at most `per_second` sends per second for everything sharing the key."""

    per_second: Annotated[float, Strict()] = Field(gt=0, le=100_000)
    key: Literal["campaign", "app", "type", "rule"] = "campaign"
    """campaign: the event's campaign, else its app and type; app; type (app and type); rule."""


class BudgetSpec(_Strict):
    """Near or over the app's or campaign's budget: `over` drop | hold | cheaper, `near` send | cheaper."""

    over: Literal["drop", "hold", "cheaper"] = "drop"
    near: Literal["send", "cheaper"] = "send"
    costs: dict[ChannelName, Annotated[float, Strict(), Field(ge=0, le=1_000_000)]] | None = None
    """Estimated cost per message of a channel, over the providers file's price (e.g. {sms: 0.05})."""

    @property
    def picks_cheaper(self) -> bool:
        return self.over == "cheaper" or self.near == "cheaper"


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
    strategy: Name | None = None
    """A named strategy of the rule files: its channels and fallback steps, instead of the rule's own."""
    quiet_hours: Annotated[str | None, BeforeValidator(_quiet_choice)] = None
    best_time: BestTimeSpec | None = None
    pace: Pace | None = None
    keep_offline: Duration | None = None
    bypass: Annotated[list[Bypass] | None, Field(min_length=1)] = None
    budget: BudgetSpec | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Then:
        chosen = [key for key in ("channels", "first_of", "suppress") if getattr(self, key) is not None]
        if self.strategy is not None and self.suppress is None:
            own = [key for key in ("channels", "first_of", "fallback") if getattr(self, key) is not None]
            if own:
                message = (
                    f"'then' takes its channels and fallback steps from strategy {self.strategy!r}, so it "
                    f"cannot also set {', '.join(own)}: keep the inline {own[0]} or the named strategy"
                )
                raise misplaced(message, own[0])
            return self
        if len(chosen) > 1:
            got = ", ".join(chosen)
            raise misplaced(f"'then' needs exactly one of channels, first_of, suppress; got {got}", chosen[1])
        if self.suppress is not None:
            extra = sorted(k for k in self.model_fields_set - {"suppress"} if getattr(self, k) is not None)
            if extra:
                message = f"'then' suppresses, so it cannot also set {', '.join(extra)}"
                raise misplaced(message, extra[0])
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
            again = next(i for i, name in enumerate(names) if name in names[:i])
            message = f"'variants' names must differ; used more than once: {', '.join(twice)}"
            raise misplaced(message, "variants", again, "name")
        controls = [i for i, variant in enumerate(self.variants or ()) if variant.control]
        if len(controls) > 1:
            got = f"{len(controls)}: {', '.join(names[i] for i in controls)}"
            message = f"'variants' may have one control share (control: true); got {got}"
            raise misplaced(message, "variants", controls[1], "control")
        steps_in_order(self.fallback or [])
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
            raise misplaced("'quiet_hours' window needs start and end to differ", "end")
        return self


class CapExempt(_Strict):
    """Deliveries a cap never counts nor holds back."""

    category: Annotated[list[Category] | None, Field(min_length=1)] = None
    priority: Annotated[list[Priority] | None, Field(min_length=1)] = None
    tags_any: Annotated[list[Name] | None, Field(min_length=1)] = None
    users: Annotated[list[Name] | None, Field(min_length=1)] = None
    whitelist: Annotated[bool, Strict()] = False
    """People on the whitelist (白名单), by user id or an address they are reached at."""


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
    order: Annotated[int, Strict()] | None = Field(None, ge=0, le=1_000_000)
    """Where this file's rules go among a folder's files: lower is tried first."""
    description: str = ""
    urgent_bypass: Annotated[list[Bypass] | None, Field(min_length=1)] = None
    """What every delivery of priority `urgent` skips, whichever rule decides it."""
    quiet_hours: list[QuietWindow] = Field(default_factory=list)
    caps: list[CapRule] = Field(default_factory=list)
    strategies: dict[Name, Strategy] = Field(default_factory=dict)
    """Named 补发 strategies by name, for rules and events to use (`strategy: name`)."""
    rules: list[Rule] = Field(default_factory=list)


@dataclass(frozen=True)
class NamedStrategy:
    """A strategy of the rule files with its name and where it is defined (`file:line`)."""

    name: str
    spec: Strategy
    origin: str = field(default="", compare=False)


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
    strategies: tuple[NamedStrategy, ...] = ()
    """Every named strategy of the files, in file order."""

    def strategy(self, name: str) -> NamedStrategy | None:
        return next((s for s in self.strategies if s.name == name), None)

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

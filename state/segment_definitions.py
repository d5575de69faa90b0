"""The segment definition language: conditions over a person's profile, tags, addresses, consent and
recent engagement, combined with all / any / not, checked when saved and evaluated here without I/O.

A condition is a mapping with one deciding key (YAML or JSON):

    all: [<condition>, ...]          any: [<condition>, ...]          not: <condition>
    tags: {all: [a, b], any: [...], none: [...]}
    attribute: locale, equals: zh-CN     (or not_equals, in, not_in, exists, contains, starts_with,
                                          gt, gte, lt, lte; a dotted path reaches into mappings)
    bound: email                         (has an address on that channel)
    consent: {category: marketing, channel: email, opted_in: true}
    engaged: {status: read, within: 30 days}

Attribute names are the profile's own fields (`state.users.User`), read from its JSON form, so a field
the profile gains is usable without a change here.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from records.vocabulary import CATEGORIES, CHANNELS
from state.engagement import ENGAGED, KEEP_FOR
from state.users import User

_DURATION = re.compile(r"^\s*(\d+)\s*(minute|hour|day|week)s?\s*$")
_SECONDS = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
# Engagement older than this is not kept (state.engagement): a longer window would silently mean less.
MAX_WITHIN_SECONDS = int(KEEP_FOR.total_seconds())
_OPS = ("equals", "not_equals", "in", "not_in", "exists", "contains", "starts_with", "gt", "gte", "lt", "lte")
_FIELD = {"in": "in_"}  # the test's name where its field is named otherwise (a Python keyword)
_COMPARE = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
_KINDS = ("all", "any", "not", "tags", "attribute", "bound", "consent", "engaged")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AllOf(_Strict):
    all: list[Condition] = Field(min_length=1)


class AnyOf(_Strict):
    any: list[Condition] = Field(min_length=1)


class NotOf(_Strict):
    not_: Condition = Field(alias="not")


class TagTest(_Strict):
    all: list[str] = Field(default_factory=list)
    any: list[str] = Field(default_factory=list)
    none: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> TagTest:
        if not (self.all or self.any or self.none):
            raise ValueError("name tags under at least one of all, any, none")
        return self


class HasTags(_Strict):
    tags: TagTest


class Attribute(_Strict):
    attribute: str = Field(min_length=1, max_length=200)
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    not_in: list[Any] | None = None
    exists: bool | None = None
    contains: Any = None
    starts_with: str | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @field_validator("attribute")
    @classmethod
    def _known(cls, value: str) -> str:
        head = value.split(".", 1)[0]
        fields = sorted(User.model_fields)
        if head not in fields:
            close = difflib.get_close_matches(head, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(fields)})"
            raise ValueError(f"unknown attribute {head!r}{hint}")
        return value

    @model_validator(mode="after")
    def _one_test(self) -> Attribute:
        given = [op for op in _OPS if _FIELD.get(op, op) in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"give exactly one test of {', '.join(_OPS)} (got {', '.join(given) or 'none'})")
        return self

    @property
    def op(self) -> str:
        return next(op for op in _OPS if _FIELD.get(op, op) in self.model_fields_set)


class Bound(_Strict):
    bound: str

    @field_validator("bound")
    @classmethod
    def _channel(cls, value: str) -> str:
        return _one_of(value, CHANNELS, "channel")


class ConsentTest(_Strict):
    category: str
    channel: str = "*"
    opted_in: bool = False
    """Also a standing opt-in for the category (on every channel or this one), as marketing needs."""

    @field_validator("category")
    @classmethod
    def _category(cls, value: str) -> str:
        return _one_of(value, CATEGORIES, "category")

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        return value if value == "*" else _one_of(value, CHANNELS, "channel")


class Consented(_Strict):
    consent: ConsentTest


class EngagementTest(_Strict):
    status: Literal["any", "opened", "clicked", "read", "converted"] = "any"
    within: str = Field(description="a duration: 7 days, 12 hours, 2 weeks")

    @field_validator("within")
    @classmethod
    def _duration(cls, value: str) -> str:
        seconds = duration_seconds(value)
        if not 0 < seconds <= MAX_WITHIN_SECONDS:
            raise ValueError(f"must be more than 0 and at most {MAX_WITHIN_SECONDS // 86400} days "
                             "(engagement is kept that long)")
        return value

    @property
    def seconds(self) -> int:
        return duration_seconds(self.within)


class Engaged(_Strict):
    engaged: EngagementTest


def _kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return _TAGS.get(type(value))
    if isinstance(value, Mapping):
        found = [k for k in _KINDS if k in value]
        return found[0] if len(found) == 1 else None
    return None


Condition = Annotated[
    Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")]
    | Annotated[HasTags, Tag("tags")]
    | Annotated[Attribute, Tag("attribute")]
    | Annotated[Bound, Tag("bound")]
    | Annotated[Consented, Tag("consent")]
    | Annotated[Engaged, Tag("engaged")],
    Discriminator(
        _kind,
        custom_error_type="condition",
        custom_error_message=f"a condition is a mapping with exactly one of {', '.join(_KINDS)}",
    ),
]

_TAGS: dict[type[BaseModel], str] = {
    AllOf: "all", AnyOf: "any", NotOf: "not", HasTags: "tags", Attribute: "attribute", Bound: "bound",
    Consented: "consent", Engaged: "engaged",
}
for _model in (AllOf, AnyOf, NotOf):
    _model.model_rebuild()


class Definition(_Strict):
    """A whole definition: one root condition."""

    root: Condition


def parse_definition(raw: Any) -> Definition:
    """The definition in `raw`; raises DefinitionError listing each bad condition by its path."""
    try:
        return Definition.model_validate({"root": raw})
    except ValidationError as exc:
        raise DefinitionError([(_path(e["loc"][1:]), _message(e["msg"])) for e in exc.errors()]) from None


class DefinitionError(ValueError):
    """A definition that does not hold: (path, message) per problem, the path like `all[1].engaged.within`."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{path or 'definition'}: {message}" for path, message in self.problems))


def _path(loc: Sequence[int | str]) -> str:
    # The tagged union repeats the tag before the field of the same name (`all.all.1`): said once.
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        elif not (parts and parts[-1] == part) and part != "not_":
            parts.append("in" if part == "in_" else part)
    return ".".join(parts)


def _message(message: str) -> str:
    return message.removeprefix("Value error, ")


def _one_of(value: str, known: Iterable[str], what: str) -> str:
    names = sorted(known)
    if value not in names:
        close = difflib.get_close_matches(value, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(names)})"
        raise ValueError(f"unknown {what} {value!r}{hint}")
    return value


def duration_seconds(text: str) -> int:
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as '30 days', '12 hours', '2 weeks'")
    return int(match.group(1)) * _SECONDS[match.group(2)]


@dataclass(frozen=True)
class Needs:
    """What evaluating a definition reads beyond the profile."""

    engagement_seconds: int = 0
    consent: bool = False


def needs_of(condition: Any) -> Needs:
    """The longest engagement window and whether consent is read, over the whole tree."""
    found = Needs()
    for node in walk(condition):
        if isinstance(node, Engaged):
            found = Needs(max(found.engagement_seconds, node.engaged.seconds), found.consent)
        elif isinstance(node, Consented):
            found = Needs(found.engagement_seconds, True)
    return found


def walk(condition: Any) -> Iterable[Any]:
    yield condition
    if isinstance(condition, AllOf):
        for child in condition.all:
            yield from walk(child)
    elif isinstance(condition, AnyOf):
        for child in condition.any:
            yield from walk(child)
    elif isinstance(condition, NotOf):
        yield from walk(condition.not_)


def required_tag_sets(condition: Any) -> list[tuple[str, ...]]:
    """Tag unions every member must belong to (one of each tuple's tags): the indexes a walk may take.
    A tag every member holds makes a one-tag tuple; `tags: {any: [...]}` the union of those."""
    if isinstance(condition, HasTags):
        found: list[tuple[str, ...]] = [(tag,) for tag in condition.tags.all]
        if condition.tags.any:
            found.append(tuple(sorted(set(condition.tags.any))))
        return found
    if isinstance(condition, AllOf):
        return [choice for child in condition.all for choice in required_tag_sets(child)]
    return []


@dataclass
class Person:
    """What a page read of one person: the profile's JSON form, engagement since the widest window as
    (ms, status), and the consent and opt-in fields they hold (`{category}|{channel}`)."""

    profile: dict[str, Any]
    engaged: list[tuple[int, str]] = field(default_factory=list)
    refused: frozenset[str] = frozenset()
    opted_in: frozenset[str] = frozenset()


def matches(condition: Any, person: Person, now_ms: int) -> bool:
    """Whether `person` satisfies `condition`; `now_ms` is the clock the engagement times were taken on."""
    if isinstance(condition, AllOf):
        return all(matches(c, person, now_ms) for c in condition.all)
    if isinstance(condition, AnyOf):
        return any(matches(c, person, now_ms) for c in condition.any)
    if isinstance(condition, NotOf):
        return not matches(condition.not_, person, now_ms)
    if isinstance(condition, HasTags):
        held = set(person.profile.get("tags") or ())
        test = condition.tags
        return (set(test.all) <= held and (not test.any or bool(held & set(test.any)))
                and not held & set(test.none))
    if isinstance(condition, Attribute):
        return _attribute(condition, person.profile)
    if isinstance(condition, Bound):
        return bool((person.profile.get("bindings") or {}).get(condition.bound))
    if isinstance(condition, Consented):
        return _consented(condition.consent, person)
    if isinstance(condition, Engaged):
        since = now_ms - condition.engaged.seconds * 1000
        wanted = condition.engaged.status
        return any(ms >= since and (status == wanted or (wanted == "any" and status in ENGAGED))
                   for ms, status in person.engaged)
    raise TypeError(f"not a condition: {condition!r}")


_MISSING = object()


def _attribute(test: Attribute, profile: Mapping[str, Any]) -> bool:
    value: Any = profile
    for part in test.attribute.split("."):
        value = value.get(part, _MISSING) if isinstance(value, Mapping) else _MISSING
        if value is _MISSING:
            break
    op = test.op
    if op == "exists":
        return (value is not _MISSING and value not in (None, "", [], {})) == test.exists
    if value is _MISSING or value is None:
        return op in ("not_equals", "not_in")
    try:
        if op == "equals":
            return bool(value == test.equals)
        if op == "not_equals":
            return bool(value != test.not_equals)
        if op == "in":
            return value in (test.in_ or [])
        if op == "not_in":
            return value not in (test.not_in or [])
        if op == "contains":
            return test.contains in value
        if op == "starts_with":
            return isinstance(value, str) and value.startswith(test.starts_with or "")
        return bool(_COMPARE[op](value, getattr(test, op)))
    except TypeError:
        return False  # a value of another type (a number compared to text) does not match


def _consented(test: ConsentTest, person: Person) -> bool:
    # The fields an unsubscription is stored under (state.consent), broadest first.
    channel = test.channel
    scopes = {"*|*", f"{test.category}|*", f"*|{channel}", f"{test.category}|{channel}"}
    if person.refused & scopes:
        return False
    if test.opted_in:
        return bool(person.opted_in & {f"{test.category}|*", f"{test.category}|{channel}"})
    return True

"""The attribution file (`config/attribution.yaml`, setting SWITCHBOARD_ATTRIBUTION): per conversion type,
how long after each kind of touch a message still earns the credit, and which touch wins.

```yaml
default:                  # for every type not listed below
  model: last_touch       # last_touch (default) or first_touch
  windows: {clicked: 7d, read: 3d, opened: 3d, delivered: 1d}
types:
  enrolment:
    model: first_touch
    windows: {clicked: 14d, read: 7d, delivered: 3d}
```

A window is a whole number of minutes, hours, days or weeks (`30m`, `36h`, `7d`, `2w`), at most a year;
a transition without a window earns no credit. Every error is reported at once as `path:line:col: message`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from records.vocabulary import Name
from settings.yaml_files import FileProblems, LocatedProblem, duplicate_keys

Model = Literal["last_touch", "first_touch"]
Touch = Literal["clicked", "read", "opened", "delivered"]
TOUCHES: tuple[Touch, ...] = ("clicked", "read", "opened", "delivered")
HELD_OUT = "held_out"  # the row of a recipient in a rule's control share, credited like `delivered`
"""The transitions that can earn a message the credit, strongest first (ties go to the stronger)."""

LONGEST_WINDOW = timedelta(days=366)
_DURATION = re.compile(r"^\s*(\d{1,6})\s*(m|h|d|w)\s*$")
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Windows(_Strict):
    """How long after each transition a message still earns the credit; none set: no credit for it."""

    clicked: timedelta | None = None
    read: timedelta | None = None
    opened: timedelta | None = None
    delivered: timedelta | None = None

    @field_validator("clicked", "read", "opened", "delivered", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if value is None or isinstance(value, timedelta):
            return value
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"{value!r} is not a window: write a whole number with m, h, d or w, e.g. 7d")
        window = int(match.group(1)) * _UNITS[match.group(2)]
        if not timedelta(0) < window <= LONGEST_WINDOW:
            raise ValueError(f"{value!r}: a window is more than 0 and at most 366d")
        return window

    def of(self, status: str) -> timedelta | None:
        """The window of a transition; None for one that earns no credit."""
        if status == HELD_OUT:
            # A control recipient converts without any message; crediting its held_out row under the
            # delivered window is what lets a variant report compare a rule's sends with doing nothing.
            status = "delivered"
        window: timedelta | None = getattr(self, status, None) if status in TOUCHES else None
        return window


class TypeRule(_Strict):
    """Attribution of one conversion type: its windows and its model."""

    model: Model = "last_touch"
    windows: Windows

    @model_validator(mode="after")
    def _some_window(self) -> TypeRule:
        if not any(self.windows.of(touch) for touch in TOUCHES):
            raise ValueError(f"windows needs at least one of {', '.join(TOUCHES)}")
        return self

    @property
    def longest(self) -> timedelta:
        return max(w for touch in TOUCHES if (w := self.windows.of(touch)) is not None)


BUILT_IN_DEFAULT = TypeRule(
    windows=Windows(clicked=timedelta(days=7), read=timedelta(days=3), opened=timedelta(days=3),
                    delivered=timedelta(days=1))
)


class AttributionFile(_Strict):
    """The file as written."""

    default: TypeRule = BUILT_IN_DEFAULT
    types: dict[Name, TypeRule] = Field(default_factory=dict)


class AttributionError(LocatedProblem):
    """One problem in the attribution file, at a 1-based line and column."""


class AttributionFileError(FileProblems):
    """The attribution file does not load; every problem in it, one per line."""


@dataclass(frozen=True)
class AttributionRules:
    """Attribution per conversion type, with a default for the types not listed."""

    default: TypeRule = BUILT_IN_DEFAULT
    types: Mapping[str, TypeRule] = field(default_factory=dict)

    def for_type(self, conversion_type: str) -> TypeRule:
        return self.types.get(conversion_type, self.default)

    @property
    def longest(self) -> timedelta:
        """The longest window of any type: how far back a batch's touches are looked up."""
        return max((rule.longest for rule in (self.default, *self.types.values())), default=timedelta(0))

    @classmethod
    def load(cls, path: str | Path) -> AttributionRules:
        """The rules in `path`; AttributionFileError naming every problem at its line and column."""
        loaded = _load(Path(path))
        return cls(default=loaded.default, types=dict(loaded.types))


def check_attribution(path: str | Path) -> list[LocatedProblem]:
    """Every problem in the attribution file (empty when it loads)."""
    try:
        _load(Path(path))
    except AttributionFileError as exc:
        return exc.errors
    return []


def _load(path: Path) -> AttributionFile:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = AttributionError(file, 1, 1, f"cannot read attribution file: {exc}")
        raise AttributionFileError([problem]) from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        problem = AttributionError(file, line, column, f"invalid YAML: {detail}")
        raise AttributionFileError([problem]) from None
    finally:
        loader.dispose()
    if root is None:
        return AttributionFile()  # an empty file: the built-in default for every type
    errors = [AttributionError(file, k.start_mark.line + 1, k.start_mark.column + 1,
                               f"duplicate key {k.value!r}") for k in duplicate_keys(root)]
    if errors:
        raise AttributionFileError(errors)  # which of the two was meant is for the author to say
    try:
        loaded = AttributionFile.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            unknown, missing = err["type"] == "extra_forbidden", err["type"] == "missing"
            node = _node_at(root, loc[:-1] if missing else loc, key=unknown)
            mark = node.start_mark
            errors.append(AttributionError(file, mark.line + 1, mark.column + 1, _message(err)))
    if errors:
        raise AttributionFileError(sorted(errors, key=lambda e: (e.line, e.column)))
    return loaded


def _message(err: Mapping[str, Any]) -> str:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    last = str(loc[-1]) if loc else "the file"
    if err["type"] == "extra_forbidden":
        allowed = _allowed(loc)
        close = difflib.get_close_matches(last, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (expected one of: {', '.join(allowed)})"
        return f"unknown field {last!r}{hint}"
    if err["type"] == "missing":
        return f"missing required field {last!r}"
    if err["type"] in ("model_type", "dict_type"):
        return f"{last!r} must be a mapping of keys to values"
    if err["type"] == "literal_error":
        return f"{last!r} must be last_touch or first_touch, got {err.get('input')!r}"
    if err["type"] == "string_pattern_mismatch":
        return f"conversion type {err.get('input')!r} may only hold letters, digits and _ . : -"
    text = str(err["msg"]).removeprefix("Value error, ")
    return f"{last!r}: {text}" if loc else text


def _allowed(loc: tuple[str | int, ...]) -> tuple[str, ...]:
    parent = [p for p in loc[:-1] if isinstance(p, str)]
    if not parent:
        return tuple(AttributionFile.model_fields)
    if parent[-1] == "windows":
        return tuple(Windows.model_fields)
    return tuple(TypeRule.model_fields)


def _node_at(root: yaml.Node, loc: Sequence[str | int], key: bool = False) -> yaml.Node:
    """The deepest node along `loc`; with `key`, the key node of the last step (for unknown keys)."""
    node, key_node = root, root
    for depth, part in enumerate(loc):
        if part == "[key]":  # pydantic's step for a mapping's key that failed
            return key_node
        if not isinstance(node, yaml.MappingNode):
            break
        found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(part)), None)
        if found is None:
            break
        key_node = found[0]
        node = found[0] if key and depth == len(loc) - 1 else found[1]
    return node

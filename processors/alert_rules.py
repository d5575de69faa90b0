"""The alert file (`config/alerts.yaml`, setting SWITCHBOARD_ALERTS): what the worker watches, and who
hears about it.

```yaml
every: 30s                      # how often the worker evaluates the rules
notify:                         # the on-call audience: an event of category `alert`, riding the flow
  app: switchboard              # a registered app allowed the channels below
  audience: {tags: [on-call]}   # any audience of an event (user_ids, tags, segment, addresses)
  channels: [robot, email]
  template: switchboard_alert
rules:
  - name: sms-failing
    kind: failure_rate          # failed or deferred sends of a channel, or failed calls of a provider
    channel: sms                # or provider: aliyun-main, or provider: any (one incident per provider)
    above: 0.2                  # a share, 0 to 1
    window: 5m
    min_sends: 20               # fewer sends in the window: too few to judge, the state stays
  - {name: send-lag, kind: consumer_lag, stage: send, above: 5000}
  - {name: dead-letters, kind: dead_letters, above: 10, window: 10m}
  - {name: bad-credentials, kind: credentials_refused, window: 10m}   # provider: any unless named
```

Every error is reported at once as `path:line:col: message`, with did-you-mean for a misspelt key.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from records.topics import Audience
from records.vocabulary import ChannelName, Name
from settings.yaml_files import FileProblems, LocatedProblem, duplicate_keys

SHORTEST_WINDOW = 10.0  # the time buckets of state.watch
LONGEST_WINDOW = 3600.0
_DURATION = re.compile(r"^\s*(\d{1,5})\s*(s|m|h)\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
STAGES = ("ingest", "decide", "send", "track")


def seconds(value: object, shortest: float = SHORTEST_WINDOW, longest: float = LONGEST_WINDOW) -> float:
    """A duration written `30s`, `5m` or `1h`, within [shortest, longest] seconds."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a duration: write a whole number with s, m or h, e.g. 5m")
    length = int(match.group(1)) * _UNITS[match.group(2)]
    if not shortest <= length <= longest:
        raise ValueError(f"{value!r} must be from {shortest:g}s to {longest / 60:g}m")
    return length


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Rule(_Strict):
    name: Name
    window: float = 300.0
    summary: str = Field("", max_length=500, description="a sentence for the on-call, added to the alert")

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: object) -> object:
        return value if isinstance(value, float) else seconds(value)


class FailureRate(_Rule):
    """Failed (or deferred) sends of a channel, or failed calls of a provider, as a share of all."""

    kind: Literal["failure_rate"]
    channel: ChannelName | None = None
    provider: Name | None = None
    above: float = Field(gt=0, lt=1)
    min_sends: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _one_scope(self) -> FailureRate:
        if (self.channel is None) == (self.provider is None):
            raise ValueError("a failure_rate rule names either a channel or a provider (or provider: any)")
        return self


class ConsumerLag(_Rule):
    """Records waiting for a stage (every worker's partitions together)."""

    kind: Literal["consumer_lag"]
    stage: Literal["ingest", "decide", "send", "track", "any"] = "any"
    above: int = Field(ge=0)


class DeadLetters(_Rule):
    """Records dead-lettered within the window, by every stage."""

    kind: Literal["dead_letters"]
    above: int = Field(ge=0)


class CredentialsRefused(_Rule):
    """A provider refused our credentials (and was taken out of its chain); resolved once it sends again."""

    kind: Literal["credentials_refused"]
    provider: Name = "any"


AlertRule = Annotated[
    FailureRate | ConsumerLag | DeadLetters | CredentialsRefused, Field(discriminator="kind")
]


class Notify(_Strict):
    """Who hears about alerts, and as which app: the alert is an event like any other."""

    app: Name
    audience: Audience
    channels: list[ChannelName] | None = None
    template: Name = "switchboard_alert"
    priority: Literal["urgent", "high", "normal", "low"] = "urgent"


class AlertFile(_Strict):
    """The file as written."""

    every: float = 30.0
    notify: Notify
    rules: list[AlertRule] = Field(default_factory=list)

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, value: object) -> object:
        return value if isinstance(value, float) else seconds(value, shortest=1.0, longest=600.0)

    @model_validator(mode="after")
    def _unique_names(self) -> AlertFile:
        names = [rule.name for rule in self.rules]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"rule names repeat: {', '.join(repeated)}")
        return self


class AlertError(LocatedProblem):
    """One problem in the alert file, at a 1-based line and column."""


class AlertFileError(FileProblems):
    """The alert file does not load; every problem in it, one per line."""


def load_alerts(path: str | Path) -> AlertFile:
    """The alert file at `path`; AlertFileError naming every problem at its line and column."""
    file, path = str(path), Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AlertFileError([AlertError(file, 1, 1, f"cannot read alert file: {exc}")]) from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        raise AlertFileError([AlertError(file, line, column, f"invalid YAML: {detail}")]) from None
    finally:
        loader.dispose()
    if root is None:
        raise AlertFileError([AlertError(file, 1, 1, "the alert file is empty: it needs at least notify")])
    errors = [AlertError(file, k.start_mark.line + 1, k.start_mark.column + 1, f"duplicate key {k.value!r}")
              for k in duplicate_keys(root)]
    if errors:
        raise AlertFileError(errors)
    try:
        return AlertFile.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = _plain(tuple(err["loc"]))
            if err["type"] == "union_tag_invalid":
                loc = (*loc, "kind")  # point at the kind written, not at the whole rule
            unknown, missing = err["type"] == "extra_forbidden", err["type"] == "missing"
            mark = _node_at(root, loc[:-1] if missing else loc, key=unknown).start_mark
            errors.append(AlertError(file, mark.line + 1, mark.column + 1, _message(err, loc, data)))
    raise AlertFileError(sorted(set(errors), key=lambda e: (e.line, e.column, e.message)))


def check_alerts(path: str | Path) -> list[LocatedProblem]:
    """Every problem in the alert file (empty when it loads)."""
    try:
        load_alerts(path)
    except AlertFileError as exc:
        return exc.errors
    return []


def _plain(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    # A tagged union adds the tag's value as a step (`rules.0.failure_rate.above`): not a key in the file.
    kinds = {"failure_rate", "consumer_lag", "dead_letters", "credentials_refused"}
    return tuple(p for i, p in enumerate(loc) if not (p in kinds and i >= 2 and loc[i - 2] == "rules"))


def _message(err: Mapping[str, Any], loc: tuple[str | int, ...], data: object) -> str:
    last = str(loc[-1]) if loc else "the file"
    if len(loc) >= 2 and isinstance(loc[-1], int):
        last = f"{loc[-2]}[{loc[-1]}]"  # an item of a list: name the list
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed(loc, data)
        close = difflib.get_close_matches(last, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (expected one of: {', '.join(allowed)})"
        return f"unknown field {last!r}{hint}"
    if kind == "missing":
        return f"missing required field {last!r}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return "kind must be one of failure_rate, consumer_lag, dead_letters, credentials_refused"
    if kind in ("model_type", "dict_type"):
        return f"{last!r} must be a mapping of keys to values"
    if kind == "literal_error":
        return f"{last!r}: {err['msg']}, got {err.get('input')!r}"
    text = str(err["msg"]).removeprefix("Value error, ")
    return f"{last!r}: {text}" if loc else text


_KINDS: dict[str, type[BaseModel]] = {
    "failure_rate": FailureRate, "consumer_lag": ConsumerLag, "dead_letters": DeadLetters,
    "credentials_refused": CredentialsRefused,
}


def _allowed(loc: tuple[str | int, ...], data: object) -> tuple[str, ...]:
    parent = loc[:-1]
    if not parent:
        return tuple(AlertFile.model_fields)
    if parent[0] == "notify":
        return tuple(Audience.model_fields) if "audience" in parent else tuple(Notify.model_fields)
    if parent[0] == "rules" and len(parent) == 2 and isinstance(data, dict):
        rules = data.get("rules")
        index = parent[1]
        if isinstance(rules, list) and isinstance(index, int) and isinstance(rules[index], dict):
            model = _KINDS.get(str(rules[index].get("kind")))
            if model is not None:
                return tuple(model.model_fields)
    return ()


def _node_at(root: yaml.Node, loc: Sequence[str | int], key: bool = False) -> yaml.Node:
    """The deepest node along `loc`; with `key`, the key node of the last step (for unknown keys)."""
    node = root
    for depth, part in enumerate(loc):
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            continue
        if not isinstance(node, yaml.MappingNode):
            break
        found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(part)), None)
        if found is None:
            break
        node = found[0] if key and depth == len(loc) - 1 else found[1]
    return node

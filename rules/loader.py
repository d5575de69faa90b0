"""Load rule files strictly, reporting every error at once as `path:line:col: message`.

Positions come from the YAML node tree (`yaml.compose`), walked alongside pydantic's error locations.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from processors.records import CHANNELS, Category, Priority
from rules.schema import Rule, RuleFile, Ruleset, When

_CHANNELS: tuple[str, ...] = CHANNELS
_VOCABULARY: dict[str, tuple[str, tuple[str, ...]]] = {
    "category": ("category", get_args(Category)),
    "priority": ("priority", get_args(Priority)),
    "channels": ("channel", _CHANNELS),
    "channel_pref": ("channel", _CHANNELS),
    "bound": ("channel", _CHANNELS),
    "first_of": ("channel", (*_CHANNELS, "preferred")),
}
"""Closed vocabularies by field name: what an unknown value is called, and the known values."""


@dataclass(frozen=True)
class RuleError:
    """One problem in a rule file, at a 1-based line and column."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class RuleFileError(Exception):
    """Rule files that cannot be loaded; `errors` holds every problem found."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        super().__init__("\n".join(str(error) for error in errors))
        self.errors = list(errors)


@dataclass(frozen=True)
class _PlacedRule:
    rule: Rule
    file: str
    line: int
    column: int

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"


def load_ruleset(path: str | Path) -> Ruleset:
    """Load a rule file, or every `*.yaml` in a folder (by file name); raise `RuleFileError` if bad."""
    ruleset, errors = _load(Path(path))
    if errors or ruleset is None:
        raise RuleFileError(errors)
    return ruleset


def check(paths: Iterable[str | Path]) -> list[RuleError]:
    """Every error in the given rule files or folders; each path is checked as one ruleset."""
    errors: list[RuleError] = []
    for path in paths:
        errors.extend(_load(Path(path))[1])
    return errors


def _load(path: Path) -> tuple[Ruleset | None, list[RuleError]]:
    if path.is_dir():
        files = sorted(p for p in path.glob("*.yaml") if p.is_file())
        if not files:
            return None, [RuleError(str(path), 1, 1, "no *.yaml rule files in this folder")]
    elif path.is_file():
        files = [path]
    else:
        return None, [RuleError(str(path), 1, 1, "no such rule file or folder")]

    errors: list[RuleError] = []
    placed: list[_PlacedRule] = []
    names: dict[str, None] = {}
    digest = hashlib.blake2b(digest_size=4)
    for file in files:
        try:
            raw = file.read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(RuleError(str(file), 1, 1, f"cannot read rule file: {exc}"))
            continue
        digest.update(file.name.encode() + b"\0" + raw + b"\0")
        parsed, file_errors = _parse(str(file), text)
        errors.extend(file_errors)
        if parsed is not None:
            rule_file, rules = parsed
            names.setdefault(rule_file.ruleset)
            placed.extend(rules)
    errors.extend(_semantic_errors(placed))
    if errors:
        return None, errors
    ruleset = Ruleset(
        name="+".join(names),
        version=digest.hexdigest(),
        rules=tuple(p.rule for p in placed),
        origins={p.rule.id: p.origin for p in placed},
    )
    return ruleset, []


def _parse(file: str, text: str) -> tuple[tuple[RuleFile, list[_PlacedRule]] | None, list[RuleError]]:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        return None, [RuleError(file, line, column, f"invalid YAML: {detail}")]
    finally:
        loader.dispose()
    if root is None:
        return None, [RuleError(file, 1, 1, "empty rule file: expected 'ruleset:' and 'rules:'")]

    errors = _duplicate_keys(file, root)
    try:
        rule_file = RuleFile.model_validate(data)
    except ValidationError as exc:
        errors.extend(_from_pydantic(file, root, dict(err)) for err in exc.errors())
        return None, errors
    if errors:
        return None, errors
    rules = []
    for index, rule in enumerate(rule_file.rules):
        mark = _node_at(root, ("rules", index, "id")).start_mark
        rules.append(_PlacedRule(rule, file, mark.line + 1, mark.column + 1))
    return (rule_file, rules), []


def _duplicate_keys(file: str, node: yaml.Node) -> list[RuleError]:
    """PyYAML silently keeps the last of two equal keys; an author almost never means that."""
    errors: list[RuleError] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value in seen:
                errors.append(_at(file, key, f"duplicate key {key.value!r}"))
            seen.add(str(key.value))
            errors.extend(_duplicate_keys(file, value))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            errors.extend(_duplicate_keys(file, item))
    return errors


def _from_pydantic(file: str, root: yaml.Node, err: dict[str, Any]) -> RuleError:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    kind: str = err["type"]
    value = err.get("input")
    field = next((part for part in reversed(loc) if isinstance(part, str)), "")
    node = _node_at(root, loc, key=kind == "extra_forbidden")

    if kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        message = f"unknown field {loc[-1]!r}" + _suggest(str(loc[-1]), allowed)
    elif kind == "literal_error" and field in _VOCABULARY:
        noun, known = _VOCABULARY[field]
        message = f"unknown {noun} {value!r}" + _suggest(str(value), known)
    elif kind == "missing":
        message = f"missing required field {loc[-1]!r}"
        node = _node_at(root, loc[:-1])
    elif kind == "too_short":
        message = f"'{field}' is empty: list at least one value"
    elif kind == "list_type":
        example = f", e.g. [{value}]" if isinstance(value, str) else ""
        message = f"'{field}' must be a list{example}"
    elif kind == "string_pattern_mismatch" and field == "id":
        message = f"rule id {value!r} may only hold lowercase letters, digits and '-'"
    elif kind == "string_pattern_mismatch":
        message = f"'{field}' value {value!r} may only hold letters, digits and _ . : -"
    elif kind == "string_type":
        # YAML reads bare yes/no/on/off as booleans and digits as numbers.
        message = f"'{field}' must be text, got {value!r}: put the value in quotes"
    elif kind in ("model_type", "dict_type"):
        message = f"'{field or 'the file'}' must be a mapping of keys to values"
    elif kind == "value_error":
        message = str(err["msg"]).removeprefix("Value error, ")
    else:
        message = f"'{field}': {err['msg']}" if field else str(err["msg"])
    return _at(file, node, message)


def _semantic_errors(placed: Sequence[_PlacedRule]) -> list[RuleError]:
    errors: list[RuleError] = []
    first_by_id: dict[str, _PlacedRule] = {}
    for index, later in enumerate(placed):
        first = first_by_id.setdefault(later.rule.id, later)
        if first is not later:
            errors.append(
                RuleError(
                    later.file, later.line, later.column,
                    f"duplicate rule id {later.rule.id!r} (first defined at {first.origin})",
                )
            )
            continue
        shadow = next((p for p in placed[:index] if _covers(p.rule.when, later.rule.when)), None)
        if shadow is not None:
            errors.append(
                RuleError(
                    later.file, later.line, later.column,
                    f"rule {later.rule.id!r} is unreachable: rule {shadow.rule.id!r} ({shadow.origin}) "
                    "comes first and matches everything it matches",
                )
            )
    return errors


def _covers(earlier: When, later: When) -> bool:
    """True if every delivery `later` matches is matched by `earlier` (so `later` never wins)."""
    for key, values in earlier.conditions().items():
        other = getattr(later, key)
        if other is None:
            return False
        # `bound` is "all of", every other condition is "any of": the subset runs the other way.
        if key == "bound":
            if not set(values) <= set(other):
                return False
        elif not set(other) <= set(values):
            return False
    return True


def _node_at(root: yaml.Node, loc: Sequence[str | int], key: bool = False) -> yaml.Node:
    """The deepest node along `loc`; with `key`, the key node of the last step (for unknown keys)."""
    node = root
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if found is None:
                break
            node = found[0] if key and last else found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return node


def _fields_at(loc: Sequence[str | int]) -> tuple[str, ...]:
    """The field names the schema allows at `loc`, found by walking the models' annotations."""
    model: type[BaseModel] = RuleFile
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        nested = _model_in(info.annotation) if info is not None else None
        if nested is None:
            return ()
        model = nested
    return tuple(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _suggest(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(known)})" if known else ""


def _at(file: str, node: yaml.Node, message: str) -> RuleError:
    return RuleError(file, node.start_mark.line + 1, node.start_mark.column + 1, message)

"""Load rule files strictly, reporting every error at once as `path:line:col: message`.

Positions come from the YAML node tree (`yaml.compose`), walked alongside pydantic's error locations.
A folder holds several files: every `*.yaml` in it (not subfolders), tried in order of their `order:`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from records.plan import Bypass, CapScope
from records.topics import CHANNELS, Category, Priority
from rules.errors import ParsedFile, RuleError, RuleFileError, at, node_at, suggest
from rules.lookalikes import Lookalike, first_non_ascii
from rules.schema import NamedStrategy, RuleFile, Ruleset
from rules.semantics import in_order, placed_rules, semantic_errors
from rules.source import Loc, compose, duplicate_keys, empty_values, punctuation_in, source_text

__all__ = [
    "RuleError", "RuleFileError", "check", "load_ruleset", "rule_files", "ruleset_version", "template_names",
]

_CHANNELS: tuple[str, ...] = CHANNELS
_VOCABULARY: dict[str, tuple[str, tuple[str, ...]]] = {
    "category": ("category", get_args(Category)),
    "priority": ("priority", get_args(Priority)),
    "channels": ("channel", _CHANNELS),
    "channel_pref": ("channel", _CHANNELS),
    "bound": ("channel", _CHANNELS),
    "first_of": ("channel", (*_CHANNELS, "preferred")),
    "bypass": ("bypass", get_args(Bypass)),
    "urgent_bypass": ("bypass", get_args(Bypass)),
    "scope": ("cap scope", get_args(CapScope)),
    "on_exceed": ("on_exceed action", ("delay", "drop")),
    "action": ("quiet hours action", ("defer", "drop")),
    "if_not": ("fallback condition", ("delivered", "read", "clicked")),
    "if": ("fallback condition", ("failed",)),
    "key": ("pace key", ("campaign", "app", "type", "rule")),
    "over": ("over-budget action", ("drop", "hold", "cheaper")),
    "near": ("near-budget action", ("send", "cheaper")),
    "costs": ("channel", _CHANNELS),  # its keys
}
"""Closed vocabularies by field name: what an unknown value is called, and the known values."""


def load_ruleset(path: str | Path, templates: Collection[str] | None = None) -> Ruleset:
    """Load a rule file or folder; raise `RuleFileError` with every problem if anything is wrong.

    `templates` (names, or names with their channel parts from `template_names(folder)`) turns on
    the unknown-template check, and with parts, the check that a template has a part for each channel
    a rule may render it for.
    """
    ruleset, errors = _load(Path(path), templates)
    if errors or ruleset is None:
        raise RuleFileError(errors)
    return ruleset


def check(paths: Iterable[str | Path], templates: Collection[str] | None = None) -> list[RuleError]:
    """Every error in the given rule files or folders; each path is checked as one ruleset."""
    errors: list[RuleError] = []
    for path in paths:
        errors.extend(_load(Path(path), templates)[1])
    return errors


def template_names(folder: str | Path) -> dict[str, frozenset[str]]:
    """The templates of a folder by name, with the channels each has a part for (loading checks them)."""
    from channels.templates import TemplateCatalog

    return TemplateCatalog(Path(folder)).parts()


def rule_files(path: Path) -> list[Path]:
    """The files a rules setting names: the file itself, or every `*.yaml` directly in the folder."""
    if path.is_dir():
        return sorted(p for p in path.glob("*.yaml") if p.is_file())
    return [path] if path.is_file() else []


def ruleset_version(contents: Sequence[tuple[str, bytes]]) -> str:
    """The version of a ruleset: a hash of its files' names and bytes, so any edit changes it."""
    digest = hashlib.blake2b(digest_size=4)
    for name, raw in sorted(contents):
        digest.update(name.encode() + b"\0" + raw + b"\0")
    return digest.hexdigest()


def _load(path: Path, templates: Collection[str] | None) -> tuple[Ruleset | None, list[RuleError]]:
    files = rule_files(path)
    if not files:
        message = "no *.yaml rule files in this folder" if path.is_dir() else "no such rule file or folder"
        return None, [RuleError(str(path), 1, 1, message)]
    errors: list[RuleError] = []
    parsed: list[ParsedFile] = []
    contents: list[tuple[str, bytes]] = []
    for file in files:
        try:
            raw = file.read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(RuleError(str(file), 1, 1, f"cannot read rule file: {exc}"))
            continue
        contents.append((file.name, raw))
        one, file_errors = _parse(str(file), text)
        errors.extend(file_errors)
        if one is not None:
            parsed.append(one)
    errors.extend(semantic_errors(parsed, templates))
    if errors:
        return None, sorted(errors, key=lambda e: (e.file, e.line, e.column))
    ordered = in_order(parsed)
    placed = placed_rules(parsed)
    ruleset = Ruleset(
        name="+".join(dict.fromkeys(f.content.ruleset for f in ordered)),
        version=ruleset_version(contents),
        rules=tuple(p.rule for p in placed),
        origins={p.rule.id: p.origin for p in placed},
        quiet_hours=tuple(w for f in ordered for w in f.content.quiet_hours),
        caps=tuple(c for f in ordered for c in f.content.caps),
        urgent_bypass=frozenset(b for f in ordered for b in f.content.urgent_bypass or ()),
        strategies=tuple(
            NamedStrategy(name, spec, f.key_line(("strategies", name)))
            for f in ordered
            for name, spec in f.content.strategies.items()
        ),
    )
    # Built through the engine as deployed, so an engine limit is an error here, not on a live event.
    from rules.engine import engine_problems

    where = {p.rule.id: p for p in placed}
    refused = [where[rule_id].error(message) for rule_id, message in engine_problems(ruleset)]
    return (None, refused) if refused else (ruleset, [])


def _parse(file: str, text: str) -> tuple[ParsedFile | None, list[RuleError]]:
    root, data, errors = compose(file, text)
    if errors:
        return None, errors
    if root is None:
        return None, [RuleError(file, 1, 1, "empty rule file: expected 'ruleset:' and 'rules:'")]
    empty = list(empty_values(file, root))
    errors = [error for _, error in empty] + list(duplicate_keys(file, root))
    try:
        rule_file = RuleFile.model_validate(data)
    except ValidationError as exc:
        # An empty value is reported once, at itself: not again by the model holding it.
        blank = [loc for loc, _ in empty]
        errors.extend(
            _from_pydantic(file, root, dict(err)) for err in exc.errors()
            if not any(_nested(tuple(err["loc"]), loc) for loc in blank)
        )
        return None, sorted(errors, key=lambda e: (e.line, e.column))
    if errors:
        return None, sorted(errors, key=lambda e: (e.line, e.column))
    return ParsedFile(file, root, rule_file), []


def _nested(a: Loc, b: Loc) -> bool:
    """One location holds the other (or they are the same)."""
    return a[: len(b)] == b or b[: len(a)] == a


def _from_pydantic(file: str, root: yaml.Node, err: dict[str, Any]) -> RuleError:
    loc: Loc = tuple(err["loc"])
    kind: str = err["type"]
    if kind == "rule_place":  # a model's check about one of its keys: reported at that key
        loc = (*loc, *err["ctx"]["at"])
    value = err.get("input")
    field = next((part for part in reversed(loc) if isinstance(part, str)), "")
    mapping_key = field == "[key]" and len(loc) >= 3
    if mapping_key:  # a mapping's key (e.g. a channel of `costs`): named by its mapping, shown at the key
        field, loc = str(loc[-3]), loc[:-1]
    node = node_at(
        root, loc, key=mapping_key or (kind in ("extra_forbidden", "rule_place") and isinstance(loc[-1], str))
    )
    written = source_text(node)
    lookalike = first_non_ascii(str(loc[-1]) if kind == "extra_forbidden" else written)

    punctuation = punctuation_in(file, node) if kind != "extra_forbidden" else None
    if punctuation is not None:
        return punctuation
    if lookalike is not None and kind in _ASCII_ONLY:
        return _non_ascii(file, node, lookalike, kind, loc, field)
    if kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        message = f"unknown field {loc[-1]!r}" + suggest(str(loc[-1]), allowed)
    elif kind == "literal_error" and field in _VOCABULARY:
        noun, known = _VOCABULARY[field]
        message = f"unknown {noun} {value!r}" + suggest(str(value), known)
    elif kind == "missing":
        message = f"missing required field {loc[-1]!r}"
        node = node_at(root, loc[:-1])
    elif kind == "too_short":
        least = int(err.get("ctx", {}).get("min_length", 1))
        message = f"'{field}' is empty: list at least one value" if least <= 1 else (
            f"'{field}' needs at least {least} entries"
        )
    elif kind == "list_type":
        example = f", e.g. [{value}]" if isinstance(value, str) else ""
        got = f"got {_shape(value)} {written}" if isinstance(value, dict) else f"got {written}"
        message = f"'{field}' must be a list{example}" if example else f"'{field}' must be a list, {got}"
    elif kind == "string_pattern_mismatch" and field in ("id", "name"):
        noun = "rule id" if field == "id" else "name"
        fixed = re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")
        example = f" (e.g. {fixed!r})" if fixed else ""
        message = f"{noun} {value!r} may only hold lowercase letters, digits and '-'{example}"
    elif kind == "string_pattern_mismatch":
        message = f"'{field}' value {value!r} may only hold letters, digits and _ . : -"
    elif kind == "string_type":
        message = f"'{field}' must be text, " + _not_text(value, written)
    elif kind in ("int_type", "bool_type", "float_type"):
        wanted = {"int_type": "a whole number", "bool_type": "true or false", "float_type": "a number"}[kind]
        message = f"'{field}' must be {wanted}, got {written}"
    elif kind in _BOUNDS:
        bound = next(iter(err.get("ctx", {}).values()), "")
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        message = f"'{field}' must be {_BOUNDS[kind]} {bound}, got {written}"
    elif kind in ("model_type", "dict_type"):
        subject = f"'{field}'" if field else "the file"
        message = f"{subject} must be a mapping of keys to values, got {_shape(value)} {written}"
    elif kind == "rule_value":  # a field's own parser (durations, limits, clock times)
        message = f"'{field}': {err['msg']}"
    elif kind in ("value_error", "rule_place"):  # a model's check, naming its own subject
        message = str(err["msg"]).removeprefix("Value error, ")
    else:
        message = f"'{field}': {err['msg']}" if field else str(err["msg"])
    return at(file, node, message)


_BOUNDS = {
    "greater_than": "more than", "greater_than_equal": "at least",
    "less_than": "less than", "less_than_equal": "at most",
}
_ASCII_ONLY = ("extra_forbidden", "literal_error", "string_pattern_mismatch", "rule_value")
"""Error kinds about a key or a word of the language, which are ASCII: a look-alike explains them."""


def _non_ascii(file: str, node: yaml.Node, found: Lookalike, kind: str, loc: Loc, field: str) -> RuleError:
    """At the character itself: `whеn` (Cyrillic е) is not a misspelling of `when` but a look-alike."""
    subject = f"key {loc[-1]!r}" if kind == "extra_forbidden" else f"'{field}' value {source_text(node)!r}"
    # The node starts at its first character, or at an opening quote or bracket before it.
    written = source_text(node, limit=10_000)
    offset = found.index if kind == "extra_forbidden" else written.find(found.char)
    twin = f": type {found.twin!r}" if found.twin.isascii() and found.twin != str(loc[-1]) else ""
    message = f"{subject} contains {found.describe()}, which only looks like ASCII{twin}"
    return RuleError(file, node.start_mark.line + 1, node.start_mark.column + 1 + max(offset, 0), message)


def _shape(value: object) -> str:
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else "the value"


def _not_text(value: object, written: str) -> str:
    if isinstance(value, bool | int | float):
        reads = str(value).lower() if isinstance(value, bool) else "a number"
        return f"got {written}, which YAML reads as {reads}: put it in quotes, e.g. '{written}'"
    if isinstance(value, list | dict):
        return f"got {_shape(value)} {written}: write one value, without brackets"
    return f"got {written}"


def _fields_at(loc: Sequence[str | int]) -> tuple[str, ...]:
    """The field names the schema allows at `loc`, found by walking the models' annotations."""
    model: type[BaseModel] = RuleFile
    keyed = False
    for part in loc:
        if isinstance(part, int) or keyed:  # a list index, or a name in a mapping of names (strategies)
            keyed = False
            continue
        info = next((i for n, i in model.model_fields.items() if (i.alias or n) == part), None)
        keyed = info is not None and get_origin(info.annotation) is dict
        nested = _model_in(info.annotation) if info is not None else None
        if nested is None:
            return ()
        model = nested
    return tuple(info.alias or name for name, info in model.model_fields.items())


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None

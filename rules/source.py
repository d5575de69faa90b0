"""A rule file's YAML read into a node tree, with the mistakes YAML lets through found at their place.

YAML is forgiving where a rule author is not helped by it: it reads a key left with no value as null,
keeps the last of two equal keys, reports an unclosed quote at the end of the file and a full-width
colon as a confusing parse error. Each of these becomes one error at the place the author must change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import yaml

from rules.errors import RuleError, at
from rules.lookalikes import PUNCTUATION, Lookalike, ascii_twin, in_line

Loc = tuple[str | int, ...]


class RuleYaml(yaml.SafeLoader):
    """YAML 1.1 without base-60 numbers: `22:00` stays the text "22:00" instead of becoming 1320."""


_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
RuleYaml.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _NUMBERS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RuleYaml.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
RuleYaml.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_NULL = "tag:yaml.org,2002:null"


def compose(file: str, text: str) -> tuple[yaml.Node | None, object, list[RuleError]]:
    """The node tree and the data of a rule file, or the one YAML error at its place."""
    loader = RuleYaml(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        return None, None, [_yaml_error(file, text, exc)]
    finally:
        loader.dispose()
    return root, data, []


def _yaml_error(file: str, text: str, exc: yaml.MarkedYAMLError) -> RuleError:
    problem, context = exc.problem_mark, exc.context_mark
    mark = problem or context
    if mark is None:
        return RuleError(file, 1, 1, f"invalid YAML: {exc.problem or exc}")
    lines = text.splitlines()
    lookalike = _lookalike_before(lines, mark, context)
    if lookalike is not None:
        number, index = lookalike
        return lookalike_error(file, number, index, lines[number][index])
    if _tab_at(lines, mark):
        message = "a tab: YAML indents and separates with spaces only"
        return RuleError(file, mark.line + 1, mark.column + 1, message)
    opened = text[context.index] if context is not None and context.index < len(text) else ""
    if context is not None and exc.context == "while scanning a quoted scalar":
        # The parser notices at the end of the file; the author must close the quote where it opened.
        message = f"the quote {opened} opened here is never closed: end the text with {opened}"
        return RuleError(file, context.line + 1, context.column + 1, message)
    if context is not None and problem is not None and opened in "[{" and problem.line > context.line:
        closing = "]" if opened == "[" else "}"
        message = (
            f"the {opened} opened here is not closed: end it with {closing} "
            f"(YAML read on to line {problem.line + 1}, column {problem.column + 1})"
        )
        return RuleError(file, context.line + 1, context.column + 1, message)
    detail = " ".join(part for part in (exc.context, exc.problem) if part)
    return RuleError(file, mark.line + 1, mark.column + 1, f"invalid YAML: {detail}")


def _lookalike_before(lines: list[str], mark: yaml.Mark, context: yaml.Mark | None) -> tuple[int, int] | None:
    """A look-alike of ':' or ',' (a Chinese input method's) near where YAML gave up is the cause."""
    first = context.line if context is not None and 0 <= mark.line - context.line <= 3 else mark.line - 1
    for number in range(mark.line, max(first, 0) - 1, -1):
        index = in_line(lines[number]) if number < len(lines) else None
        if index is not None:
            return number, index
    return None


def _tab_at(lines: list[str], mark: yaml.Mark) -> bool:
    line = lines[mark.line] if mark.line < len(lines) else ""
    return mark.column < len(line) and line[mark.column] == "\t"


def lookalike_error(file: str, number: int, index: int, char: str) -> RuleError:
    """`char` at 0-based line `number`, column `index` looks like YAML punctuation but is not."""
    looks = ascii_twin(char).strip()
    fix = f"type {looks!r} in its place" if looks else "type a plain space in its place"
    described = Lookalike(index, char, looks).describe()
    return RuleError(file, number + 1, index + 1, f"{described} is not YAML punctuation: {fix}")


def empty_values(file: str, node: yaml.Node, loc: Loc = ()) -> Iterator[tuple[Loc, RuleError]]:
    """Every key or list item left with no value (or null), at the key or the item: never "no condition"."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
            if _is_null(value):
                yield (*loc, name), at(file, key, _no_value(repr(name), value, name))
            else:
                yield from empty_values(file, value, (*loc, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            if _is_null(item):
                owner = next((part for part in reversed(loc) if isinstance(part, str)), "the list")
                message = _no_value(f"item {index + 1} of {owner!r}", item, None)
                yield (*loc, index), at(file, item, message)
            else:
                yield from empty_values(file, item, (*loc, index))


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


def _no_value(subject: str, node: yaml.Node, key: str | None) -> str:
    said = "has no value" if node.value == "" else f"is {node.value}, which YAML reads as no value"
    if key in ("when", "match"):
        return f"{subject} {said}: write its conditions, or {{}} to match every delivery"
    if key is None:
        return f"{subject} {said}: write the value or remove the '-' line"
    return f"{subject} {said}: write a value or remove the key (an empty key never means 'any')"


def duplicate_keys(file: str, node: yaml.Node) -> Iterator[RuleError]:
    """PyYAML silently keeps the last of two equal keys; an author almost never means that."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value in seen:
                first = seen[key.value].start_mark
                yield at(file, key, f"duplicate key {key.value!r} (first at line {first.line + 1}): keep one")
            seen.setdefault(str(key.value), key)
            yield from duplicate_keys(file, value)
    elif isinstance(node, yaml.SequenceNode):
        values: dict[str, yaml.Node] = {}
        for item in node.value:
            if isinstance(item, yaml.ScalarNode) and item.tag != _NULL:
                if item.value in values:
                    first = values[item.value].start_mark
                    yield at(file, item, f"{item.value!r} is listed twice (first at line {first.line + 1}, "
                             f"column {first.column + 1}): keep one")
                values.setdefault(item.value, item)
            yield from duplicate_keys(file, item)


def source_text(node: yaml.Node, limit: int = 60) -> str:
    """The value as the author wrote it (quotes, brackets and all), on one line and cut at `limit`."""
    start, end = node.start_mark, node.end_mark
    buffer = getattr(start, "buffer", None)
    if isinstance(buffer, str) and end is not None:
        text = " ".join(buffer[start.index : end.index].split())
    else:
        text = str(node.value)
    return text if len(text) <= limit else text[: limit - 3] + "..."





def punctuation_in(file: str, node: yaml.Node) -> RuleError | None:
    """A look-alike of YAML punctuation inside a value the schema refused (`- id： a` is one text)."""
    start, end = node.start_mark, node.end_mark
    buffer = getattr(start, "buffer", None)
    if not isinstance(buffer, str) or end is None:
        return None
    index = next((i for i in range(start.index, end.index) if buffer[i] in PUNCTUATION), None)
    if index is None:
        return None
    line_start = buffer.rfind("\n", 0, index) + 1
    return lookalike_error(file, buffer.count("\n", 0, index), index - line_start, buffer[index])

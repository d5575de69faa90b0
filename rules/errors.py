"""Rule-file errors, each at a file, line and column, and how to find the place of a value."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from rules.schema import RuleFile


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
class ParsedFile:
    """A rule file that passed the schema, with its YAML node tree for positions."""

    path: str
    root: yaml.Node
    content: RuleFile

    def error(self, loc: Sequence[str | int], message: str, key: bool = False) -> RuleError:
        """An error at the value `loc` leads to (with `key`, at the key of its last step)."""
        return at(self.path, node_at(self.root, loc, key), message)

    def line_of(self, loc: Sequence[str | int]) -> str:
        return f"{self.path}:{node_at(self.root, loc).start_mark.line + 1}"

    def key_line(self, loc: Sequence[str | int]) -> str:
        """`file:line` of the key `loc` ends at (a strategy's name, whose value starts a line later)."""
        return f"{self.path}:{node_at(self.root, loc, key=True).start_mark.line + 1}"


def node_at(root: yaml.Node, loc: Sequence[str | int], key: bool = False) -> yaml.Node:
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


def at(file: str, node: yaml.Node, message: str) -> RuleError:
    return RuleError(file, node.start_mark.line + 1, node.start_mark.column + 1, message)


def suggest(word: str, known: Sequence[str]) -> str:
    """` (did you mean 'x'?)`, or the list of known values when none is close."""
    close = difflib.get_close_matches(word, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(known)})" if known else ""

"""What every YAML file that people edit (providers, attribution, alerts) needs beyond its schema:
duplicate keys refused, and problems located at file:line:column."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class LocatedProblem:
    """One problem in a file people edit, at a 1-based line and column."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class FileProblems(ValueError):
    """A file that does not load; `errors` holds every problem in it, one per line of the message."""

    def __init__(self, errors: Sequence[LocatedProblem]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def duplicate_keys(node: yaml.Node) -> Iterator[yaml.ScalarNode]:
    """The second and later of equal keys in any mapping: PyYAML silently keeps the last of them, and a
    person editing the file never means that."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    yield key
                seen.add(key.value)
            yield from duplicate_keys(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from duplicate_keys(item)

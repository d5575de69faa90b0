"""Checks every YAML file that people edit (providers, attribution) needs beyond its schema."""

from __future__ import annotations

from collections.abc import Iterator

import yaml


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

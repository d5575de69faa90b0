"""The named strategies of a ruleset as the composer, the API and `rules strategies` show them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rules.schema import NamedStrategy, duration_text


def strategy_dict(named: NamedStrategy) -> dict[str, Any]:
    """Name, description, the first send's channels, the steps (durations as `5m`) and `file:line`."""
    spec = named.spec
    return {
        "name": named.name,
        "description": spec.description,
        "channels": [str(c) for c in spec.channels] if spec.channels else None,
        "first_of": [str(c) for c in spec.first_of] if spec.first_of else None,
        "steps": [
            {
                "step": number,
                "after": duration_text(step.after),
                "condition": step.condition,
                "first_of": [str(c) for c in step.first_of],
                "template": step.template,
            }
            for number, step in enumerate(spec.fallback, start=1)
        ],
        "origin": named.origin,
    }


def render(strategies: Sequence[NamedStrategy]) -> str:
    """One block per strategy: its first send, then each step in words."""
    if not strategies:
        return "no named strategies: define them under 'strategies:' in a rule file (docs/rules.md)"
    lines: list[str] = []
    for named in strategies:
        spec = named.spec
        first = f"each of {', '.join(spec.first)}" if spec.channels else f"first of {', '.join(spec.first)}"
        lines.append(f"{named.name}  send on {first}  [{named.origin}]")
        if spec.description:
            lines.append(f"  {spec.description}")
        for number, step in enumerate(spec.fallback, start=1):
            template = f" with template {step.template}" if step.template else ""
            lines.append(
                f"  step {number}  after {duration_text(step.after)} if {step.condition.replace('_', ' ')}: "
                f"first of {', '.join(step.first_of)}{template}"
            )
        if not spec.fallback:
            lines.append("  no fallback steps")
    return "\n".join(lines)

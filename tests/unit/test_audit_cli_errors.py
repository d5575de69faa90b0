"""Mistaken `switchboard audit` and `dead-letters` invocations: one line naming what is wrong, exit 1,
before any service is reached (none runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_cli_errors import env, mistake

__all__ = ["env"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["audit", "--since", "yesterday"], "since='yesterday' is not a time"),
        (["audit", "--limit", "5000"], "limit=5000: give 1 to 1000"),
        (["audit", "--outcome", "maybe"], "outcome='maybe': choose ok, denied, failed"),
        (["audit", "--cursor", "%%"], "cursor is not one this API gave"),
        (["dead-letters", "show", "seven"], "letter id 'seven' is not PARTITION-OFFSET"),
        (["dead-letters", "list", "--stage", "ingets"], "--stage 'ingets': choose"),
        (["dead-letters", "replay"], "give letter ids, or select letters"),
        (["dead-letters", "replay", "1-2", "--app", "lms"], "give letter ids, or select letters"),
        (["dead-letters", "replay", "1-2", "3-4", "--event", "fix.json"], "--event corrects one letter"),
    ],
)
def test_mistakes_are_one_line(env: dict[str, str], args: list[str], words: str) -> None:
    assert words in mistake(args, env)


def test_a_corrected_event_that_is_not_json(env: dict[str, str], tmp_path: Path) -> None:
    fixed = tmp_path / "fixed.json"
    fixed.write_text("{not json")
    assert "fixed.json: not a JSON event" in mistake(
        ["dead-letters", "replay", "1-2", "--event", str(fixed)], env
    )

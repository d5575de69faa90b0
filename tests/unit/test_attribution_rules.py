"""The attribution file: the shipped one loads, defaults hold, and every mistake is named at its place."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from analytics.attribution_rules import (
    BUILT_IN_DEFAULT,
    AttributionFileError,
    AttributionRules,
    check_attribution,
)
from settings import ROOT, Settings


def test_the_shipped_file_loads_and_is_the_default_setting() -> None:
    assert Settings().attribution == ROOT / "config" / "attribution.yaml"
    rules = AttributionRules.load(Settings().attribution)
    assert rules.for_type("enrolment").model == "first_touch"
    assert rules.for_type("order").windows.of("clicked") == timedelta(days=1)
    assert rules.for_type("order").windows.of("delivered") is None
    assert rules.for_type("donation") == rules.default
    assert rules.longest == timedelta(days=14)


def test_windows_read_minutes_hours_days_and_weeks(tmp_path: Path) -> None:
    path = tmp_path / "attribution.yaml"
    path.write_text(
        "types:\n  order:\n    model: first_touch\n"
        "    windows: {clicked: 30m, read: 36h, opened: 2d, delivered: 1w}\n"
    )
    rule = AttributionRules.load(path).for_type("order")
    assert [rule.windows.of(s) for s in ("clicked", "read", "opened", "delivered")] == [
        timedelta(minutes=30), timedelta(hours=36), timedelta(days=2), timedelta(weeks=1)
    ]
    assert rule.model == "first_touch"
    assert AttributionRules.load(path).default == BUILT_IN_DEFAULT


def test_an_empty_file_is_the_built_in_default(tmp_path: Path) -> None:
    path = tmp_path / "attribution.yaml"
    path.write_text("# nothing yet\n")
    assert AttributionRules.load(path) == AttributionRules()


@pytest.mark.parametrize(("text", "expected"), [
    ("default:\n  modle: last_touch\n  windows: {clicked: 7d}\n",
     ["2:3: unknown field 'modle' (did you mean 'model'?)"]),
    ("types:\n  payment:\n    windows: {clicked: 7days}\n",
     ["3:24: 'clicked': '7days' is not a window: write a whole number with m, h, d or w, e.g. 7d"]),
    ("types:\n  payment:\n    windows: {clicked: 400d}\n",
     ["3:24: 'clicked': '400d': a window is more than 0 and at most 366d"]),
    ("types:\n  payment:\n    model: best_touch\n    windows: {red: 3d}\n",
     ["3:12: 'model' must be last_touch or first_touch, got 'best_touch'",
      "4:15: unknown field 'red' (did you mean 'read'?)"]),
    ("types:\n  payment: {model: last_touch}\n", ["2:12: missing required field 'windows'"]),
    ("types:\n  payment:\n    windows: {}\n",
     ["3:5: 'payment': windows needs at least one of clicked, read, opened, delivered"]),
    ("types:\n  pay ment: {windows: {clicked: 1d}}\n",
     ["2:3: conversion type 'pay ment' may only hold letters, digits and _ . : -"]),
    ("types:\n  payment: {windows: {clicked: 1d}}\n  payment: {windows: {read: 1d}}\n",
     ["3:3: duplicate key 'payment'"]),
    ("types: [payment]\n", ["1:8: 'types' must be a mapping of keys to values"]),
    ("types:\n  payment: {windows: {clicked: 1d}\n", None),
])
def test_every_mistake_is_named_at_its_line_and_column(
    tmp_path: Path, text: str, expected: list[str] | None
) -> None:
    path = tmp_path / "attribution.yaml"
    path.write_text(text)
    with pytest.raises(AttributionFileError) as caught:
        AttributionRules.load(path)
    lines = str(caught.value).splitlines()
    assert all(line.startswith(f"{path}:") for line in lines)
    if expected is None:
        assert "invalid YAML" in lines[0]
    else:
        assert [line.removeprefix(f"{path}:") for line in lines] == expected
    assert [str(e) for e in check_attribution(path)] == lines


def test_a_missing_file_is_one_error_naming_it(tmp_path: Path) -> None:
    [error] = check_attribution(tmp_path / "nowhere.yaml")
    assert str(error).startswith(f"{tmp_path / 'nowhere.yaml'}:1:1: cannot read attribution file")

"""Rule authors' own example cases, kept beside the rules in YAML and run like unit tests.

A case file holds optional `defaults` and a list of `cases`, each an event, a user and the part of
the decision the author expects; anything not named in `expect` is not checked.
"""

from __future__ import annotations

import time as clock
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from records.topics import CHANNELS, ChannelName, EventCore
from rules.engine import Decision, DecisionRequest, RuleEngine
from rules.schema import duration_text, parse_duration
from state.users import User


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Expect(_Strict):
    """The part of the decision a case checks."""

    rule: str | None = None
    channels: list[ChannelName] | None = None
    suppressed: bool | None = None
    template: str | None = None
    variant: str | None = None
    held_out: bool | None = None
    """True: the recipient falls into the rule's control share and receives nothing."""
    strategy: str | None = None
    """The named strategy that gave the channels and fallback steps ("" for none)."""
    reasons: list[str] | None = None
    """Each must be among the decision's reasons."""
    plan: dict[str, Any] | None = None
    """A subset of the plan: durations as `1d`, clock times as "22:00"."""


class Setting(_Strict):
    now: datetime | None = None
    allowed: list[ChannelName] | None = None
    available: list[ChannelName] | None = None


class Case(Setting):
    name: Annotated[str, Field(min_length=1)]
    event: dict[str, Any]
    user: User
    last_active: str | None = None
    """How long ago the user was last active (`2d`), or an ISO time; absent: never."""
    expect: Expect


class CaseFile(_Strict):
    defaults: Setting = Field(default_factory=Setting)
    cases: Annotated[list[Case], Field(min_length=1)]


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


DEFAULT_NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def case_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.yaml") if p.is_file())


def run_cases(engine: RuleEngine, files: Sequence[Path]) -> list[CaseResult]:
    """Every case of every file, in order; a file that does not parse is one failed result."""
    results: list[CaseResult] = []
    for path in files:
        try:
            parsed = CaseFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            results.append(CaseResult(str(path), "(file)", (f"cannot read cases: {_short(exc)}",)))
            continue
        for case in parsed.cases:
            try:
                request = case_request(case, parsed.defaults)
            except (ValidationError, ValueError) as exc:
                results.append(CaseResult(str(path), case.name, (f"bad case: {_short(exc)}",)))
                continue
            (decision,) = engine.decide([request])
            results.append(CaseResult(str(path), case.name, tuple(compare(case.expect, decision))))
    return results


def case_request(case: Case, defaults: Setting) -> DecisionRequest:
    raw = {"event_id": "case", "template": "unspecified", **case.event}
    event = EventCore.model_validate({k: v for k, v in raw.items() if k != "audience"})
    now = case.now or defaults.now or DEFAULT_NOW
    every = frozenset(CHANNELS)
    return DecisionRequest(
        event=event,
        user=case.user,
        allowed_channels=frozenset(case.allowed or defaults.allowed or every),
        available_channels=frozenset(case.available or defaults.available or every),
        now=now,
        last_active_at=last_active(case.last_active, now),
    )


def last_active(value: str | None, now: datetime) -> datetime | None:
    """`2d` (that long ago) or an ISO time with offset; None stays None (never active)."""
    if value is None:
        return None
    try:
        return now - parse_duration(value)
    except ValueError:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError(f"last_active {value!r} needs a timezone offset") from None
        return moment


def compare(expect: Expect, decision: Decision) -> list[str]:
    """What differs between the expectation and the decision, one line each."""
    problems = []
    actual: dict[str, Any] = {
        "rule": decision.rule_id,
        "channels": [channel for channel, _ in decision.channels],
        "suppressed": decision.suppressed,
        "template": decision.template,
        "variant": decision.plan.variant,
        "held_out": decision.held_out,
        "strategy": decision.strategy,
    }
    for key, value in actual.items():
        wanted = getattr(expect, key)
        if wanted is not None and wanted != value:
            problems.append(f"{key}: expected {wanted!r}, got {value!r}")
    for reason in expect.reasons or ():
        if reason not in decision.reasons:
            problems.append(f"reasons: {reason!r} not among {list(decision.reasons)!r}")
    if expect.plan is not None:
        problems.extend(_subset("plan", expect.plan, decision.plan.model_dump()))
    return problems


def _subset(where: str, wanted: Any, actual: Any) -> list[str]:
    if isinstance(wanted, dict) and isinstance(actual, dict):
        problems = []
        for key, value in wanted.items():
            if key not in actual:
                problems.append(f"{where}.{key}: no such plan field (known: {', '.join(actual)})")
            else:
                problems.extend(_subset(f"{where}.{key}", value, actual[key]))
        return problems
    if isinstance(wanted, list) and isinstance(actual, tuple | list | frozenset | set):
        if isinstance(actual, frozenset | set):
            same = set(wanted) == actual
            return [] if same else [f"{where}: expected {sorted(wanted)}, got {sorted(actual)}"]
        if len(wanted) != len(actual):
            return [f"{where}: expected {len(wanted)} entries, got {len(actual)}: {_plain(actual)}"]
        pairs = enumerate(zip(wanted, actual, strict=True))
        return [p for i, (w, a) in pairs for p in _subset(f"{where}[{i}]", w, a)]
    if isinstance(actual, timedelta) and isinstance(wanted, str):
        wanted = parse_duration(wanted)
    elif isinstance(actual, time) and isinstance(wanted, str):
        wanted = time.fromisoformat(wanted)
    return [] if wanted == actual else [f"{where}: expected {_plain(wanted)}, got {_plain(actual)}"]


def _plain(value: Any) -> str:
    if isinstance(value, timedelta):
        return duration_text(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_plain(v)}" for k, v in value.items() if v not in (None, (), "")) + "}"
    return value if isinstance(value, str) else repr(value)


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return str(exc)


def report(results: Sequence[CaseResult], seconds: float) -> str:
    """pytest-like: one line per case, details of failures, then the counts."""
    lines = [f"{r.file}::{r.name} {'PASSED' if r.passed else 'FAILED'}" for r in results]
    failed = [r for r in results if not r.passed]
    for result in failed:
        lines += ["", f"FAILED {result.file}::{result.name}", *(f"  {p}" for p in result.problems)]
    counts = f"{len(results) - len(failed)} passed" + (f", {len(failed)} failed" if failed else "")
    lines += ["", f"{counts} in {seconds:.2f}s"]
    return "\n".join(lines)


def timed_run(engine: RuleEngine, files: Sequence[Path]) -> tuple[list[CaseResult], float]:
    start = clock.perf_counter()
    results = run_cases(engine, files)
    return results, clock.perf_counter() - start

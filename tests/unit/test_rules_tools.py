"""The rule authors' tools: check, explain, test (cases) through the typer app, and the reload watcher."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rules.cli import rules_cli
from rules.loader import load_ruleset
from rules.watch import RulesWatcher

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

RULES = (
    "ruleset: t\nrules:\n  - id: fees\n    when: {type: [fee.due]}\n    then:\n      channels: [inbox]\n"
    "      fallback: [{after: 1d, if_not: read, first_of: [email]}]\n"
    "  - id: rest\n    then: {channels: [email]}\n"
)


@pytest.fixture(autouse=True)
def _no_real_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SWITCHBOARD_TEMPLATES", str(ROOT / "templates"))
    monkeypatch.setenv("SWITCHBOARD_RULES", str(ROOT / "rules" / "default.yaml"))


def test_check_passes_on_the_shipped_rules() -> None:
    result = runner.invoke(rules_cli, ["check", str(ROOT / "rules")])
    assert (result.exit_code, result.output.strip()) == (0, "rules ok")


def test_check_prints_every_error_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "ruleset: t\nrules:\n  - id: a\n    when: {categroy: [alert]}\n    then:\n"
        "      channels: [inbox]\n      template: fee_du\n"
    )
    result = runner.invoke(rules_cli, ["check", str(path)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{path}:4:12: unknown field 'categroy' (did you mean 'category'?)",
    ]
    path.write_text(
        "ruleset: t\nrules:\n  - id: a\n    then:\n      channels: [inbox]\n      template: fee_du\n"
    )
    result = runner.invoke(rules_cli, ["check", str(path)])
    assert (result.exit_code, result.output.strip()) == (
        1,
        f"{path}:6:17: unknown template 'fee_du' (did you mean 'fee_due'?)",
    )


def test_shipped_cases_pass() -> None:
    result = runner.invoke(rules_cli, ["test", str(ROOT / "rules" / "default.yaml")])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert sum(line.endswith(" PASSED") for line in lines) >= 10
    assert lines[-1].startswith(f"{sum(line.endswith(' PASSED') for line in lines)} passed in ")


def test_failing_cases_are_reported_like_pytest(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "fees.yaml").write_text(
        "defaults: {available: [email, inbox]}\n"
        "cases:\n"
        "  - name: fee to inbox with an email fallback\n"
        "    event: {app: bursar, type: fee.due, category: transactional}\n"
        "    user: {user_id: u1, bindings: {inbox: u1, email: u1@x.example}}\n"
        "    expect:\n"
        "      rule: fees\n"
        "      channels: [inbox]\n"
        "      plan: {fallback: [{after: 1d, condition: not_read, channels: [email]}]}\n"
        "  - name: wrong on purpose\n"
        "    event: {app: bursar, type: fee.due, category: transactional}\n"
        "    user: {user_id: u1, bindings: {inbox: u1, email: u1@x.example}}\n"
        "    expect:\n"
        "      rule: rest\n"
        "      plan: {fallback: [{after: 2d}], keep_offline: 1d, colour: red}\n"
        "      reasons: [somebody said so]\n"
    )
    result = runner.invoke(rules_cli, ["test", str(rules), "--templates", str(tmp_path / "none")])
    assert result.exit_code == 1
    out = result.output
    case_file = tmp_path / "cases" / "fees.yaml"
    assert f"{case_file}::fee to inbox with an email fallback PASSED" in out
    assert f"FAILED {case_file}::wrong on purpose" in out
    assert "  rule: expected 'rest', got 'fees'" in out
    assert "  reasons: 'somebody said so' not among ['rule fees matched']" in out
    assert "  plan.fallback[0].after: expected 2d, got 1d" in out
    assert "  plan.keep_offline: expected 1d, got None" in out
    assert "  plan.colour: no such plan field" in out
    assert out.strip().splitlines()[-1].startswith("1 passed, 1 failed in ")


def test_a_case_file_that_does_not_parse_fails(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "bad.yaml").write_text("cases:\n  - name: x\n    evnt: {}\n")
    result = runner.invoke(rules_cli, ["test", str(rules)])
    assert result.exit_code == 1
    assert "cannot read cases: cases.0.event: Field required" in result.output


def test_explain_shows_matches_winner_decision_and_plan(tmp_path: Path) -> None:
    user = tmp_path / "u.yaml"
    user.write_text("user_id: s1\nchannel_pref: sms\nbindings: {inbox: s1, email: s1@uni.example}\n")
    result = runner.invoke(
        rules_cli,
        [
            "explain",
            "--user",
            str(user),
            "--now",
            "2026-11-23T23:00:00+08:00",
            "--available",
            "email,inbox",
            "--event",
            '{"app": "bursar", "type": "fee.due", "category": "transactional", "template": "fee_due",'
            ' "audience": {"tags": ["x"]}}',
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "=> fee-notices" in out and "matches: WINS (first match)" in out
    assert "security-alerts              no: category is 'transactional', not alert" in out
    assert "fees-and-payments            matches too, but an earlier rule won" in out
    assert "send on  inbox (s1)" in out
    assert "fallback 1   after 1d if not read: first of email" in out
    assert "cap          per-user-hourly: 20/1h per user; over it: delay" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--event", "{not json", "--user", "x.yaml"], "--event '{not json': not valid JSON or YAML"),
        (
            ["--event", '{"app": "a", "type": "t", "template": "t"}', "--user", "u.yaml"],
            "--event: category: Field required",
        ),
        (
            [
                "--event",
                '{"app": "a", "type": "t", "template": "t", "category": "notice"}',
                "--user",
                "u.yaml",
                "--available",
                "email,fax",
            ],
            "unknown channel(s) fax",
        ),
    ],
)
def test_explain_refuses_bad_input_clearly(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "u.yaml").write_text("user_id: s1\n")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = runner.invoke(rules_cli, ["explain", *args])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2
    assert message in result.output


def test_watcher_reloads_changes_and_keeps_running_rules_when_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    first = load_ruleset(path)
    watcher = RulesWatcher(tmp_path, ROOT / "templates", current=first)
    assert watcher.poll() is None  # same bytes as the running rules
    assert watcher.poll() is None

    path.write_text(RULES.replace("channels: [email]", "channels: [inbox]"))
    changed = watcher.poll()
    assert changed is not None and changed.version != first.version
    assert watcher.poll() is None and watcher.ruleset is changed

    with caplog.at_level(logging.ERROR, logger="rules.watch"):
        path.write_text(RULES.replace("first_of: [email]", "first_of: [emial]"))
        assert watcher.poll() is None
        assert watcher.poll() is None
    (record,) = [r for r in caplog.records if r.name == "rules.watch"]
    assert f"{path}:7:" in record.getMessage() and "unknown channel 'emial'" in record.getMessage()
    assert f"keeping version {changed.version}" in record.getMessage()
    assert watcher.ruleset is changed

    path.write_text(RULES)
    assert watcher.poll() == first  # fixed again: back to a valid version


def test_watcher_without_a_running_ruleset_returns_the_first_load(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    watcher = RulesWatcher(path)
    loaded = watcher.poll()
    assert loaded is not None and [r.id for r in loaded.rules] == ["fees", "rest"]
    assert watcher.poll() is None
    path.unlink()
    assert watcher.poll() is None and watcher.ruleset is loaded


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("2026-11-02T00:00:00+08:00", "2026-11-01T00:00:00+08:00", "--until must come after --since"),
        (
            "2026-11-01T00:00:00",
            "2026-11-02T00:00:00+08:00",
            "--since '2026-11-01T00:00:00' needs a timezone offset",
        ),
        ("last week", "2026-11-02T00:00:00+08:00", "--since 'last week' is not an ISO time"),
    ],
)
def test_simulate_refuses_a_bad_period_before_touching_anything(since: str, until: str, message: str) -> None:
    result = runner.invoke(
        rules_cli, ["simulate", "--since", since, "--until", until, "--rules", str(ROOT / "rules")]
    )
    assert result.exit_code == 2
    assert message in result.output


def test_simulate_refuses_broken_candidate_rules(tmp_path: Path) -> None:
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text("ruleset: c\nrules:\n  - id: a\n    then: {chanels: [inbox]}\n")
    result = runner.invoke(
        rules_cli,
        [
            "simulate",
            "--since",
            "2026-11-01T00:00+08:00",
            "--until",
            "2026-11-02T00:00+08:00",
            "--rules",
            str(candidate),
        ],
    )
    assert result.exit_code == 1
    assert f"{candidate}:4:12: unknown field 'chanels' (did you mean 'channels'?)" in result.output

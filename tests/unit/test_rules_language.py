"""The rule language's new parts are checked strictly: every error at its file:line:col, with a suggestion."""

from __future__ import annotations

from collections.abc import Collection
from datetime import time, timedelta
from pathlib import Path

import pytest

from rules.loader import check, load_ruleset

HEAD = "ruleset: u\nrules:\n  - id: a\n    then:\n"


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def messages(path: Path, templates: Collection[str] | None = None) -> list[str]:
    return [str(error) for error in check([path], templates)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (HEAD + "      channels: [inbox]\n      keep_offline: 3 days\n",
         "6:21: 'keep_offline': '3 days' is not a duration: write a number and a unit (s m h d w), "
         "e.g. 5m, 7d"),
        (HEAD + "      channels: [inbox]\n      keep_offline: 0m\n",
         "6:21: 'keep_offline': '0m' is zero: a duration must be longer than that"),
        (HEAD + "      channels: [inbox]\n      keep_offline: 30\n",
         "6:21: 'keep_offline': 30 is not a duration"),
        (HEAD + "      channels: [inbox]\n      fallback:\n"
         "        - {after: 5m, if_not: opened, first_of: [sms]}\n",
         "7:31: unknown fallback condition 'opened' (expected one of: delivered, read, clicked)"),
        (HEAD + "      channels: [inbox]\n      fallback:\n        - {after: 5m, first_of: [sms]}\n",
         "7:11: 'fallback' step needs one of if_not: delivered|read|clicked or if: failed"),
        (HEAD + "      channels: [inbox]\n      fallback:\n"
         "        - {after: 5m, iff: failed, first_of: [sms]}\n",
         "7:23: unknown field 'iff' (did you mean 'if'?)"),
        (HEAD + "      channels: [inbox]\n      fallback:\n"
         "        - {after: 1h, if: failed, first_of: [sms]}\n"
         "        - {after: 5m, if_not: read, first_of: [email]}\n",
         "8:12: 'fallback' steps run in order of 'after': step 2 (5m) must come later than step 1 (1h)"),
        (HEAD + "      channels: [inbox]\n      bypass: [quiet_hour]\n",
         "6:16: unknown bypass 'quiet_hour' (did you mean 'quiet_hours'?)"),
        (HEAD + "      channels: [inbox]\n      pace: {per_second: 0}\n",
         "6:26: 'per_second' must be more than 0, got 0"),
        (HEAD + "      channels: [inbox]\n      pace: {per_second: 5, key: campain}\n",
         "6:34: unknown pace key 'campain' (did you mean 'campaign'?)"),
        (HEAD + "      channels: [inbox]\n      quiet_hours: true\n",
         "6:20: 'quiet_hours': takes false (no quiet hours) or the id of a quiet hours window, not true"),
        (HEAD + "      suppress: x\n      keep_offline: 1d\n",
         "6:7: 'then' suppresses, so it cannot also set keep_offline"),
        (HEAD + "      variants:\n        - {name: a, weight: 1, channels: [inbox]}\n",
         "6:9: 'variants' needs at least 2 entries"),
        (HEAD + "      variants:\n        - {name: a, weight: 1}\n        - {name: b, weight: 1}\n",
         "5:7: 'then' needs exactly one of channels, first_of, suppress; got none "
         "(or give every variant but the control its own channels or first_of)"),
        (HEAD + "      channels: [inbox]\n      variants:\n        - {name: a, weight: 1}\n"
         "        - {name: a, weight: 2}\n",
         "8:12: 'variants' names must differ; used more than once: a"),
        ("ruleset: u\ncaps:\n  - id: c\n    limits: [3 per day]\n" + HEAD[11:] + "      channels: [inbox]\n",
         "4:14: 'limits': '3 per day' is not a limit: a limit is COUNT/DURATION, e.g. 3/1d or 1/1h "
         "(did you mean 3/1d?)"),
        ("ruleset: u\ncaps:\n  - id: c\n    limits: [{count: 3, window: 1d}]\n" + HEAD[11:]
         + "      channels: [inbox]\n",
         "4:14: 'limits': a limit object has the keys count and per, e.g. {count: 3, per: 1d}; "
         "got count, window"),
        ("ruleset: u\ncaps:\n  - id: c\n    scope: [users]\n    limits: [1/1h]\n" + HEAD[11:]
         + "      channels: [inbox]\n",
         "4:13: unknown cap scope 'users' (did you mean 'user'?)"),
        ("ruleset: u\ncaps:\n  - id: c\n    limits: [1/1h]\n    exempt: {categroy: [alert]}\n" + HEAD[11:]
         + "      channels: [inbox]\n",
         "5:14: unknown field 'categroy' (did you mean 'category'?)"),
        ("ruleset: u\ncaps:\n  - id: c\n    limits: [1/1h]\n    exempt: {whitelst: true}\n" + HEAD[11:]
         + "      channels: [inbox]\n",
         "5:14: unknown field 'whitelst' (did you mean 'whitelist'?)"),
        ("ruleset: u\ncaps:\n  - id: c\n    limits: [1/1h]\n    exempt: {whitelist: testers}\n" + HEAD[11:]
         + "      channels: [inbox]\n",
         "5:25: 'whitelist' must be true or false, got testers"),
        ("ruleset: u\nquiet_hours:\n  - {id: n, start: '22:00', end: '7:00'}\n" + HEAD[11:]
         + "      channels: [inbox]\n",
         "3:34: 'end': '7:00' is not a clock time: write hours and minutes in quotes, e.g. \"22:00\""),
        ("ruleset: u\nquiet_hours:\n  - {id: n, start: '22:00', end: '22:00'}\n" + HEAD[11:]
         + "      channels: [inbox]\n",
         "3:29: 'quiet_hours' window needs start and end to differ"),
        ("ruleset: u\nurgent_bypass: [caps, pacin]\n" + HEAD[11:] + "      channels: [inbox]\n",
         "2:23: unknown bypass 'pacin' (did you mean 'pacing'?)"),
        ("ruleset: u\nrules:\n  - id: a\n    when: {active_within: a week}\n    then: {channels: [inbox]}\n",
         "4:27: 'active_within': 'a week' is not a duration"),
    ],
)
def test_new_fields_are_checked_at_their_place(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, body)
    found = messages(path)
    assert any(message.startswith(f"{path}:{expected}") for message in found), found


def test_bare_clock_times_are_not_read_as_base_60_numbers(tmp_path: Path) -> None:
    # YAML 1.1 reads 22:00 as the integer 1320; the rule loader keeps it a clock time.
    path = write(
        tmp_path,
        "ruleset: u\nquiet_hours:\n  - {id: night, start: 22:00, end: 07:30, match: {category: [notice]}}\n"
        "rules:\n  - id: a\n    then: {channels: [inbox], keep_offline: 1h30m}\n",
    )
    ruleset = load_ruleset(path)
    (window,) = ruleset.quiet_hours
    assert (window.start, window.end, window.action) == (time(22, 0), time(7, 30), "defer")
    assert ruleset.rules[0].then.keep_offline == timedelta(minutes=90)


def test_limits_in_both_spellings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ruleset: u\ncaps:\n  - id: c\n    scope: []\n    limits: [3/1d, {count: 1, per: 1h}]\n"
        "    on_exceed: delay\nrules:\n  - id: a\n    then: {channels: [inbox]}\n",
    )
    (cap,) = load_ruleset(path).caps
    limits = [(limit.count, limit.window) for limit in cap.limits]
    assert limits == [(3, timedelta(days=1)), (1, timedelta(hours=1))]
    assert (cap.scope, cap.on_exceed) == ([], "delay")


SEMANTIC = [
    (  # a quiet hours window that does not exist
        "ruleset: u\nquiet_hours:\n  - {id: night, start: '22:00', end: '07:00'}\nrules:\n  - id: a\n"
        "    then: {channels: [inbox], quiet_hours: nigth}\n",
        "6:44: unknown quiet hours window 'nigth' (did you mean 'night'?)",
    ),
    (  # two windows with one id
        "ruleset: u\nquiet_hours:\n  - {id: n, start: '22:00', end: '07:00'}\n"
        "  - {id: n, start: '23:00', end: '06:00'}\nrules:\n  - id: a\n    then: {channels: [inbox]}\n",
        "4:10: duplicate quiet hours window id 'n' (first defined at ",
    ),
    (  # activity conditions that exclude each other
        "ruleset: u\nrules:\n  - id: a\n    when: {active_within: 7d, inactive_for: 30d}\n"
        "    then: {channels: [inbox]}\n",
        "3:9: rule 'a' can never match: nobody is both active within 7d and inactive for 30d",
    ),
    (  # shorter activity window is narrower: the second never wins
        "ruleset: u\nrules:\n  - id: a\n    when: {active_within: 7d}\n    then: {channels: [push]}\n"
        "  - id: b\n    when: {active_within: 1d}\n    then: {channels: [sms]}\n",
        "6:9: rule 'b' is unreachable: rule 'a' (",
    ),
    (  # a file with policies but no rules at all
        "ruleset: u\ncaps:\n  - {id: c, limits: [1/1h]}\n",
        "1:1: no rules: a ruleset needs at least one rule",
    ),
]


@pytest.mark.parametrize(("body", "expected"), SEMANTIC)
def test_semantic_errors(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, body)
    found = messages(path)
    assert any(message.startswith(f"{path}:{expected}") for message in found), found


def test_inactive_for_after_active_within_is_reachable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ruleset: u\nrules:\n  - id: a\n    when: {active_within: 7d}\n    then: {channels: [push]}\n"
        "  - id: b\n    when: {inactive_for: 7d}\n    then: {channels: [sms]}\n",
    )
    assert messages(path) == []


def test_unknown_templates_with_suggestions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ruleset: u\nrules:\n  - id: a\n    when: {template: [fee_due, fee_dew]}\n    then:\n"
        "      channels: [inbox]\n      template: feedue\n      fallback:\n"
        "        - {after: 1d, if_not: read, first_of: [sms], template: fee_short}\n",
    )
    templates = frozenset({"fee_due", "fee_due_sms", "campus_notice"})
    assert messages(path, templates) == [
        f"{path}:4:32: unknown template 'fee_dew' (did you mean 'fee_due'?)",
        f"{path}:7:17: unknown template 'feedue' (did you mean 'fee_due'?)",
        f"{path}:9:64: unknown template 'fee_short' (expected one of: campus_notice, fee_due, fee_due_sms)",
    ]
    assert messages(path) == []  # without a catalog, template names are not checked


def test_real_templates_folder_names(tmp_path: Path) -> None:
    from rules.loader import template_names

    names = template_names(Path(__file__).resolve().parents[2] / "templates")
    assert {"fee_due", "campus_notice", "security_alert"} <= set(names)
    assert {"email", "inbox"} <= names["fee_due"]


def test_a_template_without_a_part_for_a_channel_it_may_be_sent_on(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ruleset: u\nrules:\n  - id: a\n    then:\n      channels: [inbox]\n      template: notice\n"
        "      fallback:\n        - {after: 1d, if_not: read, first_of: [sms, email], template: notice}\n",
    )
    parts = {"notice": frozenset({"inbox", "email"})}
    assert messages(path, parts) == [
        f"{path}:8:71: template 'notice' has no sms part, but this may send on it (it has: email, inbox)"
    ]


def folder_file(tmp_path: Path, name: str, order: int | None, rule: str, when: str) -> Path:
    order_line = f"order: {order}\n" if order is not None else ""
    return write(
        tmp_path,
        f"ruleset: {name}\n{order_line}rules:\n  - id: {rule}\n    when: {when}\n"
        "    then: {channels: [inbox]}\n",
        f"{name}.yaml",
    )


def test_same_order_files_whose_rules_can_meet_are_refused(tmp_path: Path) -> None:
    first = folder_file(tmp_path, "a", 10, "notices", "{category: [notice]}")
    second = folder_file(tmp_path, "b", 10, "lms", "{app: [lms]}")
    (error,) = check([tmp_path])
    assert str(error) == (
        f"{second}:4:9: rule 'lms' and rule 'notices' ({first}:4) can match the same delivery, and both "
        "files have order 10: give the files different 'order:' so it is clear which wins"
    )


def test_same_order_files_with_disjoint_rules_are_fine(tmp_path: Path) -> None:
    folder_file(tmp_path, "a", 10, "notices", "{category: [notice]}")
    folder_file(tmp_path, "b", 10, "alerts", "{category: [alert]}")
    folder_file(tmp_path, "c", 5, "first", "{app: [hr]}")
    ruleset = load_ruleset(tmp_path)
    assert [r.id for r in ruleset.rules] == ["first", "notices", "alerts"]


def test_folder_files_need_an_order(tmp_path: Path) -> None:
    folder_file(tmp_path, "a", 10, "notices", "{category: [notice]}")
    second = folder_file(tmp_path, "b", None, "alerts", "{category: [alert]}")
    (error,) = check([tmp_path])
    assert str(error) == (
        f"{second}:1:1: rule files in a folder need 'order: N' (files with lower numbers are tried first)"
    )


def test_policies_merge_across_files_and_urgent_bypass_is_set_once(tmp_path: Path) -> None:
    policies = "ruleset: p\norder: 1\nurgent_bypass: [caps]\ncaps:\n  - {id: c1, limits: [1/1h]}\n"
    write(tmp_path, policies, "p.yaml")
    folder_file(tmp_path, "r", 2, "all", "{}")
    ruleset = load_ruleset(tmp_path)
    assert ([c.id for c in ruleset.caps], ruleset.urgent_bypass) == (["c1"], frozenset({"caps"}))
    twice = write(tmp_path, "ruleset: q\norder: 3\nurgent_bypass: [pacing]\n", "q.yaml")
    (error,) = check([tmp_path])
    assert str(error).startswith(f"{twice}:3:1: urgent_bypass is already set in {tmp_path / 'p.yaml'}:3")

"""Mistakes rule authors make that YAML or a loose schema let through, each refused at its place."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.loader import check

HEAD = "ruleset: u\nrules:\n  - id: a\n"
THEN = "    then: {channels: [inbox]}\n"
def cap(limit: str) -> str:
    return f"ruleset: u\ncaps:\n  - id: c\n    limits: [{limit}]\nrules:\n  - id: a\n" + THEN


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8", newline="")
    return [str(error).removeprefix(f"{path}:") for error in check([path])]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (HEAD + "    when:\n      inactive_for:\n" + THEN,
         "5:7: 'inactive_for' has no value: write a value or remove the key (an empty key never "
         "means 'any')"),
        (HEAD + "    when:\n      app: ~\n" + THEN, "5:7: 'app' is ~, which YAML reads as no value: "),
        (HEAD + "    when:\n" + THEN, "4:5: 'when' has no value: write its conditions, or {} to match every"),
        (HEAD + "    then:\n      channels: [inbox]\n      keep_offline:\n", "6:7: 'keep_offline' "
         "has no value"),
        (HEAD + "    then:\n      channels: [inbox]\n      quiet_hours:\n", "6:7: 'quiet_hours' has "
         "no value"),
        (HEAD + "    then:\n      channels:\n", "5:7: 'channels' has no value"),
        ("ruleset: u\nurgent_bypass:\nrules:\n  - id: a\n" + THEN, "2:1: 'urgent_bypass' has no value"),
        ("ruleset: u\nquiet_hours:\n  - {id: n, start: '22:00', end: '07:00', match: }\nrules:\n  - id: a\n"
         + THEN, "3:43: 'match' has no value"),
        (HEAD + "    when:\n      app:\n        - lms\n        -\n" + THEN, "7:10: item 2 of 'app' "
         "has no value"),
    ],
)
def test_a_key_left_empty_is_an_error_at_the_key(tmp_path: Path, body: str, expected: str) -> None:
    found = errors_of(tmp_path, body)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_list_emptied_by_commenting_out_its_item_is_reported_at_its_own_line(tmp_path: Path) -> None:
    # Before, `app` was None ("no condition"): rule a matched everything and rule b was reported.
    found = errors_of(
        tmp_path,
        HEAD + "    when:\n      app:\n        # - lms\n" + THEN
        + "  - id: b\n    when: {app: [hr]}\n" + THEN,
    )
    assert found == [
        "5:7: 'app' has no value: write a value or remove the key (an empty key never means 'any')"
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (HEAD + "    description: 'fees are due\n" + THEN + "  - id: b\n" + THEN,
         "4:18: the quote ' opened here is never closed: end the text with '"),
        (HEAD + '    then: {suppress: "gone}\n  - id: b\n' + THEN,
         '4:22: the quote " opened here is never closed: end the text with "'),
        (HEAD + "    then:\n      channels: [inbox]\n      fallback:\n"
         "        - {after: 1h, if: failed, first_of: [sms]}\n"
         "        - {after: 5m, if_not: read, first_of: [email]}\n",
         "8:12: 'fallback' steps run in order of 'after': step 2 (5m) must come later than step 1 (1h)"),
        (HEAD + "    then:\n      channels: [inbox]\n      first_of: [sms]\n",
         "6:7: 'then' needs exactly one of channels, first_of, suppress; got channels, first_of"),
        (HEAD + "    then:\n      first_of: [sms]\n      variants:\n        - {name: x, weight: 1}\n"
         "        - {name: x, weight: 2}\n",
         "8:12: 'variants' names must differ; used more than once: x"),
        (HEAD + "    then:\n\tchannels: [inbox]\n", "5:1: a tab: YAML indents and separates with "
         "spaces only"),
    ],
)
def test_errors_point_at_the_place_to_change(tmp_path: Path, body: str, expected: str) -> None:
    assert errors_of(tmp_path, body) == [expected]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (HEAD + "    then: {channels: [inbox], keep_offline: 99999999999d}\n",
         "4:45: 'keep_offline': '99999999999d' is too long: a duration is at most 366d"),
        (HEAD + "    then:\n      channels: [inbox]\n      fallback:\n"
         "        - {after: 9999999999w, if: failed, first_of: [sms]}\n",
         "7:19: 'after': '9999999999w' is too long: a duration is at most 366d"),
        (HEAD + "    when: {inactive_for: 367d}\n" + THEN,
         "4:26: 'inactive_for': '367d' is too long: a duration is at most 366d"),
        (cap("3/99999999999d"),
         "4:14: 'limits': '3/99999999999d': its duration '99999999999d' is too long: a duration is "
         "at most 366d"),
        (cap("99999999999999999999/1d"),
         "4:14: 'limits': '99999999999999999999/1d': the count 99999999999999999999 is too large: "
         "a limit counts at most 1,000,000,000"),
        (HEAD + "    then: {channels: [inbox], keep_offline: 1 day}\n",
         "4:45: 'keep_offline': '1 day' is not a duration: write a number and a unit (s m h d w), "
         "e.g. 5m, 7d "
         "(did you mean 1d?)"),
        (HEAD + "    then: {channels: [inbox], keep_offline: 1D}\n", "4:45: 'keep_offline': '1D' is "
         "not a duration"),
        (HEAD + "    then: {channels: [inbox], keep_offline: 2 hours 30 min}\n", "(did you mean 2h30m?)"),
        (HEAD + "    then: {channels: [inbox], keep_offline: -1d}\n",
         "4:45: 'keep_offline': '-1d' is negative: a duration is a length of time, e.g. 5m, 7d"),
        (cap("'3/day'"),
         "4:14: 'limits': '3/day' is not a limit: a limit is COUNT/DURATION, e.g. 3/1d or 1/1h (did "
         "you mean 3/1d?)"),
        (cap("0/1d"), "4:14: 'limits': '0/1d' is not a limit: its count '0' is not a whole number from 1"),
    ],
)
def test_durations_and_limits_have_stated_bounds_and_spellings(
    tmp_path: Path, body: str, expected: str
) -> None:
    found = errors_of(tmp_path, body)
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (HEAD + "    wh\u0435n: {app: [x]}\n" + THEN,  # Cyrillic е
         "4:7: key 'wh\u0435n' contains the non-ASCII character '\u0435' (U+0435 CYRILLIC SMALL LETTER IE), "
         "which only looks like ASCII: type 'when'"),
        (HEAD + "    when\uff1a {app: [x]}\n" + THEN,
         "4:9: the non-ASCII character '\uff1a' (U+FF1A FULLWIDTH COLON) is not YAML punctuation: "
         "type ':' in "
         "its place"),
        (HEAD + "    when\uff1a\n      app: [x]\n" + THEN, "4:9: the non-ASCII character '\uff1a' (U+FF1A"),
        ("ruleset: u\nrules:\n  - id\uff1a a\n" + THEN, "3:7: the non-ASCII character '\uff1a' (U+FF1A"),
        (HEAD + "    then: {channels: [email\uff0c sms]}\n", "4:28: the non-ASCII character "
         "'\uff0c' (U+FF0C"),
        (HEAD + "    then: {channels: [\u0435mail]}\n",
         "4:23: 'channels' value '\u0435mail' contains the non-ASCII character '\u0435' (U+0435 "
         "CYRILLIC SMALL "
         "LETTER IE), which only looks like ASCII: type 'email'"),
        (HEAD + "    then:\u00a0{channels: [inbox]}\n", "4:10: the non-ASCII character '\\xa0' "
         "(U+00A0 NO-BREAK SPACE)"),
        (HEAD + "    when\u200b: {app: [x]}\n" + THEN, "4:9: key 'when\\u200b' contains the "
         "non-ASCII character"),
    ],
)
def test_lookalike_characters_are_named_where_they_are(tmp_path: Path, body: str, expected: str) -> None:
    found = errors_of(tmp_path, body)
    assert len(found) == 1 and found[0].startswith(expected), found
    assert "did you mean" not in found[0]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (HEAD + "    then: {suppress: [opted out, unsubscribed]}\n",
         "4:22: 'suppress' must be text, got a list [opted out, unsubscribed]: write one value, "
         "without brackets"),
        (HEAD + "    then: {channels: [inbox], template: [fee_due]}\n",
         "4:41: 'template' must be text, got a list [fee_due]: write one value, without brackets"),
        (HEAD + "    when: {type: [123]}\n" + THEN,
         "4:19: 'type' must be text, got 123, which YAML reads as a number: put it in quotes, e.g. '123'"),
        (HEAD + "    when:\n      app: {lms: 1}\n" + THEN, "5:12: 'app' must be a list, got a "
         "mapping {lms: 1}"),
        (HEAD + "    then:\n      variants:\n        - {name: a, weight: yes, channels: [inbox]}\n"
         "        - {name: b, weight: 1, channels: [email]}\n", "6:29: 'weight' must be a whole "
         "number, got yes"),
        (HEAD + "    then:\n      variants:\n        - {name: a, weight: '5', channels: [inbox]}\n"
         "        - {name: b, weight: 1, channels: [email]}\n", "6:29: 'weight' must be a whole "
         "number, got '5'"),
        ("ruleset: u\norder: -1\nrules:\n  - id: a\n" + THEN, "2:8: 'order' must be at least 0, got -1"),
        (HEAD + "    when: {app: [lms, hr, lms]}\n" + THEN,
         "4:27: 'lms' is listed twice (first at line 4, column 18): keep one"),
        (cap("{count: true, per: 1d}"), "4:14: 'limits': count True is not a whole number: write count: 3"),
    ],
)
def test_messages_name_the_whole_value_and_the_fix_that_works(
    tmp_path: Path, body: str, expected: str
) -> None:
    assert errors_of(tmp_path, body) == [expected]


@pytest.mark.parametrize(
    "text",
    [
        "\ufeffruleset: u\nrules:\n  - id: a\n" + THEN,  # a BOM some editors write
        "ruleset: u\r\nrules:\r\n  - id: a\r\n    then: {channels: [inbox]}\r\n",  # CRLF line endings
        # full-width punctuation in text is fine
        "ruleset: u\nrules:\n  - id: a\n    description: 学费提醒，每天一次：请查收\n" + THEN,
    ],
)
def test_what_editors_write_is_read_as_meant(tmp_path: Path, text: str) -> None:
    assert errors_of(tmp_path, text) == []


def test_crlf_positions_are_the_same_lines(tmp_path: Path) -> None:
    found = errors_of(tmp_path, "ruleset: u\r\nrules:\r\n  - id: a\r\n    then: {channels: [inbxo]}\r\n")
    assert found == ["4:23: unknown channel 'inbxo' (did you mean 'inbox'?)"]


PARTS = {"notice": frozenset({"inbox", "email"}), "notice_sms": frozenset({"sms"})}
LACKS = "template 'notice' has no sms part, but this may send on it (it has: email, inbox)"


@pytest.mark.parametrize(
    ("rule", "where"),
    [
        (  # a variant without a template of its own renders the rule's on the variant's channels
            "    then:\n      template: notice\n      variants:\n"
            "        - {name: a, weight: 1, channels: [inbox]}\n"
            "        - {name: b, weight: 1, channels: [sms]}\n",
            "5:17",
        ),
        (  # no template in `then`: the event's, which `when: template` names, goes on the rule's channels
            "    when: {template: [notice]}\n    then: {first_of: [inbox, sms]}\n",
            "4:23",
        ),
        (  # ... and on a fallback step's channels
            "    when: {template: [notice]}\n    then:\n      channels: [inbox]\n"
            "      fallback: [{after: 1d, if_not: read, first_of: [sms]}]\n",
            "4:23",
        ),
        (  # ... and on a variant's channels
            "    when: {template: [notice]}\n    then:\n      variants:\n"
            "        - {name: a, weight: 1, channels: [email]}\n"
            "        - {name: b, weight: 1, first_of: [sms]}\n",
            "4:23",
        ),
        (  # a fallback step in a rule with variants renders the variant's template
            "    then:\n      channels: [inbox]\n      variants:\n"
            "        - {name: a, weight: 1, template: notice}\n"
            "        - {name: b, weight: 1, channels: [sms], template: notice_sms}\n"
            "      fallback: [{after: 1d, if: failed, first_of: [sms]}]\n",
            "7:42",
        ),
    ],
)
def test_every_path_a_template_takes_to_a_channel_is_checked(tmp_path: Path, rule: str, where: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(HEAD + rule)
    found = [str(error).removeprefix(f"{path}:") for error in check([path], PARTS)]
    assert found == [f"{where}: {LACKS}"]


def test_a_template_with_every_part_it_needs_passes(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        HEAD + "    when: {template: [notice]}\n    then:\n      template: notice_sms\n"
        "      channels: [sms]\n"
        "      variants:\n        - {name: a, weight: 1}\n        - {name: b, weight: 1, channels: [email], "
        "template: notice}\n"
    )
    assert check([path], PARTS) == []

"""Rule files are checked strictly, every error pointing at its file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.loader import RuleError, RuleFileError, check, load_ruleset

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def messages(path: Path) -> list[str]:
    return [str(error) for error in check([path])]


def test_default_rules_load() -> None:
    ruleset = load_ruleset(ROOT / "rules" / "default.yaml")
    assert ruleset.name == "university"
    assert ruleset.rules[-1].id == "catch-all"
    assert ruleset.rules[-1].when.conditions() == {}
    assert len(ruleset.version) == 8
    assert ruleset.origins["security-alerts"].endswith("default.yaml:79")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (  # unknown key in `when`, with a suggestion
            "ruleset: u\nrules:\n  - id: a\n    when:\n      categroy: [alert]\n"
            "    then:\n      channels: [email]\n",
            "5:7: unknown field 'categroy' (did you mean 'category'?)",
        ),
        (  # unknown key in `then`
            "ruleset: u\nrules:\n  - id: a\n    then:\n      chanels: [email]\n",
            "5:7: unknown field 'chanels' (did you mean 'channels'?)",
        ),
        (  # unknown channel, second item of the list
            "ruleset: u\nrules:\n  - id: a\n    then:\n      channels: [inbox, emial]\n",
            "5:25: unknown channel 'emial' (did you mean 'email'?)",
        ),
        (  # unknown category
            "ruleset: u\nrules:\n  - id: a\n    when:\n      category: [alerts]\n"
            "    then:\n      suppress: x\n",
            "5:18: unknown category 'alerts' (did you mean 'alert'?)",
        ),
        (  # unknown priority in block style
            "ruleset: u\nrules:\n  - id: a\n    when:\n      priority:\n        - hihg\n    then:\n"
            "      suppress: x\n",
            "6:11: unknown priority 'hihg' (did you mean 'high'?)",
        ),
        (  # `preferred` is a first_of word only
            "ruleset: u\nrules:\n  - id: a\n    then:\n      first_of: [prefered]\n",
            "5:18: unknown channel 'prefered' (did you mean 'preferred'?)",
        ),
        (  # then with two actions
            "ruleset: u\nrules:\n  - id: a\n    then:\n      channels: [email]\n      suppress: done\n",
            "6:7: 'then' needs exactly one of channels, first_of, suppress; got channels, suppress",
        ),
        (  # YAML turns a bare `no` into a boolean
            "ruleset: u\nrules:\n  - id: a\n    then:\n      suppress: no\n",
            "5:17: 'suppress' must be text, got no, which YAML reads as false: put it in quotes, e.g. 'no'",
        ),
        (  # empty then list
            "ruleset: u\nrules:\n  - id: a\n    then:\n      channels: []\n",
            "5:17: 'channels' is empty: list at least one value",
        ),
        (  # missing then
            "ruleset: u\nrules:\n  - id: a\n    when:\n      app: [lms]\n",
            "3:5: missing required field 'then'",
        ),
        (  # a scalar where a list is required
            "ruleset: u\nrules:\n  - id: a\n    when:\n      app: lms\n    then:\n      channels: [email]\n",
            "5:12: 'app' must be a list, e.g. [lms]",
        ),
        (  # bad rule id
            "ruleset: u\nrules:\n  - id: Security_Alerts\n    then:\n      channels: [email]\n",
            "3:9: rule id 'Security_Alerts' may only hold lowercase letters, digits and '-' "
            "(e.g. 'security-alerts')",
        ),
        (  # duplicate YAML key, which PyYAML would silently drop
            "ruleset: u\nrules:\n  - id: a\n    then:\n      channels: [email]\n"
            "    then:\n      channels: [sms]\n",
            "6:5: duplicate key 'then' (first at line 4): keep one",
        ),
        (  # top-level unknown key
            "ruleset: u\nrulez: []\n",
            "2:1: unknown field 'rulez' (did you mean 'rules'?)",
        ),
    ],
)
def test_schema_errors_point_at_the_place(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, body)
    assert f"{path}:{expected}" in messages(path)


def test_unknown_key_far_from_any_name_lists_the_allowed_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "ruleset: u\nrules:\n  - id: a\n    zzz: 1\n    then:\n      suppress: x\n")
    (message,) = messages(path)
    assert message.endswith("unknown field 'zzz' (expected one of: id, description, when, then)")


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ruleset: u\nrules:\n"
        "  - id: a\n    when:\n      categroy: [alert]\n    then:\n      channels: [emial]\n"
        "  - id: b\n    then:\n      first_of: [smss]\n",
    )
    with pytest.raises(RuleFileError) as caught:
        load_ruleset(path)
    lines = [(e.line, e.column) for e in caught.value.errors]
    assert lines == [(5, 7), (7, 18), (10, 18)]
    assert str(caught.value).count(str(path)) == 3


def test_yaml_syntax_error_position(tmp_path: Path) -> None:
    path = write(tmp_path, "ruleset: u\nrules:\n  - id: a\n    then:\n      channels: [email\n  - id: b\n")
    (error,) = check([path])
    assert (error.line, error.column) == (5, 17)  # where the list opened, not where YAML gave up
    assert error.message == (
        "the [ opened here is not closed: end it with ] (YAML read on to line 6, column 7)"
    )


def test_tab_indentation_is_a_positioned_yaml_error(tmp_path: Path) -> None:
    path = write(tmp_path, "ruleset: u\nrules:\n\t- id: a\n")
    (error,) = check([path])
    assert (error.file, error.line, error.column) == (str(path), 3, 1)


def test_duplicate_rule_id_across_files_in_a_folder(tmp_path: Path) -> None:
    rule = (
        "ruleset: {}\norder: {}\nrules:\n  - id: x\n    when: {{app: [{}]}}\n"
        "    then: {{channels: [email]}}\n"
    )
    first = write(tmp_path, rule.format("a", 10, "lms"), "10-first.yaml")
    second = write(tmp_path, rule.format("b", 20, "hr"), "20-second.yaml")
    (error,) = check([tmp_path])
    assert str(error) == f"{second}:4:9: duplicate rule id 'x' (first defined at {first}:4)"


def test_folder_rules_are_ordered_by_their_order_not_file_name(tmp_path: Path) -> None:
    write(tmp_path, "ruleset: b\norder: 1\nrules:\n  - id: first\n    when: {app: [x]}\n"
          "    then: {suppress: x}\n", "20-b.yaml")
    last = "ruleset: a\norder: 2\nrules:\n  - id: last\n    then: {channels: [inbox]}\n"
    write(tmp_path, last, "10-a.yaml")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "not: [a, rule, file]\n", "ignored.yaml")
    ruleset = load_ruleset(tmp_path)
    assert [r.id for r in ruleset.rules] == ["first", "last"]
    assert ruleset.name == "b+a"


@pytest.mark.parametrize(
    ("earlier", "later", "unreachable"),
    [
        ("{}", "{app: [lms]}", True),  # an empty `when` catches everything
        ("{app: [lms, hr]}", "{app: [lms], category: [alert]}", True),
        ("{app: [lms]}", "{app: [lms]}", True),
        ("{bound: [email]}", "{bound: [email, sms]}", True),  # all-of: needing more is narrower
        ("{tags_any: [a, b]}", "{tags_any: [a]}", True),
        ("{app: [lms]}", "{app: [lms, hr]}", False),
        ("{app: [lms], category: [alert]}", "{app: [lms]}", False),
        ("{bound: [email, sms]}", "{bound: [email]}", False),
    ],
)
def test_unreachable_rule(tmp_path: Path, earlier: str, later: str, unreachable: bool) -> None:
    path = write(
        tmp_path,
        f"ruleset: u\nrules:\n  - id: first\n    when: {earlier}\n    then: {{channels: [inbox]}}\n"
        f"  - id: second\n    when: {later}\n    then: {{channels: [email]}}\n",
    )
    errors = check([path])
    if unreachable:
        assert [str(e) for e in errors] == [
            f"{path}:6:9: rule 'second' is unreachable: rule 'first' ({path}:3) comes first and matches "
            "everything it matches"
        ]
    else:
        assert errors == []


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    assert check([tmp_path / "nope.yaml"]) == [RuleError(str(tmp_path / "nope.yaml"), 1, 1,
                                                         "no such rule file or folder")]
    assert check([tmp_path])[0].message == "no *.yaml rule files in this folder"


def test_version_follows_content(tmp_path: Path) -> None:
    body = "ruleset: u\nrules:\n  - id: a\n    then: {channels: [inbox]}\n"
    first = load_ruleset(write(tmp_path, body)).version
    assert load_ruleset(write(tmp_path, body)).version == first
    assert load_ruleset(write(tmp_path, body.replace("inbox", "email"))).version != first

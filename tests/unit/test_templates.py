"""The template catalog: load-time validation, rendering, missing variables and the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from channels.templates import TemplateCatalog, TemplateError
from settings import ROOT
from state.users import User

LI_WEI = User(user_id="s2024001", name="Li Wei")
COURSE = {"course": "Linear Algebra", "starts_at": "08:00", "room": "A-101"}


def catalog_of(tmp_path: Path, **files: str) -> TemplateCatalog:
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")
    return TemplateCatalog(tmp_path)


@pytest.fixture(scope="module")
def demo() -> TemplateCatalog:
    return TemplateCatalog(ROOT / "templates")


def test_demo_templates_load_with_their_channels(demo: TemplateCatalog) -> None:
    assert demo.names == [
        "approval_request", "campus_notice", "course_reminder", "fee_due", "security_alert",
        "switchboard_alert", "verification_code",
    ]
    assert demo.channels_of("campus_notice") == {"email", "inbox", "push"}
    assert demo.channels_of("course_reminder") == {"email", "inbox", "push", "sms", "wechat_mp"}
    assert demo.channels_of("fee_due") == {"email", "inbox", "webhook", "sms", "wechat_oa"}
    assert demo.channels_of("security_alert") == {"email", "inbox", "webhook", "sms", "push", "robot"}
    assert demo.channels_of("verification_code") == {"email", "sms"}
    assert demo.channels_of("switchboard_alert") == {"email", "inbox", "sms", "robot"}
    assert demo.channels_of("approval_request") == {"email", "inbox"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("variables: [a]\nemial: {subject: x, text: y}\n", "emial: Extra inputs are not permitted"),
        ("variables: [a]\nemail: {subject: x, text: y, footer: z}\n", "email.footer"),
        ("variables: [a]\nemail: {subject: x}\n", "email.text: Field required"),
        ("variables: [a]\nemail: {subject: '{{ a }}', text: '{{ b }}'}\n",
         "email.text uses undeclared variable(s) b"),
        ("variables: [a]\ninbox: {title: '{{ a', body: y}\n", "inbox.title: line 1:"),
        ("variables: [a]\noptional: [a]\nsms: {text: x}\n", "listed in both variables and optional"),
        ("variables: [user]\nsms: {text: x}\n", "reserved"),
        ("variables: [a-b]\nsms: {text: x}\n", "not a valid variable name"),
        ("variables: [a]\n", "no channel part"),
        ("variables: [a]\nwechat_oa: {params: {thing1: '{{ a }}'}}\n", "wechat_oa needs template_ids"),
        ("variables: [a]\nwechat_mp: {template_ids: {wechat-mp: t1}}\n", "wechat_mp needs params"),
        ("variables: [a]\nsms: {text: x, template_ids: {aliyun: ''}}\n", "template id must not be empty"),
        ("variables: [a]\nsms: {text: x, params: {code: '{{ b }}'}}\n",
         "sms.params.code uses undeclared variable(s) b"),
        ("variables: [a]\npush: {title: x, body: y, sound: z}\n", "push.sound"),
        ("variables: [a]\nrobot: {title: x}\n", "robot.text: Field required"),
        ("variables: [a\n", "cannot read"),
        ("- just a list\n", "file: Input should be a valid dictionary"),
    ],
)
def test_invalid_template_files_fail_at_load_naming_file_and_part(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        catalog_of(tmp_path, broken=text)
    assert str(tmp_path / "broken.yaml") in str(caught.value)
    assert expected in str(caught.value)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="does not exist"):
        TemplateCatalog(tmp_path / "nowhere")


def test_check_data_names_unknown_template_and_missing_variables(demo: TemplateCatalog) -> None:
    assert demo.check_data("course_reminder", COURSE) == []
    assert demo.check_data("course_reminder", {**COURSE, "teacher": "Dr Chen"}) == []
    assert demo.check_data("course_reminder", {"course": "x"}) == [
        "template 'course_reminder' needs variable(s) room, starts_at"
    ]
    [problem] = demo.check_data("no_such", {})
    assert "unknown template 'no_such'" in problem
    assert "fee_due" in problem


def test_email_renders_text_verbatim_and_escapes_html(demo: TemplateCatalog) -> None:
    data = {"headline": "Library <closed> & moved", "body": "See the map."}
    message = demo.render("campus_notice", "email", data, LI_WEI)
    assert message.subject == "Campus notice: Library <closed> & moved | 校园通知"
    assert message.text.startswith("Dear Li Wei,")
    assert "Library <closed> & moved" in message.text
    assert message.html is not None
    assert "<h2>Library &lt;closed&gt; &amp; moved</h2>" in message.html
    assert message.title == message.body == ""


def test_optional_variable_may_be_absent_or_present(demo: TemplateCatalog) -> None:
    without = demo.render("course_reminder", "inbox", COURSE, LI_WEI)
    assert without.title == "Linear Algebra starts at 08:00"
    assert "Teacher" not in without.body
    with_teacher = demo.render("course_reminder", "inbox", {**COURSE, "teacher": "Dr Chen"}, LI_WEI)
    assert "Teacher: Dr Chen." in with_teacher.body


def test_inbox_link_and_no_user(demo: TemplateCatalog) -> None:
    message = demo.render("security_alert", "inbox", {"headline": "Phishing", "action": "Reset"}, None)
    assert message.link == "/portal/security"
    assert demo.render("campus_notice", "email", {"headline": "h", "body": "b"}, None).text.startswith(
        "Dear colleague,"
    )


def test_webhook_body_is_json_with_values_escaped(demo: TemplateCatalog) -> None:
    data = {"amount": 'CNY "5,000"', "due_date": "2026-09-01", "term": "Autumn 2026"}
    body = json.loads(demo.render("fee_due", "webhook", data, LI_WEI).body)
    assert body == {"type": "fee_due", "user_id": "s2024001", "amount": 'CNY "5,000"',
                    "due_date": "2026-09-01", "term": "Autumn 2026"}


def test_webhook_body_that_is_not_json_is_refused(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path, hook="variables: [a]\nwebhook: {body: '{\"a\": {{ a }}}'}\n")
    assert json.loads(catalog.render("hook", "webhook", {"a": 3}, None).body) == {"a": 3}
    with pytest.raises(TemplateError, match="did not render to JSON"):
        catalog.render("hook", "webhook", {"a": "not json"}, None)


def test_missing_variable_never_renders_half_a_message(demo: TemplateCatalog) -> None:
    with pytest.raises(TemplateError, match=r"needs variable\(s\) room"):
        demo.render("course_reminder", "email", {"course": "x", "starts_at": "y"}, LI_WEI)


def test_wrong_variable_type_is_a_template_error(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path, sum="variables: [n]\nsms: {text: '{{ n + 1 }}'}\n")
    assert catalog.render("sum", "sms", {"n": 41}, None).text == "42"
    with pytest.raises(TemplateError, match=r"template 'sum' sms.text: TypeError"):
        catalog.render("sum", "sms", {"n": "41"}, None)


def test_unknown_template_or_channel_part(demo: TemplateCatalog) -> None:
    with pytest.raises(TemplateError, match="unknown template 'nope'"):
        demo.render("nope", "email", {}, None)
    parts = r"has no 'robot' part \(it has: email, inbox, push, sms, wechat_mp\)"
    with pytest.raises(TemplateError, match=parts):
        demo.render("course_reminder", "robot", COURSE, None)


@pytest.mark.parametrize(
    "expression",
    [
        "{{ a.__class__.__mro__ }}",
        "{{ a.__class__.__mro__[1].__subclasses__() }}",
        "{{ user.__class__ }}",
        "{{ a.format.__globals__ }}",
    ],
)
def test_sandbox_refuses_internal_attributes(tmp_path: Path, expression: str) -> None:
    catalog = catalog_of(tmp_path, evil=f"variables: [a]\nsms: {{text: '{expression}'}}\n")
    with pytest.raises(TemplateError, match=r"template 'evil' sms\.text"):
        catalog.render("evil", "sms", {"a": ""}, LI_WEI)


def test_sandbox_refuses_mutating_data(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path, mut="variables: [items]\nsms: {text: '{{ items.append(1) }}'}\n")
    items: list[int] = []
    with pytest.raises(TemplateError, match="SecurityError"):
        catalog.render("mut", "sms", {"items": items}, None)
    assert items == []


def test_templates_see_the_profile_not_the_addresses(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path, who="sms: {text: '{{ user.name }}/{{ user.bindings }}'}\n")
    user = User(user_id="u1", name="王芳", bindings={"email": "wang@uni.example.edu"})
    with pytest.raises(TemplateError, match="bindings"):
        catalog.render("who", "sms", {}, user)

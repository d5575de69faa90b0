"""Template parts of the provider channels: SMS and WeChat template ids and params, push, robots, links."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels.templates import TemplateCatalog, TemplateError
from settings import ROOT
from state.users import User

LI_WEI = User(user_id="s2024001", name="Li Wei")
FEE = {"amount": "CNY 5,000", "due_date": "2026-12-01", "term": "Autumn 2026"}
ALERT = {"headline": "Phishing wave", "action": "Reset your password"}
COURSE = {"course": "Linear Algebra", "starts_at": "08:00", "room": "A-101"}


@pytest.fixture(scope="module")
def demo() -> TemplateCatalog:
    return TemplateCatalog(ROOT / "templates")


def catalog_of(tmp_path: Path, text: str) -> TemplateCatalog:
    (tmp_path / "t.yaml").write_text(text, encoding="utf-8")
    return TemplateCatalog(tmp_path)


def test_sms_carries_text_provider_template_codes_and_ordered_params(demo: TemplateCatalog) -> None:
    message = demo.render("fee_due", "sms", FEE, LI_WEI)
    assert message.text.startswith("【财务处】Li Wei，您Autumn 2026的费用CNY 5,000")
    assert message.template_ids == {"aliyun": "SMS_468210355", "tencent": "2145873"}
    # Tencent SMS takes params by position: the file order must survive rendering.
    assert list(message.params.items()) == [
        ("term", "Autumn 2026"), ("amount", "CNY 5,000"), ("due_date", "2026-12-01"),
    ]


def test_verification_code_by_sms_and_email(demo: TemplateCatalog) -> None:
    data = {"code": "482913", "minutes": 5}
    sms = demo.render("verification_code", "sms", data, None)
    assert sms.params == {"code": "482913", "minutes": "5"}
    assert "482913" in sms.text
    email = demo.render("verification_code", "email", data, LI_WEI)
    assert email.subject == "Your verification code: 482913 | 验证码"
    assert email.html is not None and "<strong" in email.html


@pytest.mark.parametrize(
    ("template", "channel", "data", "expected"),
    [
        ("fee_due", "wechat_oa", FEE, {
            "template_ids": {"wechat-oa": "Qm3lXfNqP7dT1ZcH6oVb0rK9sYw2uEjA8gLiMnBxC4e"},
            "params": {"thing1": "Autumn 2026学费", "amount2": "CNY 5,000", "time3": "2026-12-01"},
            "link": "https://portal.example.edu/finance",
        }),
        ("course_reminder", "wechat_mp", COURSE, {
            "template_ids": {"wechat-mp": "k8yX2bQeT0vN5cRj3mLp9sWd7fHa1gZuE6oIiKnVtBc"},
            "params": {"thing1": "Linear Algebra", "time2": "08:00", "thing3": "A-101"},
            "page": "pages/schedule/today",
        }),
        ("course_reminder", "push", COURSE, {
            "title": "Linear Algebra at 08:00", "body": "A-101 · 请准时上课", "page": "lms://courses/today",
        }),
        ("security_alert", "push", ALERT, {
            "title": "Security alert | 安全警报", "body": "Phishing wave: Reset your password",
            "link": "/portal/security",
        }),
        ("security_alert", "robot", ALERT, {
            "title": "Security alert: Phishing wave", "link": "https://portal.example.edu/security",
        }),
        ("campus_notice", "push", {"headline": "Snow day", "body": "Stay home"}, {
            "title": "Snow day", "body": "Stay home", "link": "", "page": "",
        }),
    ],
)
def test_each_channel_part_renders_into_its_fields(
    demo: TemplateCatalog, template: str, channel: str, data: dict[str, str], expected: dict[str, object]
) -> None:
    message = demo.render(template, channel, data, LI_WEI)
    assert {key: getattr(message, key) for key in expected} == expected
    assert message.channel == channel


def test_robot_text_is_markdown_verbatim(demo: TemplateCatalog) -> None:
    message = demo.render("security_alert", "robot", {**ALERT, "headline": "<b>VPN</b> & SSO"}, None)
    assert "**<b>VPN</b> & SSO**" in message.text
    assert message.text.startswith("### Security alert")


@pytest.mark.parametrize(
    "link",
    ["javascript:alert(1)", "data:text/html,x", "//evil.example/x", "ftp://x.example/y", "portal/x", "https://"],
)
def test_a_link_that_is_not_http_or_a_path_is_refused(tmp_path: Path, link: str) -> None:
    catalog = catalog_of(tmp_path, "variables: [to]\npush: {title: t, body: b, link: '{{ to }}'}\n")
    with pytest.raises(TemplateError, match=r"template 't' push.link rendered to .*: a link must be"):
        catalog.render("t", "push", {"to": link}, None)


@pytest.mark.parametrize("link", ["https://portal.example.edu/x?y=1", "http://a.example", "/portal/x", ""])
def test_http_links_and_paths_pass(tmp_path: Path, link: str) -> None:
    catalog = catalog_of(tmp_path, "variables: [to]\ninbox: {title: t, body: b, link: '{{ to }}'}\n")
    assert catalog.render("t", "inbox", {"to": link}, None).link == link


def test_a_param_that_fails_to_render_names_itself(tmp_path: Path) -> None:
    catalog = catalog_of(
        tmp_path,
        "variables: [n]\nsms: {text: x, template_ids: {aliyun: SMS_1}, params: {n: '{{ n + 1 }}'}}\n",
    )
    assert catalog.render("t", "sms", {"n": 1}, None).params == {"n": "2"}
    with pytest.raises(TemplateError, match=r"template 't' sms.params.n: TypeError"):
        catalog.render("t", "sms", {"n": "1"}, None)


def test_a_missing_variable_stops_a_provider_template_before_sending(demo: TemplateCatalog) -> None:
    with pytest.raises(TemplateError, match=r"needs variable\(s\) minutes"):
        demo.render("verification_code", "sms", {"code": "1"}, None)


WECHAT = (
    "variables: [v]\nwechat_mp: {template_ids: {wechat-mp: t}, params: {KEY: '{{ v }}', time2: '08:00'}}\n"
)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("thing1", "一" * 20, None),
        ("thing1", "一" * 21, "is 21 characters, WeChat allows 20 for thing"),
        ("phrase3", "审核通过中了", "WeChat allows 5 for phrase"),
        ("character_string4", "A" * 33, "allows 32 for character_string"),
        ("keyword1", "x" * 200, None),  # old-style keys have no documented type
        ("thing1", "  ", "rendered empty"),
    ],
)
def test_wechat_values_are_checked_against_their_key_type(
    tmp_path: Path, key: str, value: str, problem: str | None
) -> None:
    catalog = catalog_of(tmp_path, WECHAT.replace("KEY", key))
    if problem is None:
        assert catalog.render("t", "wechat_mp", {"v": value}, None).params[key] == value
    else:
        with pytest.raises(TemplateError, match=rf"template 't' wechat_mp\.params\.{key} .*{problem}"):
            catalog.render("t", "wechat_mp", {"v": value}, None)


def test_the_hint_shows_how_to_shorten(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path, WECHAT.replace("KEY", "thing1"))
    with pytest.raises(TemplateError, match=r"truncate\(20, true"):
        catalog.render("t", "wechat_mp", {"v": "x" * 30}, None)
    fixed = WECHAT.replace("KEY", "thing1").replace("{{ v }}", '{{ v | truncate(20, true, "…", 0) }}')
    shortened = catalog_of(tmp_path, fixed)
    assert len(shortened.render("t", "wechat_mp", {"v": "x" * 30}, None).params["thing1"]) == 20

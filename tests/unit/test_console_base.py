"""The console's base without services: every word a template asks for exists in both languages, the
CSRF token and check, safe redirects after login, SVG charts that escape their labels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.requests import Request

from api.console import PAGES
from api.console.charts import bar_chart
from api.console.csrf import LOGIN_COOKIE, SESSION_COOKIE, CsrfRefused, csrf_checked, csrf_token
from api.console.i18n import LOCALES, table, translator
from api.console.render import TEMPLATES
from api.console.session import _safe_next
from settings.permissions import PERMISSIONS

_LOOKUP = re.compile(r"""\bt\(\s*["']([^"']+)["']""")


def _templates() -> list[Path]:
    return sorted(TEMPLATES.rglob("*.html"))


@pytest.mark.parametrize("template", _templates(), ids=lambda path: str(path.relative_to(TEMPLATES)))
def test_every_word_a_template_looks_up_exists_in_every_language(template: Path) -> None:
    page = template.relative_to(TEMPLATES).parts[0] if template.parent != TEMPLATES else "common"
    own, common = table(page), table("common")
    for key in _LOOKUP.findall(template.read_text()):
        if key.endswith("."):  # a composed key (`"nav." ~ page.name`): checked per page below
            continue
        entry = own.get(key) or common.get(key)
        assert entry is not None, f"{template.name}: no words for {key!r}"
        assert set(entry) == set(LOCALES), f"{template.name}: {key!r} has {sorted(entry)}"


def test_every_registered_page_has_its_navigation_label_and_a_known_permission() -> None:
    for page in PAGES:
        assert set(table("common")[f"nav.{page.name}"]) == set(LOCALES)
        assert page.permission in PERMISSIONS, page.name
        assert page.path.startswith("/console/"), page.name


def test_every_table_has_both_languages_for_every_key() -> None:
    for module in sorted((TEMPLATES.parent / "i18n").glob("*.py")):
        if module.stem == "__init__":
            continue
        for key, entry in table(module.stem).items():
            assert set(entry) == set(LOCALES), f"{module.name}: {key!r} has {sorted(entry)}"
            assert all(entry.values()), f"{module.name}: {key!r} has an empty word"


def test_a_lookup_takes_the_page_word_over_the_common_one_and_shows_a_missing_key() -> None:
    t_zh, t_en = translator("overview", "zh"), translator("overview", "en")
    assert (t_zh("title"), t_en("title")) == ("概览", "Overview")
    assert t_en("logout") == "Log out"
    assert t_en("login.too_many", seconds=30) == "Too many failures from this address; retry in 30 s"
    assert t_en("no.such.key") == "[no.such.key]"


def _request(method: str, cookies: dict[str, str], headers: dict[str, str] | None = None,
             body: bytes = b"") -> Request:
    raw = [(b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({"type": "http", "method": method, "path": "/console/x", "headers": raw,
                    "query_string": b""}, receive)


async def test_csrf_passes_safe_methods_and_posts_with_the_sessions_token_only() -> None:
    session = "sbs_" + "a" * 43
    token = csrf_token(session)
    assert token == csrf_token(session) != csrf_token("sbs_" + "b" * 43)
    await csrf_checked(_request("GET", {}))
    await csrf_checked(_request("POST", {SESSION_COOKIE: session}, {"X-CSRF-Token": token}))
    form = {"content-type": "application/x-www-form-urlencoded"}
    await csrf_checked(_request("POST", {SESSION_COOKIE: session}, form, f"csrf={token}&x=1".encode()))
    for refused in (
        _request("POST", {SESSION_COOKIE: session}),
        _request("POST", {SESSION_COOKIE: session}, {"X-CSRF-Token": csrf_token("sbs_other")}),
        _request("POST", {SESSION_COOKIE: session}, form, b"x=1"),
        _request("POST", {}, {"X-CSRF-Token": token}),  # no session, no login cookie
    ):
        with pytest.raises(CsrfRefused):
            await csrf_checked(refused)


async def test_before_login_the_form_must_repeat_the_login_cookie() -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    await csrf_checked(_request("POST", {LOGIN_COOKIE: "k" * 20}, form, b"csrf=" + b"k" * 20))
    with pytest.raises(CsrfRefused):
        await csrf_checked(_request("POST", {LOGIN_COOKIE: "k" * 20}, form, b"csrf=" + b"j" * 20))


@pytest.mark.parametrize(("asked", "goes"), [
    ("/console/people?q=li", "/console/people?q=li"),
    ("https://evil.example/console", "/console/"),
    ("//evil.example/console", "/console/"),
    ("/console//evil.example", "/console/"),
    ("/console\\..\\x", "/console/"),
    ("/v1/operators", "/console/"),
])
def test_after_login_only_a_console_path_is_followed(asked: str, goes: str) -> None:
    assert _safe_next(asked) == goes


def test_a_bar_chart_scales_bars_and_escapes_labels() -> None:
    svg = str(bar_chart([("email", 200), ("<script>", 50)], title="Reach & more"))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "Reach &amp; more" in svg
    widths = [float(w) for w in re.findall(r'<rect[^>]* width="([0-9.]+)"', svg)]
    assert widths[0] == pytest.approx(4 * widths[1])
    assert ">200<" in svg and ">50<" in svg


def test_an_empty_bar_chart_says_so() -> None:
    svg = str(bar_chart([], title="nothing"))
    assert "chart-empty" in svg and "<rect" not in svg

"""Pages rendered on the server: one jinja2 environment, one `render` that adds what every page needs.

`render(request, "overview/page.html", principal, **context)` gives the template the operator, the
locale and its words (`t("key")`), the CSRF token (`csrf`) and the navigation this operator may see.
Autoescaping is on for every template; charts come in as `markupsafe.Markup` from `charts.py`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from api.access import holds
from api.console.context import console_of
from api.console.csrf import FIELD, HEADER, csrf_token
from api.console.i18n import DEFAULT_LOCALE, translator
from settings.permissions import Principal

TEMPLATES = Path(__file__).parent / "templates"

# Same-origin scripts and styles only (htmx and the CSS are served from /console/static); no frames.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,  # a misspelt variable fails the page's test instead of showing nothing
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(request: Request, template: str, principal: Principal, *, status_code: int = 200,
           **context: object) -> HTMLResponse:
    """The page `template` for the operator of this request's session (`console_principal` ran)."""
    console = console_of(request)
    operator = request.state.operator
    navigation = [page for page in console.pages if holds(principal, page.permission)]
    return render_frame(
        request, template, locale=operator.locale or DEFAULT_LOCALE,
        csrf=csrf_token(request.state.session_token), status_code=status_code,
        operator=operator, principal=principal, navigation=navigation, **context,
    )


def render_frame(request: Request, template: str, *, locale: str, csrf: str, status_code: int = 200,
                 **context: object) -> HTMLResponse:
    """A page with words and CSRF token but no operator (the login page), or `render`'s."""
    page = template.split("/", 1)[0] if "/" in template else "common"
    context.setdefault("operator", None)
    context.setdefault("principal", None)
    context.setdefault("navigation", [])
    body = environment.get_template(template).render(
        request=request, path=request.url.path, locale=locale, t=translator(page, locale),
        csrf=csrf, csrf_field=FIELD, csrf_header=HEADER, **context,
    )
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)

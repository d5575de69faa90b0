"""The operator console: server-rendered pages over the same stores, services and permission checks
as the `/v1` API, under `/console` (docs/operators/console.md).

A page is a module in `pages/` exposing `PAGE`; register it with one line in `PAGES` below.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from api.access import holds
from api.console.context import Console, ConsolePage
from api.console.csrf import CsrfRefused, csrf_checked
from api.console.i18n import DEFAULT_LOCALE
from api.console.pages import (
    analytics,
    approvals,
    apps,
    audit,
    channels,
    dead_letters,
    members,
    overview,
    people,
    rules,
    segments,
    send,
    templates,
    uploads,
)
from api.console.render import SECURITY_HEADERS, render, render_frame
from api.console.session import (
    ConsoleForbidden,
    LoginRequired,
    TooManyFailures,
    login_redirect,
    session_principal,
    sessions_router,
    too_many_page,
)
from api.deps import ApiDeps

PAGES: tuple[ConsolePage, ...] = (  # in the navigation's order, as the requirements list the screens
    overview.PAGE,
    send.PAGE,
    approvals.PAGE,
    templates.PAGE,
    apps.PAGE,
    channels.PAGE,
    people.PAGE,
    segments.PAGE,
    uploads.PAGE,
    rules.PAGE,
    analytics.PAGE,
    dead_letters.PAGE,
    members.PAGE,
    audit.PAGE,
)

STATIC = Path(__file__).parent / "static"
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}


def console_router(deps: ApiDeps, pages: tuple[ConsolePage, ...] = PAGES) -> APIRouter:
    """Every console route under `/console`, each behind the CSRF check (safe methods pass)."""
    operators = deps.access.operators
    if operators is None:
        raise ValueError("the console needs operators (deps.access.operators)")
    public_url = deps.links.public_url if deps.links is not None else ""
    console = Console(deps, operators, pages, secure_cookies=public_url.startswith("https://"))

    async def bind(request: Request) -> None:
        request.state.console = console

    router = APIRouter(prefix="/console", dependencies=[Depends(bind), Depends(csrf_checked)],
                       include_in_schema=False)
    router.include_router(sessions_router())
    for page in pages:
        router.include_router(page.router(deps))

    @router.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> Response:
        """The first page this operator may see (the overview for most)."""
        principal = await session_principal(request)
        for page in pages:
            if holds(principal, page.permission):
                return RedirectResponse(page.path, status.HTTP_303_SEE_OTHER)
        return render(request, "home.html", principal)

    @router.get("/static/{name}")
    async def static(name: str) -> FileResponse:
        path = STATIC / name
        if "/" in name or name.startswith(".") or path.suffix not in _STATIC_TYPES or not path.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no console file {name!r}")
        headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
        return FileResponse(path, media_type=_STATIC_TYPES[path.suffix], headers=headers)

    return router


def mount_console(api: FastAPI, deps: ApiDeps) -> None:
    """The console under `/console`, with its answers to a missing session, permission or CSRF token."""
    api.include_router(console_router(deps))

    @api.get("/console", include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse("/console/", status.HTTP_307_TEMPORARY_REDIRECT)

    @api.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        target = login_redirect(exc.next_path)
        if request.headers.get("HX-Request"):
            # htmx would swap the login page into a fragment: have it load the whole page instead.
            return Response(status_code=status.HTTP_204_NO_CONTENT, headers={"HX-Redirect": target})
        return RedirectResponse(target, status.HTTP_303_SEE_OTHER)

    @api.exception_handler(TooManyFailures)
    async def too_many(request: Request, exc: TooManyFailures) -> Response:
        return too_many_page(request, exc.wait)

    @api.exception_handler(ConsoleForbidden)
    async def forbidden(request: Request, exc: ConsoleForbidden) -> Response:
        return render(request, "forbidden.html", exc.principal, status_code=status.HTTP_403_FORBIDDEN,
                      permission=exc.permission, app=exc.app or "")

    @api.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _: CsrfRefused) -> Response:
        return render_frame(request, "csrf_refused.html", locale=DEFAULT_LOCALE, csrf="",
                            status_code=status.HTTP_403_FORBIDDEN)


__all__ = ["PAGES", "SECURITY_HEADERS", "console_router", "mount_console"]

"""Console sessions: log in with name and password, a `sbs_` session in an HttpOnly cookie, log out.

The session is the API's own (`OperatorStore.start_session`): the same idle and absolute expiry, the
same lockout and failure limits (`api.auth.log_in`), the same audit. A page declares
`console_principal(permission)`: no live session sends the browser to the login page (303), a
session without the permission gets a page naming it (403).
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.access import audit_record, client_address, holds
from api.auth import log_in
from api.console.context import console_of
from api.console.csrf import LOGIN_COOKIE, SESSION_COOKIE, csrf_token, new_login_token
from api.console.i18n import DEFAULT_LOCALE, LOCALES
from api.console.render import render_frame
from settings.permissions import Principal
from state.operators import SESSION_PREFIX

LOGIN_PATH = "/console/login"


class LoginRequired(Exception):
    """No live session: answered with a redirect to the login page, back to `next` afterwards."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class TooManyFailures(Exception):
    """The address failed to authenticate too often: refused whatever it presents, as the API refuses
    it (429), with the login page saying when to retry."""

    def __init__(self, wait: int) -> None:
        super().__init__(wait)
        self.wait = wait


class ConsoleForbidden(Exception):
    """A live session without the permission: answered 403 with a page naming it."""

    def __init__(self, principal: Principal, permission: str, app: str | None = None) -> None:
        super().__init__(permission)
        self.principal = principal
        self.permission = permission
        self.app = app


async def session_principal(request: Request) -> Principal:
    """The principal of the request's session cookie (the operator's grants as they are now); also
    keeps the operator and the token on `request.state` for `render` and the CSRF token."""
    console = console_of(request)
    failures = console.deps.access.failures
    if failures is not None and (wait := await failures.source_wait(client_address(request))):
        raise TooManyFailures(wait)
    token = request.cookies.get(SESSION_COOKIE, "")
    operator = await console.operators.authenticate_token(token) if token.startswith(SESSION_PREFIX) else None
    if operator is None:
        raise LoginRequired(_here(request))
    principal = await console.operators.principal(operator)
    request.state.operator = operator
    request.state.session_token = token
    request.state.principal = principal
    return principal


def console_principal(permission: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the Principal of a live session holding `permission` on at least one app (a
    global permission: over every app); login page (303) without a session, 403 page without it."""

    async def principal_with_permission(request: Request) -> Principal:
        principal = await session_principal(request)
        if not holds(principal, permission):
            raise ConsoleForbidden(principal, permission)
        return principal

    return principal_with_permission


def authorize(request: Request, principal: Principal, permission: str, app: str | None) -> None:
    """For app-scoped things: the API's own check (`Access.authorize`), answered with the 403 page."""
    try:
        console_of(request).deps.access.authorize(principal, permission, app)
    except HTTPException:
        raise ConsoleForbidden(principal, permission, app) from None


def set_session_cookie(request: Request, response: Response, token: str, max_age: int) -> None:
    console = console_of(request)
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, path="/console", httponly=True,
                        samesite="strict", secure=console.secure_cookies)


def sessions_router() -> APIRouter:
    """`GET/POST /console/login`, `POST /console/logout`, `POST /console/locale`."""
    router = APIRouter()

    @router.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request, next: str = "/console/") -> Response:
        return _login_page(request, _safe_next(next))

    @router.post("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login(
        request: Request,
        name: Annotated[str, Form(max_length=128)] = "",
        password: Annotated[str, Form(max_length=1024)] = "",
        next: Annotated[str, Form(max_length=2048)] = "/console/",
    ) -> Response:
        console = console_of(request)
        if not name or not password:
            return _login_page(request, _safe_next(next), "login.refused", name=name,
                               status_code=status.HTTP_401_UNAUTHORIZED)
        try:
            token, _ = await log_in(console.deps, console.operators, request, name, password)
        except HTTPException as exc:
            error, values = _refusal(exc)
            return _login_page(request, _safe_next(next), error, name=name, status_code=exc.status_code,
                               **values)
        response = RedirectResponse(_safe_next(next), status.HTTP_303_SEE_OTHER)
        set_session_cookie(request, response, token, console.operators.session_max_seconds)
        response.delete_cookie(LOGIN_COOKIE, path="/console")
        return response

    @router.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        console = console_of(request)
        token = request.cookies.get(SESSION_COOKIE, "")
        live = token.startswith(SESSION_PREFIX)
        operator = await console.operators.authenticate_token(token) if live else None
        if operator is not None:
            await console.operators.end_session(token)
            await console.deps.publisher.publish_audit(audit_record(
                request, operator.name, "operator.logout", target_kind="operator", target=operator.name
            ))
        response = RedirectResponse(LOGIN_PATH, status.HTTP_303_SEE_OTHER)
        response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    @router.post("/locale", include_in_schema=False)
    async def switch_locale(request: Request, locale: Annotated[str, Form(max_length=8)] = "") -> Response:
        principal = await session_principal(request)
        console = console_of(request)
        if locale not in LOCALES:
            locale = DEFAULT_LOCALE
        # The operator's own preference, changed and audited as `PATCH /v1/operators/{name}` does.
        before, after = await console.operators.update(principal.name, locale=locale)
        await console.deps.publisher.publish_audit(audit_record(
            request, principal, "operator.update", target_kind="operator", target=principal.name,
            before=before.model_dump(mode="json"), after=after.model_dump(mode="json"),
        ))
        back = _safe_next(_referer_path(request))
        return RedirectResponse(back, status.HTTP_303_SEE_OTHER)

    return router


def too_many_page(request: Request, wait: int) -> Response:
    """The login page saying when this address may try again (429, `Retry-After`)."""
    response = _login_page(request, "/console/", "login.too_many",
                           status_code=status.HTTP_429_TOO_MANY_REQUESTS, seconds=wait)
    response.headers["Retry-After"] = str(wait)
    return response


def _login_page(request: Request, next_path: str, error: str = "", name: str = "",
                status_code: int = status.HTTP_200_OK, **values: object) -> Response:
    # The token `csrf_checked` will expect: a (perhaps expired) session's own, else the login cookie's.
    session = request.cookies.get(SESSION_COOKIE)
    token = request.cookies.get(LOGIN_COOKIE) or new_login_token()
    locale = _browser_locale(request)
    csrf = csrf_token(session) if session else token
    response = render_frame(request, "login.html", locale=locale, csrf=csrf, status_code=status_code,
                            next=next_path, error=error, error_values=values, name=name)
    if not session:
        response.set_cookie(LOGIN_COOKIE, token, path="/console", httponly=True, samesite="strict",
                            secure=console_of(request).secure_cookies)
    return response


def _refusal(exc: HTTPException) -> tuple[str, dict[str, object]]:
    """The login page's word for the API's answer (the same three cases, no more detail)."""
    if exc.status_code == status.HTTP_429_TOO_MANY_REQUESTS:
        return "login.too_many", {"seconds": (exc.headers or {}).get("Retry-After", "")}
    if exc.status_code == status.HTTP_403_FORBIDDEN:
        return "login.inactive", {}
    return "login.refused", {}


def _browser_locale(request: Request) -> str:
    """Before login there is no operator: the browser's first language if it is English, else zh."""
    accepted = request.headers.get("accept-language", "").lower()
    return "en" if accepted.startswith("en") else DEFAULT_LOCALE


def _here(request: Request) -> str:
    path = request.url.path
    return f"{path}?{request.url.query}" if request.url.query else path


def _referer_path(request: Request) -> str:
    referer = request.headers.get("referer", "")
    marker = referer.find("/console")
    return referer[marker:] if marker >= 0 else "/console/"


def _safe_next(next_path: str) -> str:
    """Only a console path: never an open redirect to another site (`//evil`, `/console\\..`)."""
    if not next_path.startswith("/console") or "//" in next_path or "\\" in next_path:
        return "/console/"
    return next_path


def login_redirect(next_path: str) -> str:
    return f"{LOGIN_PATH}?next={quote(next_path, safe='/')}"

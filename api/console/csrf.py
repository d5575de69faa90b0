"""Cross-site request forgery: every state-changing console request carries a token tied to its session.

The token is an HMAC of the session token (which lives only in the HttpOnly cookie), so it needs no
storage, is different per session, and dies with it. Before login the same check compares the form's
token with a random one in a login cookie (double submit). Forms send it in a hidden `csrf` field,
htmx in the `X-CSRF-Token` header (base.html sets it for every htmx request). SameSite=Strict cookies
already keep other sites' posts unauthenticated; this is the second lock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request

FIELD = "csrf"
HEADER = "X-CSRF-Token"
SESSION_COOKIE = "sb_session"
LOGIN_COOKIE = "sb_login_csrf"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


class CsrfRefused(Exception):
    """A state-changing request without the right token: answered 403 with a page saying so."""


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session (the same on every page of it)."""
    return hmac.new(session_token.encode(), b"switchboard console csrf", hashlib.sha256).hexdigest()


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def expected_token(request: Request) -> str | None:
    """The token this request must carry: the session's, or before login the login cookie's."""
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        return csrf_token(session)
    return request.cookies.get(LOGIN_COOKIE) or None


async def csrf_checked(request: Request) -> None:
    """The one CSRF dependency (on every console route): a POST, PUT, PATCH or DELETE passes only with
    the token in the `X-CSRF-Token` header or the `csrf` form field; otherwise CsrfRefused (403)."""
    if request.method in _SAFE_METHODS:
        return
    expected = expected_token(request)
    if not expected:
        # Refused before the body is read: nobody without a cookie gets a multipart upload spooled.
        raise CsrfRefused()
    sent = request.headers.get(HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(_FORMS):
        # Starlette keeps the parsed form on the request: the route reads the same one.
        value = (await request.form()).get(FIELD)
        sent = value if isinstance(value, str) else None
    if not expected or not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise CsrfRefused()

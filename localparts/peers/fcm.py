"""A local FCM HTTP v1 peer: Google's OAuth2 token endpoint and `messages:send`.

The token endpoint verifies the RS256 JWT assertion with the service account's public key, as Google
does; `messages:send` accepts only the bearer tokens it issued. Answers use FCM's real bodies.
Tests script and inspect it through `app[STATE]` (an `FcmPeerState`).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web

SHORT_LIVED = "Invalid JWT: Token must be a short-lived token (60 minutes)"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

# FCM's answers, as its API sends them: (HTTP status, canonical status, message, FcmError code or None).
# Keys are FcmError codes, except INVALID_TOKEN: FCM's INVALID_ARGUMENT about the token itself.
ERRORS: dict[str, tuple[int, str, str, str | None]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
    "INVALID_TOKEN": (
        400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
        "INVALID_ARGUMENT",
    ),
    "INVALID_ARGUMENT": (
        400, "INVALID_ARGUMENT",
        "Request contains an invalid argument.", "INVALID_ARGUMENT",
    ),
    "QUOTA_EXCEEDED": (
        429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send requests' and limit "
        "'Send requests per minute' of service 'fcm.googleapis.com'.", "QUOTA_EXCEEDED",
    ),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered.", "INTERNAL"),
    "SENDER_ID_MISMATCH": (
        403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH",
    ),
    "THIRD_PARTY_AUTH_ERROR": (
        401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR",
    ),
    "UNAUTHENTICATED": (
        401, "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
        "or other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project.",
        None,
    ),
}


def error_body(code: str) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body FCM answers for one of `ERRORS`."""
    http, status, message, fcm_code = ERRORS[code]
    error: dict[str, Any] = {"code": http, "message": message, "status": status}
    if fcm_code is not None:
        error["details"] = [{"@type": FCM_ERROR, "errorCode": fcm_code}]
    return http, {"error": error}


@dataclass
class FcmPeerState:
    """What the peer saw, and what it answers next."""

    script: list[str] = field(default_factory=list)
    """`ERRORS` codes to answer next, one per send, before any check but the bearer's."""
    received: list[dict[str, Any]] = field(default_factory=list)
    token_requests: int = 0
    tokens: dict[str, float] = field(default_factory=dict)
    """Access tokens issued, with their expiry (epoch seconds)."""
    registrations: set[str] | None = None
    """Known registration tokens, or None to accept any well-formed one."""
    retry_after: str = "30"


STATE = web.AppKey("state", FcmPeerState)


def create_app(
    *, project_id: str, client_email: str, public_key_pem: bytes, token_lifetime: int = 3599
) -> web.Application:
    """The peer of one service account, its state in `app[STATE]`."""
    app = web.Application()
    state = app[STATE] = FcmPeerState()

    async def token(request: web.Request) -> web.Response:
        state.token_requests += 1
        form = await request.post()
        grant = str(form.get("grant_type", ""))
        if grant != GRANT_TYPE:
            return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant}")
        assertion = str(form.get("assertion", ""))
        audience = str(request.url.with_query(None))
        try:
            claims = jwt.decode(
                assertion, public_key_pem, algorithms=["RS256"], audience=audience, issuer=client_email,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.InvalidSignatureError:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        except jwt.ExpiredSignatureError:
            return _oauth_error("invalid_grant", SHORT_LIVED)
        except jwt.PyJWTError as exc:
            return _oauth_error("invalid_grant", f"Invalid JWT: {exc}")
        if claims["exp"] - claims["iat"] > 3600:
            return _oauth_error("invalid_grant", SHORT_LIVED)
        if SCOPE not in str(claims["scope"]).split():
            return _oauth_error("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        access = "ya29." + secrets.token_urlsafe(48)
        state.tokens[access] = time.time() + token_lifetime
        return web.json_response(
            {"access_token": access, "expires_in": token_lifetime, "token_type": "Bearer"}
        )

    async def send(request: web.Request) -> web.Response:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        body = await request.json()
        state.received.append({"headers": dict(request.headers), "json": body, "bearer": bearer})
        if state.tokens.get(bearer, 0.0) < time.time():
            return _error("UNAUTHENTICATED")
        project = request.match_info["project"]
        if project != project_id:
            denied = (
                "Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudmessaging.googleapis.com/projects/{project}' (or it may not exist)."
            )
            error = {"code": 403, "status": "PERMISSION_DENIED", "message": denied}
            return web.json_response({"error": error}, status=403)
        if state.script:
            code = state.script.pop(0)
            if code == "UNAUTHENTICATED":
                state.tokens.pop(bearer, None)  # a revoked token: the next send needs a new one
            return _error(code, state.retry_after if code in ("QUOTA_EXCEEDED", "UNAVAILABLE") else None)
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("token"), str):
            return _error("INVALID_ARGUMENT")
        known = state.registrations
        if len(message["token"]) < 16 or any(c.isspace() for c in message["token"]):
            return _error("INVALID_TOKEN")
        if known is not None and message["token"] not in known:
            return _error("UNREGISTERED")
        data = message.get("data", {})
        if not all(isinstance(v, str) for v in data.values()):
            return _error("INVALID_ARGUMENT")
        name = f"projects/{project_id}/messages/0:{time.time_ns() // 1000}%{secrets.token_hex(8)}"
        return web.json_response({"name": name})

    app.router.add_post("/token", token)
    app.router.add_post("/v1/projects/{project}/messages:send", send)
    return app


def _error(code: str, retry_after: str | None = None) -> web.Response:
    status, body = error_body(code)
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.json_response(body, status=status, headers=headers)


def _oauth_error(error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)

"""A local JPush REST v3 peer: `POST /v3/push` behind HTTP Basic appKey:masterSecret.

It answers with JPush's bodies (`{"sendno": "0", "msg_id": "..."}` or `{"error": {"code", "message"}}`)
and its `X-Rate-Limit-*` headers. A push's `cid` must be one the peer issued (`GET /v3/push/cid`); a
cid already pushed is answered with its first answer and pushed nothing, as JPush does. Tests script
it through `app[STATE]` (a `JPushPeerState`), and sign delivery callbacks with `callback_headers`.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# JPush's answers: code -> (HTTP status, message).
ERRORS: dict[int, tuple[int, str]] = {
    1000: (500, "Server Internal error"),
    1002: (400, "Missing parameter"),
    1003: (400, "Parameter value is invalid"),
    1004: (401, "Authen failed"),
    1005: (400, "Message content too long"),
    1011: (400, "cannot find user by this audience or has been inactive for more than 255 days"),
    2002: (429, "Request times of API exceed the limit"),
    2003: (403, "The appkey has been restricted to call this API"),
    2008: (429, "Broadcast push frequency exceeds the limit"),
}
RATE_LIMIT = 600  # calls per window of a free JPush application
WINDOW = 60


@dataclass
class JPushPeerState:
    """What the peer saw, and what it answers next."""

    script: list[int] = field(default_factory=list)
    """JPush error codes to answer next, one per authenticated push."""
    received: list[dict[str, Any]] = field(default_factory=list)
    registrations: set[str] | None = None
    """Known registration ids, or None to accept any."""
    remaining: int = RATE_LIMIT
    reset: int = WINDOW
    next_msg_id: int = 54_043_200_347
    issued_cids: set[str] = field(default_factory=set)
    pushed_cids: dict[str, dict[str, Any]] = field(default_factory=dict)
    """cid -> the answer of its successful push."""
    repeats: int = 0
    """Pushes answered from `pushed_cids` instead of pushed."""


STATE = web.AppKey("state", JPushPeerState)


def basic_auth(app_key: str, master_secret: str) -> str:
    """The Authorization header JPush expects on pushes and sends on callbacks."""
    return "Basic " + base64.b64encode(f"{app_key}:{master_secret}".encode()).decode()


def callback_headers(app_key: str, master_secret: str) -> dict[str, str]:
    """Headers of a delivery callback as JPush sends it (lower-case names, as CallbackRequest holds)."""
    return {"authorization": basic_auth(app_key, master_secret), "content-type": "application/json"}


def create_app(*, app_key: str, master_secret: str) -> web.Application:
    """The peer of one JPush application, its state in `app[STATE]`."""
    app = web.Application()
    state = app[STATE] = JPushPeerState()
    expected = basic_auth(app_key, master_secret)

    def answer(body: dict[str, Any], status: int = 200) -> web.Response:
        headers = {
            "X-Rate-Limit-Limit": str(RATE_LIMIT),
            "X-Rate-Limit-Remaining": str(max(state.remaining, 0)),
            "X-Rate-Limit-Reset": str(state.reset),
        }
        return web.json_response(body, status=status, headers=headers)

    def error(code: int, msg_id: str | None = None) -> web.Response:
        status, message = ERRORS[code]
        body: dict[str, Any] = {"error": {"code": code, "message": message}}
        if msg_id is not None:
            body["msg_id"] = msg_id
        return answer(body, status)

    async def push(request: web.Request) -> web.Response:
        raw = await request.read()
        auth = request.headers.get("Authorization", "")
        state.received.append({"headers": dict(request.headers), "body": raw, "authorization": auth})
        if not hmac.compare_digest(auth.encode(), expected.encode()):
            return error(1004)
        state.remaining -= 1
        if state.remaining < 0:
            return error(2002)
        msg_id = str(state.next_msg_id)
        state.next_msg_id += 1
        if state.script:
            code = state.script.pop(0)
            return error(code, msg_id if code == 1011 else None)
        try:
            body = await request.json()
        except ValueError:
            return error(1003)
        if not isinstance(body, dict) or "platform" not in body or "audience" not in body:
            return error(1002)
        if "notification" not in body and "message" not in body:
            return error(1002)
        audience = body["audience"]
        ids = audience.get("registration_id") if isinstance(audience, dict) else None
        if not isinstance(ids, list) or not ids or len(ids) > 1000:
            return error(1003)
        if state.registrations is not None and not set(ids) & state.registrations:
            return error(1011, msg_id)
        options = body.get("options", {})
        if not isinstance(options.get("apns_production", False), bool):
            return error(1003)
        cid = body.get("cid")
        if cid is not None and cid in state.pushed_cids:
            state.repeats += 1
            return answer(state.pushed_cids[cid])
        if cid is not None and cid not in state.issued_cids:
            return error(1003)
        result = {"sendno": str(options.get("sendno", 0)), "msg_id": msg_id}
        if cid is not None:
            state.pushed_cids[cid] = result
        return answer(result)

    async def cids(request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected.encode()):
            return error(1004)
        try:
            count = min(max(int(request.query.get("count", "1")), 1), 10)  # 10 for a non-VIP app
        except ValueError:
            return error(1003)
        issued = [f"{app_key}-{uuid.uuid4()}" for _ in range(count)]
        state.issued_cids.update(issued)
        return answer({"cidlist": issued})

    app.router.add_post("/v3/push", push)
    app.router.add_get("/v3/push/cid", cids)
    return app


def new_registration_id() -> str:
    """A registration id shaped like JPush's (hex-ish, 18-22 characters)."""
    return "1a0018970a" + secrets.token_hex(5)

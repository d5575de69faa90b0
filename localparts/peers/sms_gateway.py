"""A local generic SMS gateway speaking the protocol of `channels.sms_gateway`, for tests and the demo.

Checks `X-Sms-Signature` (HMAC-SHA256 of `<X-Sms-Timestamp>.<body>`) and the timestamp's age, then
the number. A request whose `Idempotency-Key` it has accepted before gets the first answer again and
sends nothing (counted in `repeats`). `app[STATE]` holds the accepted bodies, the error names to
answer next (see `ERRORS`) and the segments to report as billed, if any.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_AGE = 300
E164 = re.compile(r"^\+[1-9]\d{6,14}$")

# Name -> (HTTP status, error code, message, Retry-After)
ERRORS: dict[str, tuple[int, str, str, str | None]] = {
    "bad_signature": (401, "bad_signature", "signature does not match the body", None),
    "stale_timestamp": (401, "stale_timestamp", "timestamp is more than 300 seconds off", None),
    "invalid_number": (400, "invalid_number", "the number is not a valid mobile number", None),
    "blocked_recipient": (400, "blocked_recipient", "the recipient opted out of messages", None),
    "content_rejected": (400, "content_rejected", "the text was refused by the carrier", None),
    "throttled": (429, "throttled", "too many messages, slow down", "7"),
    "unavailable": (503, "unavailable", "upstream carrier unavailable", "2"),
}


@dataclass
class GatewayPeerState:
    """What the gateway accepted, and what it answers next."""

    received: list[dict[str, Any]] = field(default_factory=list)
    script: list[str] = field(default_factory=list)
    segments: int | None = None
    """Reported back as the billed segments when set; the adapter counts them itself otherwise."""
    answered: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Idempotency-Key -> the answer given when it was accepted."""
    repeats: int = 0


STATE = web.AppKey("sms_gateway", GatewayPeerState)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header the gateway expects and sends with its reports."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_report(
    secret: str, entries: list[dict[str, Any]], timestamp: float | None = None
) -> tuple[dict[str, str], bytes]:
    """Headers (lower-case names) and body of a delivery-report push, as the gateway sends it."""
    body = json.dumps(entries).encode()
    stamp = str(int(time.time() if timestamp is None else timestamp))
    return {"x-sms-timestamp": stamp, "x-sms-signature": sign(secret, stamp, body)}, body


def error(name: str) -> web.Response:
    status, code, message, retry_after = ERRORS[name]
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def create_app(secret: str) -> web.Application:
    """The gateway's send endpoint at `/sms` for one shared secret, its state in `app[STATE]`."""
    app = web.Application()
    state = app[STATE] = GatewayPeerState()

    async def send(request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get("X-Sms-Timestamp", "")
        if not hmac.compare_digest(sign(secret, stamp, body), request.headers.get("X-Sms-Signature", "")):
            return error("bad_signature")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > MAX_AGE:
            return error("stale_timestamp")
        if state.script:
            return error(state.script.pop(0))
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in state.answered:
            state.repeats += 1
            return web.json_response(state.answered[key], status=202)
        try:
            message = json.loads(body)
        except json.JSONDecodeError:
            body_error = {"error": {"code": "bad_request", "message": "body is not JSON"}}
            return web.json_response(body_error, status=400)
        if not E164.fullmatch(str(message.get("to", ""))):
            return error("invalid_number")
        message_id = f"gw-{len(state.received) + 1}"
        state.received.append({**message, "id": message_id})
        answer: dict[str, Any] = {"id": message_id, "status": "accepted"}
        if state.segments is not None:
            answer["segments"] = state.segments
        if key is not None:
            state.answered[key] = answer
        return web.json_response(answer, status=202)

    app.router.add_post("/sms", send)
    return app

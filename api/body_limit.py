"""Request body limits, enforced while the body is read: a declared length over the limit is refused
before the app runs, and a body without one (chunked) is cut off as soon as it passes the limit, so
no request holds more than the limit in memory. Both answer 413 naming the limit."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import TooLarge, TooLargeError


class BodyLimit:
    """ASGI middleware; `limit_for(path)` gives the limit in bytes of the request's body."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, TooLargeError(f"the request body ({declared} bytes)", limit))
            return
        received = 0
        started = False

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException: FastAPI passes it through body parsing to the app's handler.
                    raise TooLargeError("the request body", limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except TooLargeError as exc:
            if started:
                raise
            await _refuse(send, exc)


async def _refuse(send: Send, exc: TooLargeError) -> None:
    body = json.dumps(TooLarge(detail=str(exc.detail), limit_bytes=exc.limit_bytes).model_dump()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # The rest of the body is not read: the client is told to stop, not made to finish sending.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})

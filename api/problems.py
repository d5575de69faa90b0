"""How the API says no, the same way everywhere and as the OpenAPI documents it: 422 always as the list
of errors FastAPI's own validation gives, 413 naming the limit, 405 with every method the path answers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

log = logging.getLogger(__name__)

# FastAPI's answer when a JSON body cannot even be decoded (invalid UTF-8, nesting past the decoder's
# recursion limit): a client error like any other malformed body, so it is answered like one.
_UNPARSABLE = "There was an error parsing the body"


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class Problem(BaseModel):
    """A refusal: what is wrong, in words."""

    detail: str


class TooLarge(Problem):
    """A request body, or an event in it, over its limit."""

    limit_bytes: int


class TooLargeError(HTTPException):
    """A body (or an event of a batch) over `limit_bytes`; answered as `TooLarge`."""

    def __init__(self, what: str, limit_bytes: int) -> None:
        detail = f"{what} is over the limit of {limit_bytes} bytes"
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, detail)
        self.limit_bytes = limit_bytes


def invalid(loc: Sequence[str | int], message: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 naming the field, in the documented list form (`{"detail": [{"loc", "msg", "type"}]}`)."""
    return RequestValidationError([{"loc": tuple(loc), "msg": message, "type": kind}])


TOO_LARGE: dict[int | str, dict[str, object]] = {
    413: {"model": TooLarge, "description": "The body, or an event in it, is over its limit (named)"},
}


def install_problem_handlers(api: FastAPI) -> None:
    """Answer every HTTP error of `api` in its documented shape."""

    @api.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == status.HTTP_413_CONTENT_TOO_LARGE:
            return _too_large(exc)
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
            return _not_allowed(request)
        if exc.status_code == status.HTTP_400_BAD_REQUEST and exc.detail == _UNPARSABLE:
            cause = exc.__cause__
            reason = f"{type(cause).__name__}: {cause}" if cause is not None else "cannot be decoded"
            message = f"the body is not valid JSON ({reason[:200]})"
            error = {"loc": ["body"], "msg": message, "type": "json_invalid"}
            return JSONResponse({"detail": [error]}, status.HTTP_422_UNPROCESSABLE_CONTENT)
        if exc.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT and isinstance(exc.detail, str):
            error = {"loc": ["body"], "msg": exc.detail, "type": "value_error"}
            return JSONResponse({"detail": [error]}, exc.status_code, headers=exc.headers)
        return await http_exception_handler(request, exc)


def _too_large(exc: HTTPException) -> JSONResponse:
    if not isinstance(exc, TooLargeError):
        return JSONResponse({"detail": str(exc.detail)}, exc.status_code)
    problem = TooLarge(detail=exc.detail, limit_bytes=exc.limit_bytes)
    return JSONResponse(problem.model_dump(), exc.status_code)


def _documented_methods(api: FastAPI, path: str) -> set[str]:
    matching = [
        (template.count("{"), methods)
        for template, methods in api.openapi().get("paths", {}).items()
        if re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), path)
    ]
    if not matching:
        return set()
    fewest = min(params for params, _ in matching)
    methods = {m.upper() for params, ms in matching if params == fewest for m in ms}
    return methods | ({"HEAD"} if "GET" in methods else set())


def _not_allowed(request: Request) -> JSONResponse:
    # Starlette names only the methods of the first route that matched the path; a path served by
    # several routes (GET and POST of /u/{token}) answers every one of them. The path is the most
    # specific template that matches, as the OpenAPI states it: /v1/consent/unsubscribes, not
    # /v1/consent/{user_id}.
    allowed = _documented_methods(request.app, request.url.path) or {
        method
        for method in _METHODS
        for route in request.app.router.routes
        if route.matches({**request.scope, "method": method})[0] == Match.FULL
    }
    return JSONResponse(
        {"detail": f"{request.method} is not allowed here; use {', '.join(sorted(allowed))}"},
        status.HTTP_405_METHOD_NOT_ALLOWED,
        headers={"Allow": ", ".join(sorted(allowed))},
    )

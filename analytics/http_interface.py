"""ClickHouse's HTTP interface over the embedded engine, for analysts' own tools and Switchboard's reader.

Speaks enough of https://clickhouse.com/docs/interfaces/http for clickhouse-connect and curl: queries by
GET (`?query=`, always read-only, as in ClickHouse) and POST (the body, or `query` plus the body as an
INSERT's data), `FORMAT` in the query or `default_format`, `database`, `query_id`, `param_*` query
parameters, settings as URL parameters, `/ping`, the `X-ClickHouse-*` response headers, ClickHouse-style
errors with their status codes, gzip responses (`enable_http_compression=1` with `Accept-Encoding:
gzip`) and gzip/deflate/lz4 request bodies. Users and their limits come from `Analysts`; a read-only
user's session is opened with `readonly=1` and the limits, so nothing the client sends can lift them.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from analytics.analysts import Analyst, Analysts
from analytics.query_engine import (
    SYNTAX_ERROR,
    ChdbEngine,
    EngineError,
    QueryEngine,
    QueryOutput,
    chdb_engine,
)
from analytics.request_settings import TRANSPORT_PARAMS, harmless, readonly_refusal

__all__ = ["ChdbEngine", "EngineError", "QueryEngine", "chdb_engine", "create_http_interface"]

log = logging.getLogger(__name__)

SERVER_NAME = "switchboard-analytics"
MAX_BODY_BYTES = 256 * 1024 * 1024
CONCURRENT_QUERIES = 4  # the engine's threads are shared; more at once only queue inside it

AUTHENTICATION_FAILED = 516
READONLY = 164
UNKNOWN_SETTING = 115
QUERY_IS_TOO_LARGE = 393
CANNOT_DECOMPRESS = 271
UNKNOWN_TABLE, UNKNOWN_DATABASE = 60, 81

# ClickHouse's own mapping of exception codes to HTTP statuses (Server/HTTP/exceptionCodeToHTTPStatus).
_BAD_REQUEST = frozenset(
    {6, 25, 26, 27, 32, 38, 41, 62, 72, 117, 167, 168, 169, 170, 306, 36, 43, 44, 47, 53, 57, 70, 386}
)
_NOT_FOUND = frozenset({46, 60, 63, 73, 81, 115, 364, 16})
_FORBIDDEN = frozenset({AUTHENTICATION_FAILED, 192, 193, 194, 497, READONLY})

_FORMAT_AT_END = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_LINE_COMMENT = re.compile(r"--[^\n]*$|#[^\n]*$", re.MULTILINE)
_INSERT_WITH_FORMAT = re.compile(
    rb"^(?P<statement>\s*INSERT\b.*?)\bFORMAT\s+(?P<format>[A-Za-z0-9_]+)[ \t]*(?:\r?\n|$)",
    re.IGNORECASE | re.DOTALL,
)
_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
}


@dataclass(frozen=True)
class _Query:
    sql: str
    fmt: str
    insert_data: bytes | None


def create_http_interface(engine: QueryEngine, analysts: Analysts) -> ASGIApp:
    """The ASGI app serving ClickHouse's HTTP interface over `engine` to `analysts`."""
    limiter = anyio.CapacityLimiter(CONCURRENT_QUERIES)
    timezone = _engine_timezone(engine)

    async def ping(request: Request) -> Response:
        return PlainTextResponse("Ok.\n")

    async def query(request: Request) -> Response:
        query_id = (
            request.query_params.get("query_id")
            or request.headers.get("x-clickhouse-query-id")
            or str(uuid.uuid4())
        )
        headers = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Server-Display-Name": SERVER_NAME}
        if timezone:
            headers["X-ClickHouse-Timezone"] = timezone
        started = time.perf_counter_ns()
        try:
            analyst = _authenticate(request, analysts)
            plan = _plan(await _read_body(request), request)
            readonly = analyst.readonly or request.method == "GET"
            settings = _session_settings(request, analyst, readonly)
            output = await anyio.to_thread.run_sync(
                lambda: engine.execute(
                    plan.sql,
                    fmt=plan.fmt,
                    database=request.query_params.get("database", ""),
                    settings=settings,
                    body=plan.insert_data,
                    params=_query_params(request),
                ),
                limiter=limiter,
            )
        except EngineError as error:
            log.info("query %s refused: code %d", query_id, error.code)
            return _error_response(error, headers)
        elapsed = time.perf_counter_ns() - started
        log.debug("query %s by %s: %d bytes in %d µs", query_id, analyst.name, len(output), elapsed // 1000)
        headers["X-ClickHouse-Format"] = plan.fmt
        headers["X-ClickHouse-Summary"] = _summary(output, elapsed)
        content_type = _content_type(plan.fmt)
        body = bytes(output)
        if _wants_gzip(request):
            compressor = zlib.compressobj(level=3, wbits=31)  # wbits 31: a gzip container
            body = compressor.compress(body) + compressor.flush()
            headers["Content-Encoding"] = "gzip"
        return Response(body, headers=headers, media_type=content_type)

    return Starlette(
        routes=[
            Route("/", query, methods=["GET", "POST"]),
            Route("/ping", ping, methods=["GET", "HEAD"]),
            Route("/replicas_status", ping, methods=["GET"]),
        ]
    )


def _engine_timezone(engine: QueryEngine) -> str:
    if isinstance(engine, ChdbEngine):
        try:
            return engine.timezone()
        except EngineError:
            return ""
    return "UTC"


def _authenticate(request: Request, analysts: Analysts) -> Analyst:
    """Who the request is, by ClickHouse's three schemes (headers, Basic auth, `user`/`password`)."""
    params = request.query_params
    header_user = request.headers.get("x-clickhouse-user")
    header_key = request.headers.get("x-clickhouse-key")
    basic = request.headers.get("authorization")
    if header_user is not None or header_key is not None:
        if basic is not None or "user" in params or "password" in params:
            raise _auth_error(
                "it is not allowed to use X-ClickHouse HTTP headers and other authentication "
                "methods simultaneously"
            )
        user, password = header_user or "default", header_key or ""
    elif basic is not None:
        if "user" in params or "password" in params:
            raise _auth_error(
                "it is not allowed to use Authorization HTTP header and authentication via "
                "parameters simultaneously"
            )
        user, password = _basic_credentials(basic)
    else:
        user, password = params.get("user", "default"), params.get("password", "")
    analyst = analysts.authenticate(user, password)
    if analyst is None:
        raise EngineError(
            AUTHENTICATION_FAILED,
            f"Code: {AUTHENTICATION_FAILED}. DB::Exception: {user}: Authentication failed: password is "
            "incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)",
        )
    return analyst


def _basic_credentials(header: str) -> tuple[str, str]:
    import base64
    import binascii

    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise _auth_error(f"'{scheme}' HTTP Authorization scheme is not supported")
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise _auth_error("the Basic credentials are not valid base64 of user:password") from None
    return user, password


def _auth_error(reason: str) -> EngineError:
    return EngineError(
        AUTHENTICATION_FAILED,
        f"Code: {AUTHENTICATION_FAILED}. DB::Exception: Invalid authentication: {reason}. "
        "(AUTHENTICATION_FAILED)",
    )


async def _read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise EngineError(
                QUERY_IS_TOO_LARGE,
                f"Code: {QUERY_IS_TOO_LARGE}. DB::Exception: the request body is larger than "
                f"{MAX_BODY_BYTES} bytes. (QUERY_IS_TOO_LARGE)",
            )
        chunks.append(chunk)
    return _decompress(b"".join(chunks), request.headers.get("content-encoding", ""))


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return body
        if encoding == "gzip":
            return zlib.decompress(body, wbits=47)  # 47: gzip or zlib container, detected
        if encoding == "deflate":
            return zlib.decompress(body)
        if encoding == "lz4":
            import lz4.frame  # type: ignore[import-untyped]

            return bytes(lz4.frame.decompress(body))
    except (zlib.error, RuntimeError, ValueError) as exc:
        raise EngineError(
            CANNOT_DECOMPRESS,
            f"Code: {CANNOT_DECOMPRESS}. DB::Exception: cannot decompress the {encoding} request body: "
            f"{exc}. (CANNOT_DECOMPRESS)",
        ) from None
    raise EngineError(
        CANNOT_DECOMPRESS,
        f"Code: {CANNOT_DECOMPRESS}. DB::Exception: unsupported Content-Encoding {encoding!r}; "
        "send gzip, deflate, lz4 or none. (CANNOT_DECOMPRESS)",
    )


def _plan(body: bytes, request: Request) -> _Query:
    """The statement, its format and an INSERT's data, from the `query` parameter and the body.

    As in ClickHouse, the `query` parameter and the body form one text; an INSERT's data starts on the
    line after its `FORMAT name`, and may be binary (clickhouse-connect sends Native blocks this way)."""
    in_url = request.query_params.get("query")
    if in_url is None and request.method == "GET":
        raise _syntax("no query: pass it as ?query= (GET) or as the request body (POST)")
    text = (
        (in_url.encode() + b"\n" + body) if in_url is not None and body else (in_url or "").encode() or body
    )
    insert = _INSERT_WITH_FORMAT.match(text)
    if insert is not None:
        statement = _utf8(insert.group("statement")).strip()
        return _Query(statement, _utf8(insert.group("format")), text[insert.end() :])
    sql = _utf8(text)
    if not sql.strip():
        raise _syntax("empty query")
    written = _FORMAT_AT_END.search(_LINE_COMMENT.sub("", sql).rstrip())
    default_format = request.query_params.get("default_format", "TabSeparated")
    return _Query(sql, written.group(1) if written else default_format, None)


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise _syntax("the query is not UTF-8") from None


def _syntax(reason: str) -> EngineError:
    return EngineError(SYNTAX_ERROR, f"Code: {SYNTAX_ERROR}. DB::Exception: {reason}. (SYNTAX_ERROR)")


def _session_settings(request: Request, analyst: Analyst, readonly: bool) -> dict[str, str]:
    """Settings from the URL first, then the analyst's limits, then readonly: the engine applies them in
    order, so once `readonly=1` is set no later change (URL, SETTINGS clause, SET) is accepted."""
    settings: dict[str, str] = {}
    for name, value in request.query_params.items():
        if name in TRANSPORT_PARAMS or name.startswith("param_"):
            continue
        if readonly and not harmless(name):
            raise EngineError(READONLY, readonly_refusal(name))
        settings[name] = value
    settings.update(analyst.limits())
    # Every reader's FINAL reads merge within a monthly partition only (parts never merge across them):
    # the same rows for less CPU; a read-only session (the funnel's, through here) cannot ask for it.
    settings["do_not_merge_across_partitions_select_final"] = "1"
    if readonly:
        settings["readonly"] = "1"
    return settings


def _query_params(request: Request) -> dict[str, str]:
    return {
        name[len("param_") :]: value
        for name, value in request.query_params.items()
        if name.startswith("param_")
    }


def _summary(output: bytes, elapsed_ns: int) -> str:
    stats = output if isinstance(output, QueryOutput) else QueryOutput(output)
    return json.dumps(
        {
            "read_rows": str(stats.read_rows),
            "read_bytes": str(stats.read_bytes),
            "written_rows": str(stats.written_rows),
            "written_bytes": str(stats.written_bytes),
            "total_rows_to_read": str(stats.read_rows),
            "result_rows": "0",
            "result_bytes": str(len(output)),
            "elapsed_ns": str(stats.elapsed_ns or elapsed_ns),
        }
    )


def _content_type(fmt: str) -> str:
    if fmt in _CONTENT_TYPES:
        return _CONTENT_TYPES[fmt]
    if fmt.startswith(("TabSeparated", "TSV")):
        return "text/tab-separated-values; charset=UTF-8"
    if fmt.startswith("CSV"):
        return "text/csv; charset=UTF-8"
    if fmt.startswith("JSON"):
        return "application/json; charset=UTF-8"
    if fmt in ("Pretty", "PrettyCompact", "Vertical", "Markdown", "Values", "XML", "Template", "Raw"):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


def _wants_gzip(request: Request) -> bool:
    if request.query_params.get("enable_http_compression", "0") not in ("1", "true"):
        return False
    accepted = request.headers.get("accept-encoding", "")
    return "gzip" in (part.split(";")[0].strip() for part in accepted.split(","))


def _error_response(error: EngineError, headers: Mapping[str, str]) -> Response:
    status = 500
    if error.code in _FORBIDDEN:
        status = 403
    elif error.code in _NOT_FOUND:
        status = 404
    elif error.code in _BAD_REQUEST:
        status = 400
    elif error.code == QUERY_IS_TOO_LARGE:
        status = 413
    elif error.code == 48:
        status = 501
    message = error.message if error.message.endswith("\n") else error.message + "\n"
    return PlainTextResponse(
        message,
        status_code=status,
        headers={**headers, "X-ClickHouse-Exception-Code": str(error.code)},
    )

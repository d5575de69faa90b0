"""Run one HTTP-interface query on the embedded ClickHouse engine (chdb), in its own session.

chdb (>= 4) allows any number of connections to the engine's one data folder, each with its own session
settings, and runs queries of different connections in parallel. Every query therefore runs on a
connection whose session was opened with the server's settings for that user (`readonly=1`, limits,
database): a setting fixed at the session's start cannot be changed by the query's own `SETTINGS`
clause or a `SET` in readonly mode (ClickHouse answers code 164), so read-only is enforced by the
engine, not trusted to the client. Connections are pooled per set of session settings.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

import chdb

from analytics.connection import parse_dsn

_CODE = re.compile(r"Code: (\d+)\. ")
# Outside string literals and quoted names, which formatQuery leaves quoted one way.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)
_FILE_CLAUSE = re.compile(r"\bINTO\s+OUTFILE\b|\bFROM\s+INFILE\b", re.IGNORECASE)
_IDLE_PER_SESSION = 4
_SESSIONS_KEPT = 32

SYNTAX_ERROR = 62
QUERY_NOT_ALLOWED = 48  # NOT_IMPLEMENTED: what ClickHouse answers for INTO OUTFILE over HTTP


class EngineError(Exception):
    """A ClickHouse exception: its code and its message (`Code: N. DB::Exception: ...`)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def from_engine(cls, exc: BaseException) -> EngineError:
        text = str(exc).strip()
        # chdb sometimes nests "Code: N. DB::Exception: Code: N. DB::Exception: ..."; keep the innermost.
        starts = [match for match in _CODE.finditer(text)]
        if not starts:
            return cls(1001, f"Code: 1001. DB::Exception: {text} (STD_EXCEPTION)")
        last = starts[-1]
        return cls(int(last.group(1)), text[last.start() :])


class QueryOutput(bytes):
    """A query's output bytes, with what the engine reports about the work (for X-ClickHouse-Summary)."""

    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    elapsed_ns: int = 0


class QueryEngine(Protocol):
    """Runs one statement with session settings applied in order; raises EngineError."""

    def execute(
        self,
        sql: str,
        *,
        fmt: str,
        database: str,
        settings: Mapping[str, str],
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> bytes: ...


class ChdbEngine:
    """The QueryEngine over the embedded engine's data folder; thread-safe, pooled per session settings."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._idle: OrderedDict[str, list[Any]] = OrderedDict()

    def execute(
        self,
        sql: str,
        *,
        fmt: str,
        database: str,
        settings: Mapping[str, str],
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> bytes:
        """Run `sql` in a session opened with `settings` (in order) and `database`.

        With `body`, `sql` is an INSERT without its FORMAT clause and `body` the data in format `fmt`."""
        with self._session(database, settings) as connection:
            if body is not None:
                return _insert(connection, sql, fmt, body)
            _refuse_file_clauses(connection, sql)
            try:
                result = connection.query(sql, fmt, params=dict(params or {}))
            except Exception as exc:
                raise EngineError.from_engine(exc) from None
            output = QueryOutput(result.bytes())
            output.read_rows = int(result.rows_read())
            output.read_bytes = int(result.bytes_read())
            output.elapsed_ns = int(result.elapsed() * 1e9)
            return output

    def timezone(self) -> str:
        with self._session("", {}) as connection:
            return str(connection.query("SELECT timezone()", "TabSeparated").bytes().decode().strip())

    def close(self) -> None:
        with self._lock:
            sessions, self._idle = self._idle, OrderedDict()
        for connections in sessions.values():
            for connection in connections:
                with contextlib.suppress(Exception):
                    connection.close()

    @contextlib.contextmanager
    def _session(self, database: str, settings: Mapping[str, str]) -> Iterator[Any]:
        options = dict(settings)
        if database:
            options = {"database": database, **options}
        key = f"{self._path}?{urlencode(options)}" if options else self._path
        with self._lock:
            idle = self._idle.get(key)
            connection = idle.pop() if idle else None
        if connection is None:
            try:
                connection = chdb.connect(key)  # type: ignore[no-untyped-call]
            except Exception as exc:
                raise EngineError.from_engine(exc) from None
        reusable = False
        try:
            yield connection
            reusable = True
        except EngineError:
            reusable = True  # a refused query leaves the session as it was
            raise
        finally:
            if reusable:
                self._keep(key, connection)
            else:
                with contextlib.suppress(Exception):
                    connection.close()

    def _keep(self, key: str, connection: Any) -> None:
        evicted: list[Any] = []
        with self._lock:
            idle = self._idle.setdefault(key, [])
            self._idle.move_to_end(key)
            if len(idle) < _IDLE_PER_SESSION:
                idle.append(connection)
            else:
                evicted.append(connection)
            while len(self._idle) > _SESSIONS_KEPT:
                evicted.extend(self._idle.popitem(last=False)[1])
        for extra in evicted:
            with contextlib.suppress(Exception):
                extra.close()


def chdb_engine(dsn: str) -> ChdbEngine:
    """The engine behind `dsn` (`chdb:///path`), the same one the analytics service's client opened."""
    target = parse_dsn(dsn)
    if target.kind != "chdb":
        raise ValueError(f"the HTTP interface serves an embedded engine; {target.safe_dsn} is a server")
    return ChdbEngine(str(target.path) if target.path is not None else ":memory:")


def _refuse_file_clauses(connection: Any, sql: str) -> None:
    """Refuse what ClickHouse refuses over HTTP but the embedded engine (a local client) would do:
    several statements in one request, and reading or writing the service's own files."""
    try:
        formatted = connection.query(
            "SELECT formatQuery({q:String})", "TabSeparatedRaw", params={"q": _escaped(sql)}
        )
    except Exception as exc:
        raise EngineError.from_engine(exc) from None
    if _FILE_CLAUSE.search(_QUOTED.sub("''", formatted.bytes().decode(errors="replace"))):
        raise EngineError(
            QUERY_NOT_ALLOWED,
            f"Code: {QUERY_NOT_ALLOWED}. DB::Exception: INTO OUTFILE and FROM INFILE are not allowed over "
            "the HTTP interface: they would read or write the server's files. (NOT_IMPLEMENTED)",
        )


def _escaped(text: str) -> str:
    """A query parameter's value as the engine reads it: TSV-escaped."""
    return text.translate(_TSV_ESCAPES)


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"})


def _insert(connection: Any, statement: str, fmt: str, body: bytes) -> bytes:
    try:
        with connection.send_insert(statement, fmt) as inserter:
            if body:
                inserter.append(body)
            result = inserter.finish()
    except Exception as exc:
        raise EngineError.from_engine(exc) from None
    output = QueryOutput(b"")
    output.written_rows = int(getattr(result, "rows_written", 0))
    output.written_bytes = int(getattr(result, "bytes_written", 0))
    return output

"""Open a ClickHouse client from one DSN: embedded chdb locally, a server over HTTP in production."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from settings import Settings
from settings.errors import SwitchboardError

Kind = Literal["chdb", "http"]


class ClickHouseDsnError(SwitchboardError, ValueError):
    """A SWITCHBOARD_CLICKHOUSE value that names no usable ClickHouse."""


class ClickHouseUnavailable(SwitchboardError, RuntimeError):
    """The DSN was well formed but the engine or server could not be opened."""


@dataclass(frozen=True)
class ClickHouseTarget:
    """A parsed DSN: where ClickHouse is, with the password kept out of repr."""

    kind: Kind
    dsn: str = field(repr=False)
    path: Path | None = None  # chdb data folder; None means in memory
    host: str = ""
    password: str = field(default="", repr=False)

    @property
    def safe_dsn(self) -> str:
        return redact_dsn(self.dsn)


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by `***`, fit for logs and error messages."""
    try:
        parts = urlsplit(dsn)
        password = parts.password
    except ValueError:
        return "<unparseable DSN>"
    if not password:
        return dsn
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_dsn(dsn: str) -> ClickHouseTarget:
    """Check a DSN's shape: `chdb:///abs/path`, `chdb://memory` or `http(s)://[user:pass@]host[:port][/db]`."""
    safe = redact_dsn(dsn)
    try:
        parts = urlsplit(dsn)
        port = parts.port  # raises on a non-numeric port
        password = parts.password or ""
    except ValueError as exc:
        raise ClickHouseDsnError(f"ClickHouse DSN {safe!r} is malformed: {exc}") from None
    if parts.scheme == "chdb":
        if parts.netloc == "memory" and parts.path in ("", "/"):
            return ClickHouseTarget(kind="chdb", dsn=dsn)
        if parts.netloc:
            raise ClickHouseDsnError(
                f"ClickHouse DSN {safe!r}: a chdb DSN is chdb:///absolute/path or chdb://memory "
                f"(got location {parts.netloc!r}; an absolute path needs three slashes)"
            )
        if not parts.path.startswith("/") or parts.query:
            raise ClickHouseDsnError(f"ClickHouse DSN {safe!r}: expected chdb:///absolute/path")
        return ClickHouseTarget(kind="chdb", dsn=dsn, path=Path(parts.path))
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ClickHouseDsnError(f"ClickHouse DSN {safe!r} names no host")
        if port == 0:
            raise ClickHouseDsnError(f"ClickHouse DSN {safe!r} has port 0")
        return ClickHouseTarget(kind="http", dsn=dsn, host=parts.hostname, password=password)
    raise ClickHouseDsnError(
        f"ClickHouse DSN {safe!r} has scheme {parts.scheme or '(none)'!r}; "
        "expected chdb:///abs/path, chdb://memory or http(s)://user:pass@host:port/db"
    )


def open_clickhouse(dsn: str) -> Client:
    """A clickhouse-connect client for `dsn`; creates the chdb folder. Datetimes come back UTC-aware."""
    target = parse_dsn(dsn)
    if target.path is not None:
        try:
            target.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClickHouseUnavailable(
                f"cannot create the chdb data folder {target.path}: {exc.strerror}"
            ) from None
    try:
        return clickhouse_connect.get_client(dsn=dsn, tz_mode="aware")
    except Exception as exc:
        # clickhouse-connect errors may quote the URL; never let the password through, even chained.
        message = str(exc)
        for secret in {target.password, unquote(target.password)} - {""}:
            message = message.replace(secret, "***")
        hint = ""
        if target.path is not None:
            holder = chdb_holder(target.path)
            hint = (
                f" (chdb allows one process per data folder, and pid {holder} holds it)"
                if holder is not None
                else " (chdb allows one data folder per process and one process per folder)"
            )
        raise ClickHouseUnavailable(
            f"cannot open ClickHouse at {target.safe_dsn}: {type(exc).__name__}: {message}{hint}"
        ) from None


def chdb_holder(folder: Path) -> int | None:
    """The pid of another live process that has this chdb data folder open, if any.

    The engine writes its pid to `status` in the folder while it has it open and removes the file when
    it closes; a file left by a crash names a pid that is gone (or reused, hence the cmdline check)."""
    try:
        first = (folder / "status").read_text().splitlines()[0]
        pid = int(first.removeprefix("PID:").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    # chdb runs inside a Python process; any other program under that pid is a reused pid.
    return pid if pid != os.getpid() and b"python" in cmdline else None


READER_USER = "switchboard"
"""The built-in read-only user of the analytics service's HTTP interface that Switchboard's own
commands and the API read as."""


def open_reader(settings: Settings, timeout: float = 2.0) -> Client:
    """A client to read analytics with, from any process but the analytics service.

    A ClickHouse server (`http(s)://`) is read directly. The embedded engine belongs to the analytics
    service: read through its HTTP interface while it runs; when nothing holds the folder (the service
    is stopped), open it directly so a report still works offline."""
    target = parse_dsn(settings.clickhouse)
    if target.kind == "http":
        return open_clickhouse(settings.clickhouse)
    if service_listening(settings.analytics_host, settings.analytics_port, timeout):
        try:
            return clickhouse_connect.get_client(
                host=settings.analytics_host,
                port=settings.analytics_port,
                username=READER_USER,
                password=settings.reader_password().get_secret_value(),
                tz_mode="aware",
                connect_timeout=timeout,
            )
        except Exception as exc:
            raise ClickHouseUnavailable(
                f"the analytics service at {settings.analytics_host}:{settings.analytics_port} refused "
                f"Switchboard's reader: {type(exc).__name__}: {exc}"
            ) from None
    if target.path is not None and (holder := chdb_holder(target.path)) is not None:
        raise ClickHouseUnavailable(
            f"pid {holder} holds the analytics data in {target.path}, but nothing answers on "
            f"{settings.analytics_host}:{settings.analytics_port}; run `switchboard analytics` to serve it"
        )
    return open_clickhouse(settings.clickhouse)


def service_listening(host: str, port: int, timeout: float) -> bool:
    """Whether something (the analytics service) accepts connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False

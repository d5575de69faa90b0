"""DSN parsing for ClickHouse: the accepted shapes, clear errors, and no password in any message."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics.connection import (
    ClickHouseDsnError,
    ClickHouseUnavailable,
    open_clickhouse,
    parse_dsn,
    redact_dsn,
)

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    ("dsn", "kind", "path", "host"),
    [
        ("chdb:///var/lib/switchboard/clickhouse", "chdb", Path("/var/lib/switchboard/clickhouse"), ""),
        ("chdb://memory", "chdb", None, ""),
        ("http://127.0.0.1:8123", "http", None, "127.0.0.1"),
        (f"https://analyst:{SECRET}@ch.example.com:8443/switchboard", "http", None, "ch.example.com"),
    ],
)
def test_accepted_dsns(dsn: str, kind: str, path: Path | None, host: str) -> None:
    target = parse_dsn(dsn)
    assert (target.kind, target.path, target.host) == (kind, path, host)


@pytest.mark.parametrize(
    ("dsn", "says"),
    [
        ("chdb://relative/path", "three slashes"),
        ("chdb:relative", "absolute/path"),
        ("clickhouse://host:9000", "scheme 'clickhouse'"),
        ("/just/a/path", r"scheme '\(none\)'"),
        ("http://:8123", "no host"),
        (f"http://user:{SECRET}@host:notaport/db", "malformed"),
    ],
)
def test_bad_dsns_are_explained(dsn: str, says: str) -> None:
    with pytest.raises(ClickHouseDsnError, match=says) as caught:
        parse_dsn(dsn)
    assert SECRET not in str(caught.value)


def test_password_is_never_shown() -> None:
    dsn = f"http://analyst:{SECRET}@ch.example.com:8123/db"
    assert redact_dsn(dsn) == "http://analyst:***@ch.example.com:8123/db"
    target = parse_dsn(dsn)
    assert SECRET not in repr(target)
    assert SECRET not in target.safe_dsn
    assert redact_dsn("chdb:///a/b") == "chdb:///a/b"


def test_unreachable_server_error_hides_the_password() -> None:
    # Port 1 on loopback refuses at once; the error must name the place but not the secret.
    with pytest.raises(ClickHouseUnavailable, match=r"127\.0\.0\.1:1") as caught:
        open_clickhouse(f"http://analyst:{SECRET}@127.0.0.1:1/db?connect_timeout=1")
    assert SECRET not in str(caught.value)
    assert caught.value.__suppress_context__  # the driver's own error, which may quote the URL, is not shown

"""The API's way into ClickHouse: a reader opened on first use (never at start-up), one query at a time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)
T = TypeVar("T")


class AnalyticsUnavailable(RuntimeError):
    """ClickHouse could not be opened or did not answer. The API says 503 without the details; the
    command line shows `reason` (free of passwords: open_reader redacts them)."""

    def __init__(self, reason: str) -> None:
        super().__init__("analytics unavailable, retry later")
        self.reason = reason


class LazyReader:
    """Opens the reader (`open_reader(settings)` in production, the test's client in tests) when the
    first report asks, and runs queries one at a time: clickhouse-connect refuses concurrent queries in
    one session, and the API serves reports from a thread pool."""

    def __init__(self, opener: Callable[[], Client]) -> None:
        self._opener = opener
        self._client: Client | None = None
        self._lock = threading.Lock()

    def run(self, work: Callable[[Client], T]) -> T:
        """Call `work` with the client; AnalyticsUnavailable when ClickHouse cannot be reached or fails."""
        with self._lock:
            if self._client is None:
                try:
                    self._client = self._opener()
                except Exception as exc:
                    # The reason goes to the log (it is free of passwords: open_reader redacts them).
                    log.warning("opening analytics failed: %s", exc)
                    raise AnalyticsUnavailable(str(exc)) from None
            try:
                return work(self._client)
            except (ValueError, LookupError):
                raise  # the caller's mistake or a missing record, not ClickHouse's
            except Exception as exc:
                log.warning("analytics query failed: %s: %s", type(exc).__name__, exc)
                # A broken connection is opened afresh next time.
                self._client = None
                raise AnalyticsUnavailable(f"{type(exc).__name__}: {exc}") from None

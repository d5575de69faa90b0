"""Opening Redis the same way everywhere: a blocking pool, so bursts wait for a connection instead of
failing with "Too many connections", and redis-py's own retry with backoff when Redis goes away.

A worker's client is `patient`: while Redis is down (restarted, failing over, loading its AOF) every
command waits and retries with backoff until Redis is back, so a stage pauses where it is and resumes
with its batch, its claims and its unrecorded outcomes still in hand; SIGTERM cancels the wait. Other
clients (the API, the command line) give up after a few tries so their callers get an error at once.

A command is retried when its connection failed. If Redis executed it and only the reply was lost,
it runs twice: harmless for the worker's writes (SET, ZADD, HSET, the scripts that check before they
change), an over-count for counters (HINCRBY of the flow counters), and for a send claim (SET NX) a
claim that looks taken, so that dispatch is parked until the claim lapses and then sent once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from settings import redact_url

log = logging.getLogger("switchboard.redis")

MAX_CONNECTIONS = 64
WAIT_SECONDS = 20.0
# A command on a live server answers in milliseconds; this bounds a dead connection, not a slow one.
SOCKET_SECONDS = 10.0
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0  # at most this long between tries: a restarted Redis is used within ~2 s
IMPATIENT_RETRIES = 2

_T = TypeVar("_T")


class RedisOutage:
    """One warning when Redis becomes unreachable and one when it is back, however many commands
    and connections wait meanwhile.

    Redis shutting down still answers some connections while it closes others, so the outage ends
    only at a success that comes `QUIET_SECONDS` after the last failure."""

    QUIET_SECONDS = 1.0

    def __init__(self, where: str) -> None:
        self._where = where
        self._since: float | None = None
        self._last_failure = 0.0
        self.outages = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException) -> None:
        self._last_failure = time.monotonic()
        if self._since is None:
            self._since = self._last_failure
            self.outages += 1
            log.warning(
                "Redis at %s unreachable (%s: %s); pausing and retrying with backoff until it is back",
                self._where,
                type(error).__name__,
                " ".join(str(error).split())[:200],
            )

    def succeeded(self) -> None:
        if self._since is None:
            return
        now = time.monotonic()
        if now - self._last_failure >= self.QUIET_SECONDS:
            log.warning("Redis at %s is back after %.1f s; resuming", self._where, now - self._since)
            self._since = None

    def __deepcopy__(self, memo: dict[int, Any]) -> RedisOutage:
        return self  # every connection's copy of the retry reports to the one tracker


class OutageRetry(Retry):
    """redis-py's Retry, reporting failures and the first success after them to a `RedisOutage`."""

    def __init__(self, outage: RedisOutage, retries: int) -> None:
        super().__init__(ExponentialWithJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), retries)
        self.outage = outage

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[_T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> _T:
        failures = 0

        async def noted(error: Exception, *count: int) -> Any:
            nonlocal failures
            failures += 1
            # A first failure may be a pooled connection that a restarted Redis closed while it sat
            # idle: the reconnect settles it, and it is no outage. A second one is.
            if failures > 1:
                self.outage.failed(error)
            return await fail(error, *count)

        result = await super().call_with_retry(do, noted, is_retryable, with_failure_count)
        self.outage.succeeded()
        return result


class ScriptSafePipeline(Pipeline):
    """A pipeline that loads its scripts again when it is retried on a new connection.

    redis-py loads a pipeline's scripts once, before the retried part: a Redis restarted meanwhile has
    forgotten them, and the retried EVALSHA would fail with NOSCRIPT."""

    _retrying = False

    async def _disconnect_raise_on_watching(self, *args: Any, **kwargs: Any) -> None:
        self._retrying = True
        await super()._disconnect_raise_on_watching(*args, **kwargs)

    async def _execute_transaction(self, *args: Any, **kwargs: Any) -> Any:
        await self._reload_scripts()
        return await super()._execute_transaction(*args, **kwargs)

    async def _execute_pipeline(self, *args: Any, **kwargs: Any) -> Any:
        await self._reload_scripts()
        return await super()._execute_pipeline(*args, **kwargs)

    async def _reload_scripts(self) -> None:
        if self._retrying and self.scripts:
            self._retrying = False
            await self.load_scripts()  # type: ignore[no-untyped-call]

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        self._retrying = False
        return await super().execute(raise_on_error)


class SwitchboardRedis(Redis):
    """The Redis client with script-safe pipelines, and the outage tracker of its retries."""

    outage: RedisOutage

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return ScriptSafePipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


def open_redis(
    url: str, max_connections: int = MAX_CONNECTIONS, *, patient: bool = False
) -> SwitchboardRedis:
    """A client on `url`; `patient` (workers, the analytics service) waits out outages, others give up
    after a few tries."""
    outage = RedisOutage(redact_url(url))
    retry = OutageRetry(outage, retries=-1 if patient else IMPATIENT_RETRIES)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        # A patient client waits for a connection as long as its commands wait for Redis.
        timeout=None if patient else WAIT_SECONDS,
        retry=retry,
        retry_on_error=[ConnectionError, TimeoutError, BusyLoadingError],
        socket_timeout=SOCKET_SECONDS,
        socket_connect_timeout=SOCKET_SECONDS,
        socket_keepalive=True,
    )
    client = SwitchboardRedis(connection_pool=pool)
    client.outage = outage
    return client

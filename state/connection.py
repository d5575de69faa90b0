"""Opening Redis the same way everywhere: a blocking pool, so bursts wait for a connection
instead of failing with "Too many connections".

`SWITCHBOARD_REDIS` names a single Redis (`redis://`, `rediss://`, `unix://`; Sentinel-managed
servers are reached the same way through their address) or a Redis Cluster
(`redis+cluster://host:port,host:port,...`, `rediss+cluster://` for TLS), any reachable nodes of it.

redis-py's own retry with backoff covers Redis going away. A worker's client is `patient`: while a
single Redis is down (restarted, failing over, loading its AOF) every command waits and retries with
backoff until Redis is back, so a stage pauses where it is and resumes with its batch, its claims and
its unrecorded outcomes still in hand; SIGTERM cancels the wait. Other clients (the API, the command
line) give up after a few tries so their callers get an error at once. A cluster client keeps
redis-py's own cluster retries (moved slots, failovers) and does not wait out a whole outage.

A command is retried when its connection failed. If Redis executed it and only the reply was lost,
it runs twice: harmless for the worker's writes (SET, ZADD, HSET, the scripts that check before they
change), an over-count for counters (HINCRBY of the flow counters), and for a send claim (SET NX) a
claim that looks taken, so that dispatch is parked until the claim lapses and then sent once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from settings import redact_url
from state.packing import HiredisPackedConnection

MAX_CONNECTIONS = 64
WAIT_SECONDS = 20.0
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

log = logging.getLogger("switchboard.redis")

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


def open_redis(url: str, max_connections: int = MAX_CONNECTIONS, *, patient: bool = False) -> Redis:
    """A client on the Redis or Redis Cluster `url` names; `patient` (workers, the analytics service)
    waits out outages, others give up after a few tries. Either way its `outage` tracks them."""
    outage = RedisOutage(redact_url(url))
    retry = OutageRetry(outage, retries=-1 if patient else IMPATIENT_RETRIES)
    if is_cluster_url(url):
        # The state classes are typed against `Redis`; the cluster client answers the same commands
        # (each routed by its key's slot), and every multi-key script and transaction they run keeps
        # its keys in one slot (state/keyspace.py).
        # redis-py's cluster client runs its own retries (moved slots, failovers) and reads a retry
        # count of -1 as "no attempt at all": it keeps its own, and does not wait out a whole outage.
        cluster = open_cluster(url, max_connections)
        cluster.outage = outage
        return cast(Redis, cluster)
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
    if pool.connection_class is Connection:  # TLS and unix-socket URLs keep their own classes
        pool.connection_class = HiredisPackedConnection
    client = SwitchboardRedis(connection_pool=pool)
    client.outage = outage
    return client


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def is_cluster(redis: object) -> bool:
    """True for a client on a Redis Cluster (some reads take another path there)."""
    return isinstance(redis, RedisCluster)


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The (host, port) of each node a `redis+cluster://` URL names, checked."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    nodes: list[tuple[str, int]] = []
    for node in hosts.split(","):
        host, _, port = node.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"Redis Cluster node {node!r} must be host:port, e.g. redis+cluster://10.0.0.1:6379")
        nodes.append((host.strip("[]"), int(port)))
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has database 0 only, got {parts.path!r}")
    return nodes


def open_cluster(url: str, max_connections: int = MAX_CONNECTIONS) -> SwitchboardCluster:
    parts = urlsplit(url)
    nodes = cluster_nodes(url)
    kwargs: dict[str, Any] = {
        "startup_nodes": [ClusterNode(host, port) for host, port in nodes],
        "max_connections": max_connections,
        "ssl": CLUSTER_SCHEMES[parts.scheme] == "rediss",
    }
    if parts.username:
        kwargs["username"] = parts.username
    if parts.password:
        kwargs["password"] = parts.password
    return SwitchboardCluster(**kwargs)


# Set while a task holds one of its client's permits: a command redis-py splits across slots (a
# multi-key DEL) runs its parts as child tasks, which must not wait for permits of their own.
_HOLDING: contextvars.ContextVar[bool] = contextvars.ContextVar("holding_redis_permit", default=False)


class SwitchboardCluster(RedisCluster):
    """A cluster client whose scripts also run inside cluster pipelines, and whose bursts wait.

    redis-py's cluster client raises MaxConnectionsError when more commands are in flight to one node
    than it has connections, where the single-Redis client waits for one (BlockingConnectionPool): a
    batch handled concurrently (ingest gathers its events) would fail. Commands and pipelines wait for
    one of `max_connections` permits instead, so no node ever needs more connections than that.

    Its first command runs alone: when a fresh redis-py cluster client starts with a burst, the
    topology it loads marks connections being opened for reconnect and some commands fail with
    `'NoneType' object has no attribute 'writelines'` (seen with redis-py 8.1; one command first
    avoids it, tests/integration/test_redis_cluster.py)."""

    outage: RedisOutage

    def __init__(self, *, max_connections: int = MAX_CONNECTIONS, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._permits = asyncio.Semaphore(max_connections)
        self._warming = asyncio.Lock()
        self._warm = False

    @asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        if _HOLDING.get():
            yield
            return
        if not self._warm:
            async with self._warming:
                if not self._warm:
                    await RedisCluster.execute_command(self, "PING")
                    self._warm = True
        async with self._permits:
            token = _HOLDING.set(True)
            try:
                yield
            finally:
                _HOLDING.reset(token)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.permit():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused by redis-py, with its message
        # redis-py declares an attribute abstract that it sets itself; it instantiates the base alike.
        return WaitingClusterPipeline(self, transaction)  # type: ignore[abstract]

    def register_script(self, script: str | bytes) -> AsyncScript:  # type: ignore[override]
        return ClusterScript(self, script)


class WaitingClusterPipeline(ClusterPipeline):
    """A cluster pipeline that runs under one of its client's permits (one connection per node)."""

    def __init__(self, client: SwitchboardCluster, transaction: bool | None = None) -> None:
        super().__init__(client, transaction)
        self._client = client

    async def execute(self, *args: Any, **kwargs: Any) -> list[Any]:
        async with self._client.permit():
            return await super().execute(*args, **kwargs)


class ClusterScript(AsyncScript):
    """A Lua script that a cluster pipeline sends as EVAL: a pipeline cannot load scripts onto the
    node that will run it (EVALSHA there fails with NOSCRIPT after a restart or failover). Redis
    caches an EVAL'd script too, so what it costs is the script's bytes on the wire."""

    async def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any:
        if isinstance(client, ClusterPipeline):
            names = list(keys or [])
            return client.eval(_text(self.script), len(names), *names, *(args or []))
        return await super().__call__(keys, args, client)


def _text(script: str | bytes | memoryview) -> str:
    return script if isinstance(script, str) else bytes(script).decode()


def outage_of(redis: Redis) -> RedisOutage | None:
    """The outage tracker of a client `open_redis` made (None for one made otherwise, as in tests)."""
    outage = getattr(redis, "outage", None)
    return outage if isinstance(outage, RedisOutage) else None

"""Opening Redis the same way everywhere: a blocking pool, so bursts wait for a connection
instead of failing with "Too many connections".

`SWITCHBOARD_REDIS` names a single Redis (`redis://`, `rediss://`, `unix://`; Sentinel-managed
servers are reached the same way through their address) or a Redis Cluster
(`redis+cluster://host:port,host:port,...`, `rediss+cluster://` for TLS), any reachable nodes of it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.commands.core import AsyncScript

MAX_CONNECTIONS = 64
WAIT_SECONDS = 20.0
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def open_redis(url: str, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """A client on the Redis or Redis Cluster `url` names."""
    if is_cluster_url(url):
        # The state classes are typed against `Redis`; the cluster client answers the same commands
        # (each routed by its key's slot), and every multi-key script and transaction they run keeps
        # its keys in one slot (state/keyspace.py).
        return cast(Redis, open_cluster(url, max_connections))
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=WAIT_SECONDS)
    return Redis(connection_pool=pool)


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

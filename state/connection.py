"""Opening Redis the same way everywhere: a blocking pool, so bursts wait for a connection
instead of failing with "Too many connections"."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection

from state.packing import HiredisPackedConnection

MAX_CONNECTIONS = 64
WAIT_SECONDS = 20.0


def open_redis(url: str, max_connections: int = MAX_CONNECTIONS) -> Redis:
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=WAIT_SECONDS)
    if pool.connection_class is Connection:  # TLS and unix-socket URLs keep their own classes
        pool.connection_class = HiredisPackedConnection
    return Redis(connection_pool=pool)

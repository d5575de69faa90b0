"""Which failures stop a stage and which stop only one record.

Infrastructure failures (Redis, the broker or ClickHouse unreachable, timeouts, the machine itself)
may pass: the stage stops without acknowledging its batch, and the batch is processed again after a
restart. Every other failure is the record's own (invalid, too large, a template or logic error that a
retry cannot fix): retrying would fail the same way and hold the partition, so that record is
dead-lettered and the stream moves on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from aiokafka import errors as kafka
from clickhouse_connect.driver import exceptions as clickhouse
from redis import exceptions as redis

log = logging.getLogger("switchboard.flow")

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")

_REDIS_DOWN = (
    redis.ConnectionError,  # BusyLoadingError (AOF loading) and MaxConnectionsError are among them
    redis.TimeoutError,
    redis.ClusterDownError,  # and MasterDownError
    redis.TryAgainError,
    redis.ReadOnlyError,  # a failover left us on a replica
    redis.OutOfMemoryError,
)
# Kafka errors about the record itself; every other Kafka error is about the cluster.
_KAFKA_RECORD = (
    kafka.MessageSizeTooLargeError,
    kafka.RecordTooLargeError,
    kafka.CorruptRecordException,
    kafka.InvalidTimestampError,
)
# ClickHouse errors about the rows sent; the rest (unreachable, overloaded, disk) are the server's.
_CLICKHOUSE_ROWS = (clickhouse.DataError, clickhouse.ProgrammingError)


def is_infrastructure(exc: BaseException) -> bool:
    """True when waiting and retrying may succeed: the stage should stop, not skip the record."""
    if isinstance(exc, kafka.KafkaError):
        return not isinstance(exc, _KAFKA_RECORD)
    if isinstance(exc, clickhouse.ClickHouseError):
        return not isinstance(exc, _CLICKHOUSE_ROWS)
    # OSError covers refused connections and TimeoutError (asyncio's too, since 3.11).
    return isinstance(exc, (*_REDIS_DOWN, OSError, MemoryError))


def describe(exc: BaseException) -> str:
    """One line for a dead letter's reason: the error's type and message, never a traceback."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:1000] if text else type(exc).__name__


async def isolate(
    items: Sequence[_Item], handle: Callable[[Sequence[_Item]], Awaitable[_Result]], stage: str
) -> tuple[list[_Result], list[tuple[_Item, BaseException]]]:
    """`handle` the batch; if a record in it fails, handle the records one by one to find it.

    Returns the results and the records that fail on their own, with their error. Infrastructure
    errors propagate. A batch handled twice this way has its effects applied again for the records
    that had gone through: every stage already tolerates that, as it does a redelivered batch.
    """
    if not items:
        return [], []
    try:
        return [await handle(items)], []
    except Exception as exc:
        if is_infrastructure(exc):
            raise
        if len(items) == 1:
            return [], [(items[0], exc)]
        log.warning(
            "%s: a batch of %d failed (%s); handling its records one by one", stage, len(items), describe(exc)
        )
    results: list[_Result] = []
    poisoned: list[tuple[_Item, BaseException]] = []
    for item in items:
        try:
            results.append(await handle([item]))
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            poisoned.append((item, exc))
    return results, poisoned

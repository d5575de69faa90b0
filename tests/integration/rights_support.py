"""Support for the data-rights tests (no tests here): look through every key of Redis and every row
of every ClickHouse table for a person's identifiers."""

from __future__ import annotations

import re
from collections.abc import Sequence

from clickhouse_connect.driver.client import Client
from redis.asyncio import Redis


def _word(needle: str) -> re.Pattern[str]:
    # As the erasers match: the id `alice` is not found in `alice2`, nor `bo` in `bob`.
    return re.compile(r"(^|[^\w.@+\-])" + re.escape(needle) + r"(?![\w.@+\-])")


async def redis_mentions(redis: Redis, needles: Sequence[str]) -> dict[str, list[str]]:
    """needle -> every key whose name or content (any type) names it as a whole word."""
    found: dict[str, list[str]] = {needle: [] for needle in needles}
    patterns = {needle: _word(needle) for needle in needles}
    async for raw in redis.scan_iter(match="*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        text = key + "\n" + await _content(redis, key)
        for needle, pattern in patterns.items():
            if pattern.search(text):
                found[needle].append(key)
    return {needle: sorted(keys) for needle, keys in found.items() if keys}


async def _content(redis: Redis, key: str) -> str:
    kind = await redis.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind == "string":
        parts = [await redis.get(key)]
    elif kind == "hash":
        parts = [p for pair in (await redis.hgetall(key)).items() for p in pair]
    elif kind == "set":
        parts = list(await redis.smembers(key))
    elif kind == "zset":
        parts = list(await redis.zrange(key, 0, -1))
    elif kind == "list":
        parts = list(await redis.lrange(key, 0, -1))
    elif kind == "stream":
        parts = [repr(await redis.xrange(key))]
    else:
        parts = []
    return "\n".join(p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in parts if p)


def clickhouse_mentions(client: Client, needles: Sequence[str]) -> dict[str, int]:
    """`table.column` -> rows naming one of the needles (as a whole word), over every column of every
    MergeTree table in the database (all of them, not only the ones the erasure knows)."""
    columns = client.query(
        "SELECT table, name FROM system.columns WHERE database = currentDatabase() "
        "AND table IN (SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND engine LIKE '%MergeTree')"
    ).result_rows
    found: dict[str, int] = {}
    for table, column in columns:
        for needle in needles:
            pattern = r"(^|[^\w.@+\-])" + re.escape(needle) + r"([^\w.@+\-]|$)"
            count = client.query(
                f"SELECT count() FROM `{table}` WHERE match(toString(`{column}`), {{p:String}})",  # noqa: S608
                parameters={"p": pattern},
            ).result_rows[0][0]
            if count:
                found[f"{table}.{column}"] = found.get(f"{table}.{column}", 0) + int(count)
    return found

"""Lua scripts queued on pipelines without redis-py's per-execute `SCRIPT EXISTS` round trip.

redis-py checks every script of a pipeline with `SCRIPT EXISTS` before each execute: one more round
trip per batch. Here a pipeline sends `EVALSHA` straight away and, only when Redis answers NOSCRIPT
(first use, or after a restart emptied its script cache), loads the scripts and runs the pipeline
again. Only idempotent steps go through this: a second run must be harmless.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import NoScriptError


class LuaScript:
    """A Lua script known by its SHA1, queued with `EVALSHA` on a pipeline."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def queue(self, pipe: Pipeline, keys: Sequence[str], args: Sequence[str | int | float]) -> None:
        if isinstance(pipe, ClusterPipeline):
            # redis-py refuses EVALSHA in a cluster pipeline, which could not load the script onto
            # the node that runs it; EVAL carries the source, and that node caches it (ClusterScript).
            pipe.eval(self.source, len(keys), *keys, *args)
        else:
            pipe.evalsha(self.sha, len(keys), *keys, *args)


async def run_pipeline(
    redis: Redis, fill: Callable[[Pipeline], None], scripts: Sequence[LuaScript]
) -> list[Any]:
    """Queue commands with `fill` on a fresh non-transactional pipeline and execute it in one round
    trip; on NOSCRIPT, load `scripts` and run it once more."""
    for attempt in (1, 2):
        async with redis.pipeline(transaction=False) as pipe:
            fill(pipe)
            try:
                return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
        for script in scripts:
            await redis.script_load(script.source)
    raise AssertionError("unreachable")

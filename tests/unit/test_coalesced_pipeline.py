"""CoalescedPipeline: writes of one turn of the event loop share a pipeline; each gets its own answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest
from redis.asyncio.client import Pipeline

from state.coalesced import CoalescedPipeline


class FakePipeline:
    """Answers each queued command with its own text, as a pipeline answers in order."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def set(self, key: str) -> None:
        self.commands.append(key)


def writer(*keys: str) -> Callable[[Pipeline], int]:
    def fill(pipe: Pipeline) -> int:
        for key in keys:
            cast(FakePipeline, pipe).set(key)
        return len(keys)

    return fill


async def test_writes_of_one_turn_go_in_one_pipeline_and_each_gets_its_answers() -> None:
    pipelines: list[list[str]] = []

    async def run(fill: Callable[[Pipeline], None]) -> list[Any]:
        pipe = FakePipeline()
        fill(cast(Pipeline, pipe))
        pipelines.append(pipe.commands)
        return [f"ok:{c}" for c in pipe.commands]

    writes = CoalescedPipeline(run)
    first = await asyncio.gather(*(writes.run(writer(*keys)) for keys in (["a"], ["b", "c"], ["d"])))
    later = await writes.run(writer("e"))
    assert first == [["ok:a"], ["ok:b", "ok:c"], ["ok:d"]]
    assert later == ["ok:e"]
    assert pipelines == [["a", "b", "c", "d"], ["e"]]


async def test_a_failed_pipeline_is_raised_to_every_writer_and_a_cancelled_writer_is_skipped() -> None:
    async def run(fill: Callable[[Pipeline], None]) -> list[Any]:
        fill(cast(Pipeline, FakePipeline()))
        await asyncio.sleep(0.01)
        raise ValueError("bad record")

    writes = CoalescedPipeline(run)
    cancelled = asyncio.ensure_future(writes.run(writer("x")))
    kept = asyncio.ensure_future(writes.run(writer("y")))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(ValueError, match="bad record"):
        await kept
    assert cancelled.cancelled()


async def test_a_refill_after_a_retry_counts_the_answers_once() -> None:
    async def run(fill: Callable[[Pipeline], None]) -> list[Any]:
        fill(cast(Pipeline, FakePipeline()))  # as run_pipeline does again after NOSCRIPT
        pipe = FakePipeline()
        fill(cast(Pipeline, pipe))
        return pipe.commands

    writes = CoalescedPipeline(run)
    answers = await asyncio.gather(writes.run(writer("a", "b")), writes.run(writer("c")))
    assert list(answers) == [["a", "b"], ["c"]]

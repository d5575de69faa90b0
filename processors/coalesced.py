"""Writes that several tasks make in the same turn of the event loop, sent to Redis in one pipeline.

Send records each email's outcome right after its provider accepted it, so a killed worker loses at
most the sends in flight. The sends of a batch finish close together and a round trip costs ~50-80 µs
of worker CPU, so the outcomes that become ready in one turn share a round trip: none waits longer
than that turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.client import Pipeline

Fill = Callable[[Pipeline], int]
"""Queues one writer's commands on the pipeline and returns how many answers they add."""
Run = Callable[[Callable[[Pipeline], None]], Awaitable[list[Any]]]
"""Executes a pipeline filled by the function given (with its retries) and returns every answer."""


class CoalescedWrites:
    """`write(fill)` returns the answers to `fill`'s commands; the fills queued before the loop's next
    turn are executed together by `run`, and a failure of that pipeline is raised to each writer."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._queued: list[tuple[Fill, asyncio.Future[list[Any]]]] = []
        self._writing: set[asyncio.Task[None]] = set()  # held so a pending write is not collected

    async def write(self, fill: Fill) -> list[Any]:
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[list[Any]] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((fill, answered))
        return await answered

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        task = asyncio.ensure_future(self._execute(queued))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _execute(self, queued: list[tuple[Fill, asyncio.Future[list[Any]]]]) -> None:
        counts: list[int] = []

        def fill_all(pipe: Pipeline) -> None:
            counts.clear()  # `run` may fill a fresh pipeline again (NOSCRIPT, Redis down)
            counts.extend(fill(pipe) for fill, _ in queued)

        try:
            answers = await self._run(fill_all)
        except BaseException as exc:
            for _, answered in queued:
                if not answered.done():  # a writer cancelled meanwhile is no longer waiting
                    answered.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for (_, answered), count in zip(queued, counts, strict=True):
            if not answered.done():
                answered.set_result(answers[start : start + count])
            start += count

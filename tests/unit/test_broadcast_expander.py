"""The broadcast expander with fakes: a page is produced before its cursor is checkpointed, expansion
waits while the backlog is full, and a job held by another worker is left alone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from processors.broadcast import BroadcastExpander
from records.topics import Delivery, EventCore, Lane
from state.broadcasts import Broadcast
from state.campaigns import Cancellation
from state.users import AudienceIndex

EVENT = EventCore(
    event_id="e1", app="campus", type="campus.notice", template="campus_notice", category="notice"
)
PEOPLE = [f"u{i:03d}" for i in range(25)]


class FakeJobs:
    def __init__(self, held_by_other: bool = False) -> None:
        self.cursor, self.expanded, self.state = "", 0, "running"
        self.log: list[str] = []
        self._other = held_by_other

    async def active(self) -> list[str]:
        return ["campus/e1"] if self.state == "running" else []

    async def lease(self, job_id: str, holder: str, seconds: float) -> bool:
        return not self._other

    async def release(self, job_id: str, holder: str) -> None:
        self.log.append("release")

    async def get(self, job_id: str) -> Broadcast:
        return Broadcast(
            job_id, EVENT, AudienceIndex.everyone(), "bulk", "events:0:1", self.cursor, self.expanded,
            len(PEOPLE), self.state, 0.0, None,
        )

    async def checkpoint(self, job_id: str, cursor: str, emitted: int) -> None:
        self.cursor, self.expanded = cursor, self.expanded + emitted
        self.log.append(f"checkpoint {cursor}")

    async def finish(self, job_id: str) -> bool:
        self.state = "done"
        self.log.append("finish")
        return True


class FakeWalk:
    async def page(self, audience: AudienceIndex, after: str, limit: int) -> list[str]:
        return [p for p in PEOPLE if p > after][:limit]


class FakeCounters:
    def __init__(self, backlog: int = 0) -> None:
        self.counts = {"deliveries": backlog, "decided": 0}

    async def read(self) -> dict[str, int]:
        return dict(self.counts)

    async def add(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            self.counts[name] = self.counts.get(name, 0) + n


def expander(jobs: FakeJobs, counters: FakeCounters) -> BroadcastExpander:
    walk, tally = cast(Any, FakeWalk()), cast(Any, counters)
    return BroadcastExpander(cast(Any, jobs), walk, tally, "w1", page=10, backlog=100, lease_seconds=5)


async def test_each_page_is_produced_before_its_cursor_is_checkpointed() -> None:
    jobs, counters = FakeJobs(), FakeCounters()

    async def emit(lane: Lane, deliveries: Sequence[Delivery], source: str) -> int:
        jobs.log.append(f"emit {deliveries[0].user_id}..{deliveries[-1].user_id}")
        assert source == "broadcast:campus/e1"
        return len(deliveries)

    assert await expander(jobs, counters).expand(emit) == 25
    assert jobs.log == [
        "emit u000..u009", "checkpoint u009",
        "emit u010..u019", "checkpoint u019",
        "emit u020..u024", "checkpoint u024",
        "finish", "release",
    ]
    assert counters.counts["broadcasts_done"] == 1


async def test_expansion_waits_while_the_backlog_is_full_and_resumes_from_the_cursor() -> None:
    jobs, counters = FakeJobs(), FakeCounters(backlog=101)
    emitted: list[str] = []

    async def emit(lane: Lane, deliveries: Sequence[Delivery], source: str) -> int:
        emitted.extend(d.user_id for d in deliveries)
        return len(deliveries)

    assert await expander(jobs, counters).expand(emit) == 0
    jobs.cursor, jobs.expanded = "u009", 10  # a page checkpointed earlier, by a worker since gone
    counters.counts["decided"] = 101  # the backlog drained
    assert await expander(jobs, counters).expand(emit) == 15
    assert emitted == PEOPLE[10:]


async def test_a_job_another_worker_holds_is_left_alone() -> None:
    async def emit(lane: Lane, deliveries: Sequence[Delivery], source: str) -> int:
        raise AssertionError("nothing to emit")

    assert await expander(FakeJobs(held_by_other=True), FakeCounters()).expand(emit) == 0


class FakeCancelled:
    """A campaign cancelled after `pages` pages were expanded."""

    def __init__(self, pages: int) -> None:
        self.pages, self.asked = pages, 0

    async def among(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        self.asked += 1
        stopped = Cancellation(by="operator:li", at=datetime.now(UTC))
        return {pair: stopped for pair in pairs} if self.asked > self.pages else {}


async def test_a_cancelled_campaigns_broadcast_stops_expanding_at_the_next_page() -> None:
    jobs, counters = FakeJobs(), FakeCounters()
    jobs.get = _campaign_job(jobs)  # type: ignore[method-assign]
    emitted: list[str] = []

    async def emit(lane: Lane, deliveries: Sequence[Delivery], source: str) -> int:
        emitted.extend(d.user_id for d in deliveries)
        return len(deliveries)

    walk, tally = cast(Any, FakeWalk()), cast(Any, counters)
    stopping = BroadcastExpander(
        cast(Any, jobs), walk, tally, "w1", page=10, backlog=100, lease_seconds=5,
        cancelled=cast(Any, FakeCancelled(pages=1)),
    )
    assert await stopping.expand(emit) == 10
    assert emitted == PEOPLE[:10] and jobs.log[-2:] == ["finish", "release"]


def _campaign_job(jobs: FakeJobs) -> Any:
    plain = jobs.get

    async def get(job_id: str) -> Broadcast:
        job = await plain(job_id)
        return Broadcast(
            job.job_id, EVENT.model_copy(update={"campaign": "campus.c0123456789ab"}), job.audience, job.lane,
            job.source, job.cursor, job.expanded, job.total, job.state, job.created_at, job.finished_at,
        )

    return get

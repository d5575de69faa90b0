"""Expands broadcast jobs a page at a time, as the flow keeps up.

A worker timer calls `expand` every fraction of a second. For each running job this worker holds (or
can take) the lease of, it reads the next page of ids after the job's cursor, produces their
deliveries, and only then checkpoints the cursor: a worker killed between the two re-emits that page
when the job is taken again, and decide and send see the repeat as a redelivery (same message ids,
sends claimed once). Memory stays one page whatever the audience size.

Expansion waits while more than `backlog` deliveries are produced but not yet decided: the broker
holds a bounded backlog, other events' deliveries are not queued behind a whole broadcast, and a
round ends after `budget` seconds so the other timers and jobs get their turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from processors.ingest import deliveries_for
from records.topics import Delivery, Lane
from state.broadcasts import Broadcast, BroadcastJobs
from state.campaigns import CancelledCampaigns
from state.flow_counters import FlowCounters
from state.segments import SegmentEvaluator, from_snapshot
from state.users import AudienceWalk

log = logging.getLogger("switchboard.flow")

# Produces one lane's deliveries (with the source a dead letter would name); returns how many.
EmitDeliveries = Callable[[Lane, Sequence[Delivery], str], Awaitable[int]]


class BroadcastExpander:
    """Drives the broadcast jobs held in Redis; one instance per worker (`holder` names it)."""

    def __init__(
        self,
        jobs: BroadcastJobs,
        walk: AudienceWalk,
        counters: FlowCounters,
        holder: str,
        *,
        page: int,
        backlog: int,
        lease_seconds: float,
        budget: float = 1.0,
        segments: SegmentEvaluator | None = None,
        cancelled: CancelledCampaigns | None = None,
    ) -> None:
        self._jobs = jobs
        self._walk = walk
        self._counters = counters
        self._holder = holder
        self._page = page
        self._backlog = backlog
        self._lease = lease_seconds
        self._budget = budget
        self._segments = segments
        self._cancelled = cancelled

    async def expand(self, emit: EmitDeliveries, turn: Callable[[], Awaitable[None]] | None = None) -> int:
        """One round over the running jobs; returns how many deliveries it produced. `turn` is awaited
        before each page (the urgent lane goes first)."""
        deadline = time.monotonic() + self._budget
        produced = 0
        for job_id in await self._jobs.active():
            if time.monotonic() >= deadline:
                break
            if not await self._jobs.lease(job_id, self._holder, self._lease):
                continue  # another worker expands it
            job = await self._jobs.get(job_id)
            if job is None or job.done:
                continue
            produced += await self._expand_job(job, emit, deadline, turn)
        return produced

    async def _expand_job(
        self,
        job: Broadcast,
        emit: EmitDeliveries,
        deadline: float,
        turn: Callable[[], Awaitable[None]] | None,
    ) -> int:
        cursor, produced = job.cursor, 0
        lane: Lane = "urgent" if job.lane == "urgent" else "bulk"
        source = f"broadcast:{job.job_id}"
        while time.monotonic() < deadline and not await self._backlogged():
            if turn is not None:
                await turn()
            if await self._campaign_cancelled(job):
                ids, scanned_to = list[str](), ""  # stop expanding: the rest of the audience is never reached
            else:
                ids, scanned_to = await self._next_page(job, cursor)
            if not scanned_to:
                if await self._jobs.finish(job.job_id):
                    await self._counters.add({"broadcasts_done": 1})
                    log.info("broadcast %s expanded: %d deliveries", job.job_id, job.expanded + produced)
                await self._jobs.release(job.job_id, self._holder)
                break
            if ids:
                await emit(lane, deliveries_for(job.event, ids), source)
            await self._jobs.checkpoint(job.job_id, scanned_to, len(ids))
            cursor, produced = scanned_to, produced + len(ids)
            if not await self._jobs.lease(job.job_id, self._holder, self._lease):
                break  # held too long without renewing (a stall): another worker may have it now
        return produced

    async def _next_page(self, job: Broadcast, cursor: str) -> tuple[list[str], str]:
        """The recipients of the next page and the last id it scanned ("" at the end). A segment's page
        is filtered by its definition, so it may hold none of the ids it scanned."""
        segment = from_snapshot(job.segment, job.audience)
        if segment is None:
            ids = await self._walk.page(job.audience, cursor, self._page)
            return ids, ids[-1] if ids else ""
        if self._segments is None:
            raise RuntimeError(f"broadcast {job.job_id} filters by a segment: the expander needs `segments`")
        page = await self._segments.page(segment, cursor, self._page)
        return page.members, page.last
    async def _campaign_cancelled(self, job: Broadcast) -> bool:
        """Whether the job's campaign was cancelled (one read per page)."""
        if self._cancelled is None or not job.event.campaign:
            return False
        found = await self._cancelled.among([(job.event.app, job.event.campaign)])
        if found:
            (cancellation,) = found.values()
            log.info("broadcast %s stopped: %s", job.job_id, cancellation.reason)
        return bool(found)

    async def _backlogged(self) -> bool:
        counts = await self._counters.read()
        return counts.get("deliveries", 0) - counts.get("decided", 0) > self._backlog

"""The Faust app: topics, and the agents that run ingest → decide → send → track on them.

Topics carry raw bytes; each agent validates with pydantic itself, so a bad record becomes a dead
letter with a reason instead of a Faust deserialisation error that would skip it. No single record
stops a stage: one that fails on its own is dead-lettered (processors/failures.py). Redis going away
pauses a stage inside its batch until it is back (state/connection.py); other infrastructure errors
stop the worker, with the unfinished batch unacknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import faust

from metrics import catalog
from processors.approvals import ApprovalDesk, Effects
from processors.broadcast import BroadcastExpander
from processors.decide import Decide, DecideResult
from processors.failures import isolate
from processors.fallback import FallbackDispatcher
from processors.ingest import Ingest, IngestResult
from processors.intake import (
    accepted,
    acked_batches,
    carriable,
    failed,
    ingest_one,
    parse,
    parse_receipts,
    raw_of,
    signature_of,
    source_of,
)
from processors.lanes import GatedStream, LaneGate, LaneStream, keep_lane_running, stop_all
from processors.offsets import mend_faust_commits
from processors.outbox import Outbox, Outgoing
from processors.send import Send, SendResult
from processors.stopping import SwitchboardApp
from processors.track import TRACKED_STATUSES, Track
from processors.watch import count_ingested
from records.signing import SIGNATURE_HEADER
from records.topics import Delivery, Dispatch, Event, Lane, Receipt, lane_of
from records.wire import WireDecoder
from rules.engine import AsyncRuleEngine
from rules.schema import Ruleset
from state.connection import RedisOutage
from state.fallback import FallbackSchedule
from state.flow_counters import FlowCounters
from state.offline import OfflineKeep
from state.schedule import DeliverySchedule, ParkedDispatches
from state.users import UserDirectory

log = logging.getLogger("switchboard.flow")
_Item = TypeVar("_Item")

RELEASE_PER_CLAIM = 500
# A batch of the decide and send agents: this many batch records, handled ITEMS_PER_STEP at a time
# (one Redis pipeline per step each); a poisoned item is found within its step, not the whole batch.
RECORDS_PER_BATCH = 8
ITEMS_PER_STEP = 500
FALLBACKS_PER_ROUND = 500
FOLLOW_UPS_PER_ROUND = 100

# Against the Tansu broker a worker is ready in ~5 s with these instead of ~32 s (FIELD-NOTES).
BROKER_TIMEOUTS: dict[str, Any] = {
    "broker_session_timeout": 6,
    "broker_rebalance_timeout": 6,
    "broker_heartbeat_interval": 1,
    # A topic made anew (a restarted broker without storage, or a lane's topic first written after the
    # worker started) joins the assignment at the next metadata refresh: 5 minutes by default.
    "consumer_metadata_max_age_ms": 5000,
}


class RulesSource(Protocol):
    """Where changed rules come from (rules/watch.py): a new, already validated ruleset, or None."""

    def poll(self) -> Ruleset | None: ...


@dataclass
class FlowStages:
    """The stages and the state they share, built by `runtime.build_flow`."""

    ingest: Ingest
    decide: Decide
    send: Send
    track: Track
    schedule: DeliverySchedule
    parked: ParkedDispatches
    counters: FlowCounters
    fallback: FallbackSchedule
    fallbacks: FallbackDispatcher
    engine: AsyncRuleEngine
    offline: OfflineKeep
    directory: UserDirectory
    rules: RulesSource | None = None
    broadcasts: BroadcastExpander | None = None
    approvals: ApprovalDesk | None = None


@dataclass
class FlowTopics:
    events: faust.TopicT
    dead_letter: faust.TopicT
    accepted: faust.TopicT
    deliveries: faust.TopicT
    dispatch: faust.TopicT
    receipts: faust.TopicT
    # The urgent lane (records/topics.py `lane_of`): consumed by agents of its own.
    events_urgent: faust.TopicT
    deliveries_urgent: faust.TopicT
    dispatch_urgent: faust.TopicT

    def deliveries_of(self, lane: Lane) -> faust.TopicT:
        return self.deliveries_urgent if lane == "urgent" else self.deliveries


def raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )


def create_app(
    app_id: str,
    broker: str,
    topic_names: dict[str, str],
    partitions: int,
    datadir: Path,
    redis_outage: RedisOutage | None = None,
) -> tuple[faust.App, FlowTopics]:
    mend_faust_commits()
    app = SwitchboardApp(
        app_id,
        broker=broker,
        datadir=str(datadir),  # Faust's own files; by default it litters the working directory
        store="memory://",
        web_enabled=False,
        topic_partitions=partitions,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        **BROKER_TIMEOUTS,
    )
    app.redis_outage = redis_outage  # a stop while Redis is down does not wait for the batches in hand
    topics = FlowTopics(**{key: raw_topic(app, name, partitions) for key, name in topic_names.items()})
    return app, topics


def register_agents(app: faust.App, topics: FlowTopics, stages: FlowStages) -> None:
    """Attach the four agents and the timers (schedule, fallback, rule reload) to the app."""
    outbox = Outbox(topics.receipts, topics.dead_letter, stages.counters, app.conf.producer_max_request_size)

    @contextlib.asynccontextmanager
    async def crash_on_error(stage: str) -> AsyncIterator[None]:
        # Only infrastructure errors get here (a record's own failure is dead-lettered in the stage,
        # and Redis commands wait for Redis): stop the worker with the batch unacknowledged, so it is
        # processed again after a restart.
        try:
            yield
        except Exception as exc:
            log.critical("stage %s failed, stopping the worker: %r", stage, exc)
            catalog.infrastructure_error(exc, stage)
            await app.crash(exc)
            raise

    async def emit_deliveries(lane: Lane, deliveries: Sequence[Delivery], source: str | Sequence[str]) -> int:
        """The one place deliveries are produced (ingest and broadcasts): keyed by user id, on the
        lane's topic; `source` names each record's origin for a dead letter (one for all, or one each)."""
        sources = [source] * len(deliveries) if isinstance(source, str) else source
        items = list(zip(deliveries, sources, strict=True))
        produced = await outbox.batches(topics.deliveries_of(lane), items)
        await stages.counters.add({"deliveries": produced})
        return produced

    async def emit_by_lane(deliveries: Sequence[tuple[Delivery, str]]) -> None:
        for lane in ("urgent", "bulk"):
            mine = [(d, s) for d, s in deliveries if lane_of(d.event) == lane]
            if mine:
                await emit_deliveries(lane, [d for d, _ in mine], [s for _, s in mine])

    # The urgent lane takes the turn: bulk batches and broadcast pages wait while it has work.
    gate = LaneGate()

    def bulk(stream: faust.StreamT[bytes]) -> Any:
        return GatedStream(stream, gate)

    @app.agent(topics.events, name="ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for _ in ingest_lane(bulk(stream)):
            yield None

    async def ingest_lane(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async with crash_on_error("ingest"):
            # A batch at a time: events are handled concurrently and their deliveries produced
            # together, so the broker's acknowledgement is awaited once per batch, not per event.
            async for batch in acked_batches(stream, 200, within=0.05):
                sources = [source_of(event) for event in batch]
                raws = [raw_of(event) for event in batch]
                signatures = [signature_of(event) for event in batch]
                results: list[IngestResult] = await asyncio.gather(
                    *(
                        ingest_one(stages.ingest, raw, source, signature)
                        for raw, source, signature in zip(raws, sources, signatures, strict=True)
                    )
                )
                results = [
                    carriable(result, raw, source, outbox)
                    for result, raw, source in zip(results, raws, sources, strict=True)
                ]
                count_ingested(results, sources)
                deliveries = [
                    (d, s) for result, s in zip(results, sources, strict=True) for d in result.deliveries
                ]
                await emit_by_lane(deliveries)
                # A refused event's one receipt is its dead_lettered row, which goes with its letter.
                await outbox.dead_letters(
                    [(r.dead_letter, r.receipts[0]) for r in results if r.dead_letter is not None]
                )
                await outbox.receipts(
                    [receipt for r in results if r.dead_letter is None for receipt in r.receipts], "ingest"
                )
                # The accepted-event log, for the analytics service to keep for rule simulation.
                logged = await outbox.produce(
                    topics.accepted,
                    (
                        Outgoing(a.event.app, a.model_dump_json().encode(), s)
                        for a, s in accepted(zip(raws, results, sources, strict=True))
                    ),
                )
                await stages.counters.add(
                    {
                        # Before `events`, so no reader sees the event counted and its job not.
                        "broadcasts": sum(result.broadcast for result in results),
                        "events": len(batch),
                        "accepted": logged,
                        "duplicates": sum(result.duplicate for result in results),
                    }
                )
                yield None

    decoder = WireDecoder()  # shared by the stages: a broadcast's event is validated once

    @app.agent(topics.deliveries, name="decide")
    async def decide(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for _ in decide_lane(bulk(stream), topics.dispatch):
            yield None

    async def decide_lane(stream: faust.StreamT[bytes], dispatch_topic: faust.TopicT) -> AsyncIterator[None]:
        async with crash_on_error("decide"):
            # Records are batch records (up to 500 deliveries each): a few records make a batch.
            async for batch in acked_batches(stream, RECORDS_PER_BATCH, within=0.05):
                records, bad = parse(Delivery, batch, decoder)
                origin = {delivery.message_id: source for source, delivery in records}

                async def handle(chunk: Sequence[tuple[str, Delivery]]) -> DecideResult:
                    # Decide arms each message's fallback chain before its dispatches leave, so no
                    # receipt of theirs can come before the chain.
                    return await stages.decide.handle([delivery for _, delivery in chunk])

                for chunk in _chunks(records, ITEMS_PER_STEP):
                    results, poisoned = await isolate(chunk, handle, "decide")
                    for result in results:
                        await stages.parked.add_many(result.paced)  # paced: out at their slots, as decided
                        dispatched = await outbox.batches(
                            dispatch_topic,
                            [(d, origin.get(d.message_id, "decide")) for d in result.dispatches],
                        )
                        await outbox.receipts(result.receipts, "decide")
                        await stages.counters.add(
                            {
                                "dispatched": dispatched,
                                "scheduled": result.scheduled,
                                "parked": len(result.paced),
                            }
                        )
                    await outbox.dead_letters(failed("decide", poisoned))
                await outbox.dead_letters(bad)
                await stages.counters.add({"decided": len(records) + len(bad)})
                yield None

    @app.agent(topics.dispatch, name="send")
    async def send(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for _ in send_lane(bulk(stream)):
            yield None

    async def send_lane(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async with crash_on_error("send"):
            async for batch in acked_batches(stream, RECORDS_PER_BATCH, within=0.05):
                records, bad = parse(Dispatch, batch, decoder)

                async def handle(chunk: Sequence[tuple[str, Dispatch]]) -> SendResult:
                    return await stages.send.handle([dispatch for _, dispatch in chunk])

                for chunk in _chunks(records, ITEMS_PER_STEP):
                    results, poisoned = await isolate(chunk, handle, "send")
                    for result in results:
                        await stages.parked.add_many(result.parked)
                        await outbox.receipts(result.receipts, "send")
                        await stages.counters.add({"parked": len(result.parked)})
                    await outbox.dead_letters(failed("send", poisoned))
                await outbox.dead_letters(bad)
                await stages.counters.add({"sent_done": len(records) + len(bad)})
                yield None

    @app.agent(topics.receipts, name="track")
    async def track(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async with crash_on_error("track"):
            async for batch in acked_batches(bulk(stream), 5000, within=0.5):
                records = [(source_of(event), raw_of(event)) for event in batch]

                async def handle(chunk: Sequence[tuple[str, bytes]]) -> int:
                    receipts, seen = parse_receipts((raw for _, raw in chunk), decoder, TRACKED_STATUSES)
                    await stages.track.handle(receipts)
                    return seen  # every receipt read counts as tracked, acted on or not

                written, poisoned = await isolate(records, handle, "track")
                await outbox.dead_letters(failed("track", poisoned))
                await stages.counters.add({"tracked": sum(written)})
                yield None

    @app.task  # type: ignore[untyped-decorator]
    async def urgent_lane() -> None:
        """The urgent lane: the same stages, each on a consumer of its own (processors/lanes.py), started
        again after the broker comes back. The lane of an event's deliveries is the event's, whichever
        events topic it came on."""
        await keep_lane_running(run_urgent_lane, "urgent lane")

    async def run_urgent_lane() -> None:
        bootstrap = ",".join(f"{url.host}:{url.port}" for url in app.conf.broker)
        streams = [
            LaneStream(bootstrap, topic.get_topic_name(), f"{app.conf.id}-{topic.get_topic_name()}", gate)
            for topic in (topics.events_urgent, topics.deliveries_urgent, topics.dispatch_urgent)
        ]
        ingest_urgent, decide_urgent, send_urgent = (cast(Any, stream) for stream in streams)
        try:
            for stream in streams:
                await stream.start()
            await asyncio.gather(
                _drain(ingest_lane(ingest_urgent)),
                _drain(decide_lane(decide_urgent, topics.dispatch_urgent)),
                _drain(send_lane(send_urgent)),
            )
        finally:
            await stop_all(streams)

    @app.timer(0.2, name="expand_broadcasts")  # type: ignore[untyped-decorator]
    async def expand_broadcasts() -> None:
        """Broadcast jobs a page at a time (processors/broadcast.py), while the flow keeps up."""
        if stages.broadcasts is None:
            return
        async with crash_on_error("broadcast"):
            await stages.broadcasts.expand(emit_deliveries, gate.bulk_turn)

    @app.timer(1.0, name="release_scheduled")  # type: ignore[untyped-decorator]
    async def release_scheduled() -> None:
        """Re-emit deliveries whose time has come and parked dispatches whose claim has lapsed."""
        await stages.schedule.requeue_stale()
        due = await stages.schedule.claim_due()
        if due:
            released = await outbox.batches(topics.deliveries, [(d, "schedule") for d in due])
            await stages.schedule.done(due)
            await stages.counters.add({"released": len(due), "deliveries": released})
        await stages.parked.requeue_stale()
        # Drain everything due: a campaign paced faster than one claim a second must not be slowed.
        while unparked := await stages.parked.claim_due(limit=RELEASE_PER_CLAIM):
            dispatched = await outbox.batches(topics.dispatch, [(d, "parked") for d in unparked])
            await stages.parked.done(unparked)
            await stages.counters.add({"unparked": len(unparked), "dispatched": dispatched})
            if len(unparked) < RELEASE_PER_CLAIM:
                break

    @app.timer(1.0, name="fire_fallbacks")  # type: ignore[untyped-decorator]
    async def fire_fallbacks() -> None:
        """Emit the dispatches of fallback steps whose time came with their condition holding."""
        async with crash_on_error("fallback"):
            while fired := await stages.fallback.fire_due(limit=FALLBACKS_PER_ROUND):
                result = await stages.fallbacks.resolve(fired)
                dispatched = await outbox.batches(
                    topics.dispatch, [(d, "fallback") for d in result.dispatches]
                )
                await stages.parked.add_many(result.parked)  # due inside quiet hours: out when they end
                await outbox.receipts(result.receipts, "fallback")
                await stages.fallback.done(fired)
                await stages.counters.add({"dispatched": dispatched, "parked": len(result.parked)})
                if len(fired) < FALLBACKS_PER_ROUND:
                    break

    @app.timer(5.0, name="release_offline")  # type: ignore[untyped-decorator]
    async def release_offline() -> None:
        """离线保存: decide again deliveries whose user became reachable; record the expired ones."""
        async with crash_on_error("offline"):
            deliveries, expired = await stages.offline.due_for_release(datetime.now(UTC), stages.directory)
            if deliveries:
                released = await outbox.batches(topics.deliveries, [(d, "offline") for d in deliveries])
                await stages.counters.add({"deliveries": released})
            if expired:
                await outbox.receipts(expired, "offline")
            await stages.offline.done([*deliveries, *expired])  # leased until now: re-emitted, forget them

    async def emit_event(event: Event, value: bytes, signature: str) -> None:
        topic = topics.events_urgent if lane_of(event) == "urgent" else topics.events
        key = f"{event.app}:{event.event_id}"
        if not outbox.fits(key, value):
            await outbox.produce(topic, [Outgoing(key, value, "approvals")])  # dead-letters it, sized
            return
        headers = [(SIGNATURE_HEADER, signature.encode())] if signature else None
        await (await topic.send(key=key.encode(), value=value, headers=headers))

    async def record_rows(rows: Sequence[Receipt]) -> None:
        await outbox.receipts(rows, "approvals")

    approval_effects = Effects(emit=emit_event, record=record_rows)

    @app.timer(1.0, name="follow_approvals")  # type: ignore[untyped-decorator]
    async def follow_approvals() -> None:
        """Held items: tell approvers, release approved events, write outcomes, expire (approvals.py)."""
        if stages.approvals is None:
            return
        async with crash_on_error("approvals"):
            while await stages.approvals.follow_up(approval_effects) >= FOLLOW_UPS_PER_ROUND:
                pass

    @app.timer(2.0, name="reload_rules")  # type: ignore[untyped-decorator]
    async def reload_rules() -> None:
        """Take changed rule files; the engine swaps between batches: nothing lost or decided twice."""
        if stages.rules is None:
            return
        try:
            ruleset = await asyncio.to_thread(stages.rules.poll)
        except Exception:
            # A watcher bug must not stop message flow: the running rules stay.
            log.exception("reading changed rule files failed; the running rules stay")
            return
        if ruleset is None:
            return
        previous = stages.engine.ruleset.version
        await stages.engine.reload(ruleset)
        log.warning("rules reloaded: version %s (was %s)", ruleset.version, previous)


def _chunks(items: Sequence[_Item], size: int) -> Iterator[Sequence[_Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _drain(stage: AsyncIterator[None]) -> None:
    async for _ in stage:
        pass

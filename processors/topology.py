"""The Faust app: topics, and the agents that run ingest → decide → send → track on them.

Topics carry raw bytes; each agent validates with pydantic itself, so a bad record becomes a dead
letter with a reason instead of a Faust deserialisation error that would skip it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import faust
from pydantic import TypeAdapter, ValidationError

from processors.decide import Decide
from processors.fallback import FallbackDispatcher
from processors.ingest import Ingest, IngestResult
from processors.send import Send
from processors.track import AcceptedEvent, Track
from records.topics import Delivery, Dispatch, Event, Receipt
from rules.engine import AsyncRuleEngine
from rules.schema import Ruleset
from state.fallback import FallbackSchedule
from state.flow_counters import FlowCounters
from state.offline import OfflineKeep
from state.schedule import DeliverySchedule, ParkedDispatches
from state.users import UserDirectory

log = logging.getLogger("switchboard.flow")

_Record = TypeVar("_Record", Delivery, Dispatch, Receipt)
RECEIPT_LIST = TypeAdapter(list[Receipt])
RELEASE_PER_CLAIM = 500
RECEIPTS_PER_RECORD = 500  # ~150 KB of JSON: well inside Kafka's default 1 MB record limit
FALLBACKS_PER_ROUND = 500

# Against the Tansu broker a worker is ready in ~5 s with these instead of ~32 s (FIELD-NOTES).
BROKER_TIMEOUTS: dict[str, Any] = {
    "broker_session_timeout": 6,
    "broker_rebalance_timeout": 6,
    "broker_heartbeat_interval": 1,
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


@dataclass
class FlowTopics:
    events: faust.TopicT
    dead_letter: faust.TopicT
    deliveries: faust.TopicT
    dispatch: faust.TopicT
    receipts: faust.TopicT


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
    app_id: str, broker: str, topic_names: dict[str, str], partitions: int, datadir: Path
) -> tuple[faust.App, FlowTopics]:
    app = faust.App(
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
    topics = FlowTopics(**{key: raw_topic(app, name, partitions) for key, name in topic_names.items()})
    return app, topics


def register_agents(app: faust.App, topics: FlowTopics, stages: FlowStages) -> None:
    """Attach the four agents and the timers (schedule, fallback, rule reload) to the app."""

    @contextlib.asynccontextmanager
    async def crash_on_error(stage: str) -> AsyncIterator[None]:
        # A stage error is infrastructure (Redis, broker, ClickHouse down), never bad input: stop the
        # worker so its uncommitted records are redelivered after a restart, instead of skipping them.
        try:
            yield
        except Exception as exc:
            log.critical("stage %s failed, stopping the worker: %r", stage, exc)
            await app.crash(exc)
            raise

    async def produce(topic: faust.TopicT, items: Iterable[tuple[str, bytes]]) -> int:
        pending: list[Awaitable[Any]] = [await topic.send(key=k.encode(), value=v) for k, v in items]
        await asyncio.gather(*pending)  # nothing is acknowledged before the broker has it
        return len(pending)

    async def produce_receipts(receipts: list[Receipt]) -> None:
        # A stage's receipts travel as a few array records rather than one record each: the
        # per-record cost of the stream dominates the worker's CPU, and the sink writes batches anyway.
        chunks = [receipts[i : i + RECEIPTS_PER_RECORD] for i in range(0, len(receipts), RECEIPTS_PER_RECORD)]
        await produce(
            topics.receipts, ((chunk[0].message_id, RECEIPT_LIST.dump_json(chunk)) for chunk in chunks)
        )
        await stages.counters.add({"receipts": len(receipts)})

    @app.agent(topics.events, name="ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async with crash_on_error("ingest"):
            # A batch at a time: events are handled concurrently and their deliveries produced
            # together, so the broker's acknowledgement is awaited once per batch, not per event.
            async for batch in stream.take_events(200, within=0.05):  # type: ignore[attr-defined]
                sources = [_source(event.message) for event in batch]
                results: list[IngestResult] = await asyncio.gather(
                    *(
                        stages.ingest.handle(event.value, source)
                        for event, source in zip(batch, sources, strict=True)
                    )
                )
                deliveries = [d for result in results for d in result.deliveries]
                letters = [
                    (s, r.dead_letter)
                    for s, r in zip(sources, results, strict=True)
                    if r.dead_letter is not None
                ]
                for source, letter in letters:
                    log.warning("dead-lettered %s: %s", source, letter.reason)
                await asyncio.gather(
                    produce(
                        topics.deliveries, ((d.user_id, d.model_dump_json().encode()) for d in deliveries)
                    ),
                    produce(
                        topics.dead_letter, ((s, letter.model_dump_json().encode()) for s, letter in letters)
                    ),
                )
                await produce_receipts([r for result in results for r in result.receipts])
                await stages.track.log_events(
                    _accepted((event.value, result) for event, result in zip(batch, results, strict=True))
                )
                await stages.counters.add(
                    {
                        "events": len(batch),
                        "deliveries": len(deliveries),
                        "duplicates": sum(result.duplicate for result in results),
                        "dead_lettered": len(letters),
                    }
                )
                yield None

    @app.agent(topics.deliveries, name="decide")
    async def decide(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async with crash_on_error("decide"):
            async for values in stream.take(500, within=0.05):
                deliveries, bad = _parse(Delivery, values)
                # Decide arms each message's fallback chain before its dispatches leave, so no
                # receipt of theirs can come before the chain.
                result = await stages.decide.handle(deliveries)
                await stages.parked.add_many(result.paced)  # paced: out at their slots, as decided
                dispatched = await produce(
                    topics.dispatch, ((d.user_id, d.model_dump_json().encode()) for d in result.dispatches)
                )
                await produce_receipts(result.receipts + bad)
                await stages.counters.add(
                    {
                        "decided": len(values),
                        "dispatched": dispatched,
                        "scheduled": result.scheduled,
                        "parked": len(result.paced),
                    }
                )
                yield None

    @app.agent(topics.dispatch, name="send")
    async def send(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async with crash_on_error("send"):
            async for values in stream.take(200, within=0.05):
                dispatches, bad = _parse(Dispatch, values)
                result = await stages.send.handle(dispatches)
                await stages.parked.add_many(result.parked)
                await produce_receipts(result.receipts + bad)
                await stages.counters.add({"sent_done": len(values), "parked": len(result.parked)})
                yield None

    @app.agent(topics.receipts, name="track")
    async def track(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async with crash_on_error("track"):
            async for values in stream.take(5000, within=0.5):
                written = await stages.track.handle(_parse_receipts(values))
                await stages.counters.add({"rows": written})
                yield None

    @app.timer(1.0, name="release_scheduled")  # type: ignore[untyped-decorator]
    async def release_scheduled() -> None:
        """Re-emit deliveries whose time has come and parked dispatches whose claim has lapsed."""
        await stages.schedule.requeue_stale()
        due = await stages.schedule.claim_due()
        if due:
            await produce(topics.deliveries, ((d.user_id, d.model_dump_json().encode()) for d in due))
            await stages.schedule.done(due)
            await stages.counters.add({"released": len(due), "deliveries": len(due)})
        await stages.parked.requeue_stale()
        # Drain everything due: a campaign paced faster than one claim a second must not be slowed.
        while unparked := await stages.parked.claim_due(limit=RELEASE_PER_CLAIM):
            await produce(topics.dispatch, ((d.user_id, d.model_dump_json().encode()) for d in unparked))
            await stages.parked.done(unparked)
            await stages.counters.add({"unparked": len(unparked), "dispatched": len(unparked)})
            if len(unparked) < RELEASE_PER_CLAIM:
                break

    @app.timer(1.0, name="fire_fallbacks")  # type: ignore[untyped-decorator]
    async def fire_fallbacks() -> None:
        """Emit the dispatches of fallback steps whose time came with their condition holding."""
        async with crash_on_error("fallback"):
            while fired := await stages.fallback.fire_due(limit=FALLBACKS_PER_ROUND):
                result = await stages.fallbacks.resolve(fired)
                await produce(
                    topics.dispatch, ((d.user_id, d.model_dump_json().encode()) for d in result.dispatches)
                )
                await stages.parked.add_many(result.parked)  # due inside quiet hours: out when they end
                await produce_receipts(result.receipts)
                await stages.fallback.done(fired)
                await stages.counters.add(
                    {"dispatched": len(result.dispatches), "parked": len(result.parked)}
                )
                if len(fired) < FALLBACKS_PER_ROUND:
                    break

    @app.timer(5.0, name="release_offline")  # type: ignore[untyped-decorator]
    async def release_offline() -> None:
        """离线保存: decide again deliveries whose user became reachable; record the expired ones."""
        async with crash_on_error("offline"):
            deliveries, expired = await stages.offline.due_for_release(datetime.now(UTC), stages.directory)
            if deliveries:
                await produce(
                    topics.deliveries, ((d.user_id, d.model_dump_json().encode()) for d in deliveries)
                )
                await stages.counters.add({"deliveries": len(deliveries)})
            if expired:
                await produce_receipts(expired)
            await stages.offline.done([*deliveries, *expired])  # leased until now: re-emitted, forget them

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


def _accepted(handled: Iterable[tuple[bytes, IngestResult]]) -> list[AcceptedEvent]:
    """The events ingest took (neither dead-lettered nor duplicates), parsed again: they are valid."""
    now = datetime.now(UTC)
    events = [
        Event.model_validate_json(raw)
        for raw, result in handled
        if result.dead_letter is None and not result.duplicate
    ]
    return [(now, event.core(), event.audience.model_dump_json()) for event in events]


def _source(message: Any) -> str:
    """The record's identity, which makes a redelivery of the same record recognisable."""
    return f"{message.topic}:{message.partition}:{message.offset}"


def _parse_receipts(values: Iterable[bytes]) -> list[Receipt]:
    """A receipts record holds one receipt (the API's) or an array of them (the stages')."""
    receipts: list[Receipt] = []
    for value in values:
        if value.lstrip()[:1] != b"[":
            good, bad = _parse(Receipt, [value])
            receipts.extend(good + bad)
            continue
        try:
            receipts.extend(RECEIPT_LIST.validate_json(value))
        except ValidationError as exc:
            log.error("unreadable receipt list: %s", exc)
            receipts.append(_unreadable("receipt list", exc))
    return receipts


def _unreadable(what: str, exc: ValidationError) -> Receipt:
    reason = f"unreadable {what}: {exc.errors(include_url=False)[0]['msg']}"
    return Receipt(message_id="internal", status="dead_lettered", reason=reason)


def _parse(model: type[_Record], values: Iterable[bytes]) -> tuple[list[_Record], list[Receipt]]:
    """Internal topics are written by Switchboard itself; a bad record there is a bug, kept as a row."""
    good: list[_Record] = []
    bad: list[Receipt] = []
    for value in values:
        try:
            good.append(model.model_validate_json(value))
        except ValidationError as exc:
            log.error("unreadable %s record: %s", model.__name__, exc)
            bad.append(_unreadable(model.__name__, exc))
    return good, bad

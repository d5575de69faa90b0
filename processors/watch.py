"""The worker watches itself: metrics of what only it can see, and the alert rules, sent as events.

Every `FLUSH_SECONDS` the worker drains its watched counts into Redis time buckets, reports the lag of
its partitions, and sets the gauges of what Redis holds for later. Every `every` of the alert file it
judges the rules against the whole fleet's counts (any worker may: the incident state in Redis lets
one announce each change) and emits each change as an event of category `alert` onto the events
topic, so the on-call hear it through Switchboard's own channels like any other message.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import faust

from metrics import catalog
from processors.alert_checks import Finding, judge
from processors.alert_rules import AlertFile, AlertRule
from processors.failures import is_infrastructure
from processors.ingest import IngestResult
from records.signing import signed_headers
from records.topics import Event
from state.schedule import DeliverySchedule, ParkedDispatches
from state.watch import Incidents, LagBoard, Transition, WatchWindow

log = logging.getLogger("switchboard.watch")

FLUSH_SECONDS = 2.0
ALERT_TYPE = "switchboard.alert"


@dataclass
class Watch:
    """What the watching timers need: Redis-backed state, and the alert file (None: alerts off)."""

    window: WatchWindow
    lags: LagBoard
    incidents: Incidents
    schedule: DeliverySchedule
    parked: ParkedDispatches
    alerts: AlertFile | None = None
    worker: str = f"{socket.gethostname()}:{os.getpid()}"
    signing_keys: SigningKeys | None = None
    """Where the alert app's events signing key is found: alert events are signed like any other."""


class SigningKeys(Protocol):
    """The app registry, as far as signing is concerned (`state.apps.AppRegistry`)."""

    async def signing_key(self, name: str) -> str | None: ...


def count_ingested(results: Sequence[IngestResult], sources: Sequence[str]) -> None:
    """Events by app, lane (the topic they came on) and outcome: accepted, duplicate or refused."""
    for result, source in zip(results, sources, strict=True):
        if result.dead_letter is not None:
            app, outcome = result.dead_letter.app, "refused"
        else:
            first = result.deliveries[0].event.app if result.deliveries else ""
            app = first or (result.receipts[0].app if result.receipts else "")
            outcome = "duplicate" if result.duplicate else "accepted"
        catalog.event(app, source.rsplit(":", 2)[0], outcome)


def register_watch(app: faust.App, stage_topics: Mapping[str, faust.TopicT], events: faust.TopicT,
                   watch: Watch) -> None:
    """Attach the metrics flush and, with an alert file, the alert evaluation to the worker."""
    topic_stage = {topic.get_topic_name(): stage for stage, topic in stage_topics.items()}

    @app.timer(FLUSH_SECONDS, name="watch_flush")  # type: ignore[untyped-decorator]
    async def flush() -> None:
        counts = catalog.WATCHED.drain()
        try:
            await watch.window.add(counts)
            lags = _lags(app, topic_stage)
            for (stage, topic), lag in lags.items():
                catalog.CONSUMER_LAG.labels(stage, topic).set(lag)
            await watch.lags.report(watch.worker, lags)
            catalog.WAITING.labels("scheduled").set(await watch.schedule.size())
            catalog.WAITING.labels("parked").set(await watch.parked.size())
        except Exception as exc:
            # Watching must never stop the flow; the counts wait for the next flush.
            catalog.WATCHED.restore(counts)
            if is_infrastructure(exc):
                catalog.infrastructure_error(exc, "watch")
            log.warning("watch: cannot flush metrics to Redis: %s", exc)

    if watch.alerts is None:
        return
    alerts = watch.alerts

    @app.timer(alerts.every, name="watch_alerts")  # type: ignore[untyped-decorator]
    async def evaluate() -> None:
        try:
            await evaluate_alerts(alerts, watch, events)
        except Exception as exc:
            if is_infrastructure(exc):
                catalog.infrastructure_error(exc, "alerts")
                log.warning("alerts: cannot evaluate now: %s", exc)
            else:
                log.exception("alerts: evaluation failed")


async def evaluate_alerts(alerts: AlertFile, watch: Watch, events: faust.TopicT) -> int:
    """Judge every rule once; emit each incident change. Returns how many alert events were produced."""
    windows: dict[float, dict[str, int]] = {}
    lags = await watch.lags.by_stage()
    emitted = 0
    for rule in alerts.rules:
        if rule.window not in windows:
            windows[rule.window] = await watch.window.window(rule.window)
        for finding in judge(rule, windows[rule.window], lags):
            if finding.firing is None:
                continue
            transition = await watch.incidents.move(rule.name, finding.subject, finding.firing)
            if transition is None:
                continue
            event = alert_event(alerts, rule, finding, transition)
            value = event.model_dump_json().encode()
            # An alert app that is not registered gets its events dead-lettered as `unknown app`.
            key = await watch.signing_keys.signing_key(event.app) if watch.signing_keys is not None else None
            headers = signed_headers(value, key) if key else None
            await (await events.send(key=event.app.encode(), value=value, headers=headers))
            await watch.incidents.notified(rule.name, finding.subject, transition)
            catalog.ALERTS.labels(rule.name, transition.state).inc()
            log.warning("alert %s %s: %s", rule.name, transition.state, finding.detail)
            emitted += 1
    return emitted


def alert_event(alerts: AlertFile, rule: AlertRule, finding: Finding, transition: Transition) -> Event:
    """The event announcing one incident's change. Its id is the same however often it is emitted (two
    evaluators, a retry after a failed produce), so ingest's dedup keeps it to one message."""
    since = datetime.fromtimestamp(transition.since, UTC)
    event_id = f"alert.{rule.name}.{finding.subject}.{transition.incident}.{int(transition.since)}"
    notify = alerts.notify
    data: dict[str, Any] = {
        "alert": rule.name,
        "kind": rule.kind,
        "subject": finding.subject,
        "state": transition.state,
        "incident": transition.incident,
        "detail": finding.detail,
        "summary": rule.summary,
        "value": finding.value,
        "since": since.isoformat(timespec="seconds"),
    }
    return Event.model_validate({
        "event_id": f"{event_id[:118]}.{transition.state}",
        "app": notify.app,
        "type": ALERT_TYPE,
        "template": notify.template,
        "category": "alert",
        "priority": notify.priority,
        "channels": notify.channels,
        "audience": notify.audience,
        "data": data,
    })


def _lags(app: faust.App, topic_stage: Mapping[str, str]) -> dict[tuple[str, str], int]:
    """Records behind the high watermark on this worker's partitions, per stage and topic.

    Read from Faust's consumer: the high watermark of the last fetch, and the committed offset (else the
    last read one) of each assigned partition. Private attributes: a Faust upgrade that moves them gives
    no lag rather than a crash.
    """
    consumer = getattr(app, "_consumer", None)
    if consumer is None:
        return {}
    try:
        assignment = consumer.assignment()
    except Exception:  # not started, or rebalancing
        return {}
    committed: Mapping[Any, int | None] = getattr(consumer, "_committed_offset", {})
    read: Mapping[Any, int | None] = getattr(consumer, "_read_offset", {})
    lags: dict[tuple[str, str], int] = {}
    for tp in assignment:
        stage = topic_stage.get(tp.topic)
        if stage is None:
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            highwater = None
        if highwater is None:
            continue
        done = committed.get(tp)
        if done is None:
            last = read.get(tp)
            done = 0 if last is None else last + 1
        key = (stage, tp.topic)
        lags[key] = lags.get(key, 0) + max(0, int(highwater) - int(done))
    return lags

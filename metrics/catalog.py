"""Every metric Switchboard exports, defined once so names and labels stay one vocabulary.

Labels are bounded by construction: channels, statuses and stages are closed vocabularies, providers
and apps are configured names, routes are the API's route templates. Never a user id, message id or
raw path: one of those would make a new time series per person (`bounded` caps what slips through).

Besides Prometheus, the counts alert rules look at (provider calls and failures, refused credentials,
dead letters) are kept in a `Tally` that the worker drains into Redis time buckets, so an evaluator
sees the whole fleet, not just its own process.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter as Tally_
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

NAMESPACE = "switchboard"
MAX_LABEL_VALUES = 200
"""Distinct values one label may take in a process; later ones are counted as `other`."""

# Provider calls take milliseconds (local robots) to seconds (SMS gateways abroad, SMTP with STARTTLS).
SEND_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INSERT_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

EVENTS = Counter(
    "events", "Events read by ingest, by app and lane (the topic they came on) and outcome",
    ["app", "lane", "outcome"], namespace=NAMESPACE,
)
FLOW = Counter(
    "flow", "Progress of the flow's stages (the counters also kept in Redis as sb:flow)",
    ["counter"], namespace=NAMESPACE,
)
SENDS = Counter(
    "sends", "Deliveries handed to a channel, by how they ended (sent, delivered, failed, deferred)",
    ["channel", "provider", "outcome"], namespace=NAMESPACE,
)
SEND_SECONDS_TOTAL = Histogram(
    "send_seconds", "Time one delivery took through its channel, retries and failover included",
    ["channel", "provider"], buckets=SEND_SECONDS, namespace=NAMESPACE,
)
PROVIDER_CALLS = Counter(
    "provider_calls", "Calls to a provider, by result (ok, failed, throttled, refused, credentials)",
    ["channel", "provider", "result"], namespace=NAMESPACE,
)
PROVIDER_SECONDS = Histogram(
    "provider_call_seconds", "Time one provider call took, whatever its result",
    ["channel", "provider"], buckets=SEND_SECONDS, namespace=NAMESPACE,
)
PROVIDER_OUT = Gauge(
    "provider_out", "1 while this process skips a provider after failures (its circuit breaker is open)",
    ["provider"], namespace=NAMESPACE,
)
DEAD_LETTERS = Counter(
    "dead_letters", "Records dead-lettered, by the stage that could not carry them",
    ["stage"], namespace=NAMESPACE,
)
CONSUMER_LAG = Gauge(
    "consumer_lag", "Records on the topic not yet processed by this process's stage (its partitions)",
    ["stage", "topic"], namespace=NAMESPACE,
)
WAITING = Gauge(
    "waiting", "Items Redis holds for later: scheduled deliveries, parked dispatches",
    ["queue"], namespace=NAMESPACE,
)
INFRASTRUCTURE_ERRORS = Counter(
    "infrastructure_errors", "Errors of the parts Switchboard depends on (redis, broker, clickhouse)",
    ["system", "where"], namespace=NAMESPACE,
)
CLICKHOUSE_ROWS = Counter(
    "clickhouse_insert_rows", "Rows inserted into ClickHouse by the analytics service, by table",
    ["table"], namespace=NAMESPACE,
)
CLICKHOUSE_SECONDS = Histogram(
    "clickhouse_insert_seconds", "Time one ClickHouse insert took", ["table"],
    buckets=INSERT_SECONDS, namespace=NAMESPACE,
)
API_REQUESTS = Counter(
    "api_requests", "HTTP API requests, by route template, method and status",
    ["route", "method", "status"], namespace=NAMESPACE,
)
API_SECONDS = Histogram(
    "api_request_seconds", "HTTP API request time, by route template", ["route"], namespace=NAMESPACE,
)
ALERTS = Counter(
    "alerts", "Alert messages emitted, by rule and state (firing, resolved)",
    ["rule", "state"], namespace=NAMESPACE,
)


class Tally:
    """Counts the alert rules read, kept in process until the worker drains them into Redis."""

    def __init__(self) -> None:
        self._counts: Tally_[str] = Tally_()
        self._lock = threading.Lock()  # adapters may count from executor threads

    def add(self, field: str, n: int = 1) -> None:
        with self._lock:
            self._counts[field] += n

    def drain(self) -> dict[str, int]:
        """Everything counted since the last drain; put it back with `restore` if it cannot be kept."""
        with self._lock:
            counts, self._counts = dict(self._counts), Tally_()
        return counts

    def restore(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            self._counts.update(counts)


WATCHED = Tally()


def watched_field(kind: str, *parts: str) -> str:
    """The name a watched count has in Redis: `kind|part|part`, e.g. `failed|sms|aliyun-main`."""
    return "|".join((kind, *parts))


_seen: dict[str, set[str]] = {}
_seen_lock = threading.Lock()


def bounded(label: str, value: str) -> str:
    """`value`, or `other` once `label` has taken MAX_LABEL_VALUES distinct values in this process: a
    guard for labels fed from configuration or input (apps, providers) that might grow without end."""
    seen = _seen.get(label)
    if seen is not None and value in seen:  # the common case, without the lock
        return value
    with _seen_lock:
        seen = _seen.setdefault(label, set())
        if value in seen:
            return value
        if len(seen) >= MAX_LABEL_VALUES:
            return "other"
        seen.add(value)
        return value


@functools.cache
def _child(metric: Any, *labels: str) -> Any:
    """The labelled series, looked up once: `labels()` takes a lock and builds a key on every call, a
    cost paid per send otherwise. Its callers bound the labels first, so the cache is bounded too."""
    return metric.labels(*labels)


def provider_call(channel: str, provider: str, result: str, seconds: float) -> None:
    """One call to a provider: its result and time; failures and refused credentials are watched."""
    provider = bounded("provider", provider)
    _child(PROVIDER_CALLS, channel, provider, result).inc()
    _child(PROVIDER_SECONDS, channel, provider).observe(seconds)
    WATCHED.add(watched_field("calls", channel, provider))
    if result in ("failed", "credentials"):
        WATCHED.add(watched_field("failed", channel, provider))
    if result == "credentials":
        WATCHED.add(watched_field("credentials", channel, provider))


def provider_out(provider: str, out: bool) -> None:
    PROVIDER_OUT.labels(bounded("provider", provider)).set(1 if out else 0)


def send_outcome(channel: str, provider: str, outcome: str, seconds: float) -> None:
    """How one delivery through a channel ended (after its retries): sent, delivered, failed, deferred."""
    provider = bounded("provider", provider)
    _child(SENDS, channel, provider, outcome).inc()
    _child(SEND_SECONDS_TOTAL, channel, provider).observe(seconds)
    WATCHED.add(watched_field("sends", channel))
    if outcome in ("failed", "deferred"):
        WATCHED.add(watched_field("send_failed", channel))


def send_outcomes(channel: str, provider: str, outcome: str, n: int, seconds: float) -> None:
    """`n` deliveries through one channel and provider that ended alike, as one batch (the inbox)."""
    if not n:
        return
    provider = bounded("provider", provider)
    _child(SENDS, channel, provider, outcome).inc(n)
    latency = _child(SEND_SECONDS_TOTAL, channel, provider)
    for _ in range(n):
        latency.observe(seconds)
    WATCHED.add(watched_field("sends", channel), n)
    if outcome in ("failed", "deferred"):
        WATCHED.add(watched_field("send_failed", channel), n)


def dead_lettered(stage: str, n: int = 1) -> None:
    if n:
        DEAD_LETTERS.labels(bounded("stage", stage)).inc(n)
        WATCHED.add(watched_field("dead_letters", "all"), n)


def flow(counts: Mapping[Any, int]) -> None:
    for name, n in counts.items():
        if n:
            _child(FLOW, bounded("counter", name)).inc(n)


def event(app: str, lane: str, outcome: str) -> None:
    EVENTS.labels(bounded("app", app) if app else "", bounded("lane", lane), outcome).inc()


_SYSTEMS = {"redis": "redis", "aiokafka": "broker", "kafka": "broker", "faust": "broker",
            "clickhouse_connect": "clickhouse", "chdb": "clickhouse"}


def infrastructure_error(exc: BaseException, where: str) -> None:
    """Count an error of a part Switchboard depends on, named by the library that raised it."""
    root = type(exc).__module__.split(".")[0]
    system = _SYSTEMS.get(root, "other")
    if system == "other" and isinstance(exc, OSError):
        system = "network"
    INFRASTRUCTURE_ERRORS.labels(system, where).inc()


# The stage that consumes each topic (lanes such as `events.urgent` are ingest's too) and the timers
# that produce on their own; a letter's source is `topic:partition:offset` or one of these names.
_STAGE_OF_TOPIC = (
    ("deliveries", "decide"), ("dispatch", "send"), ("receipts", "track"), ("events", "ingest")
)
_SOURCES = frozenset({"ingest", "decide", "send", "track", "schedule", "parked", "fallback", "offline",
                      "dead letters"})


def stage_of(source: str) -> str:
    """The stage a dead letter comes from, named by its source, in a bounded vocabulary."""
    if source in _SOURCES:
        return source
    topic = source.rsplit(":", 2)[0] if source.count(":") >= 2 else source
    name = topic.rsplit("-", 1)[-1]  # topics may carry a deployment's prefix
    for suffix, stage in _STAGE_OF_TOPIC:
        if name == suffix or name.startswith(f"{suffix}."):
            return stage
    return "other"


def dead_letters_from(sources: list[str]) -> None:
    for source in sources:
        dead_lettered(stage_of(source))


def timed_insert(table: str, write: Callable[[], int]) -> int:
    """Run one ClickHouse insert (`write` returns its rows), counting its rows and time."""
    started = time.monotonic()
    rows = write()
    CLICKHOUSE_SECONDS.labels(table).observe(time.monotonic() - started)
    CLICKHOUSE_ROWS.labels(table).inc(rows)
    return rows


def consumer_lag(stage: str, committed: Mapping[Any, int], highwater: Callable[[Any], int | None]) -> None:
    """Set the lag gauge of `stage` per topic: records past each partition's committed offset."""
    lags: dict[str, int] = {}
    for tp, offset in committed.items():
        high = highwater(tp)
        if high is not None:
            lags[tp.topic] = lags.get(tp.topic, 0) + max(0, high - offset)
    for topic, lag in lags.items():
        CONSUMER_LAG.labels(stage, topic).set(lag)

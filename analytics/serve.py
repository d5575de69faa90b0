"""`switchboard analytics`: the service's topics, consumer, ClickHouse and, for the embedded engine,
ClickHouse's HTTP interface, run together until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from analytics.analysts import Analysts
from analytics.attribution import TokenVerifier
from analytics.attribution_rules import AttributionRules
from analytics.connection import open_clickhouse, parse_dsn
from analytics.http_interface import create_http_interface
from analytics.migrate import apply_migrations
from analytics.query_engine import chdb_engine
from analytics.service import AnalyticsService, ClickHouseWriters, Kind, Progress, consumer_settings
from metrics.exposition import serve_metrics
from settings import Settings, SwitchboardError

log = logging.getLogger("switchboard.analytics")

TOPICS: dict[str, Kind] = {
    "receipts": "receipts",
    "events.accepted": "accepted",
    "conversions": "conversions",
    "erasures": "erasures",
    "audit": "audit",
}


def service_topics(settings: Settings) -> dict[str, Kind]:
    """Topic name (with the prefix) -> what it carries."""
    return {settings.topic(name): kind for name, kind in TOPICS.items()}


async def serve_analytics(
    settings: Settings, progress: Progress, tokens: TokenVerifier | None = None
) -> None:
    """Run the service until a stop signal; the batch in hand is written and committed before exit.

    `tokens` verifies the click-link tokens that conversions produced straight onto the topic carry
    (the link signer lives above this layer, so the caller hands it in)."""
    target = parse_dsn(settings.clickhouse)
    serves_http = target.kind == "chdb"
    analysts: Analysts | None = None
    if serves_http:
        _check_port_free(settings.analytics_host, settings.analytics_port)
        analysts = Analysts.load(settings.analytics_users, settings.reader_password())
    # A missing file means the built-in default (clicked 7d, read 3d, opened 3d, delivered 1d, last touch).
    attribution = (
        AttributionRules.load(settings.attribution) if settings.attribution.exists() else AttributionRules()
    )
    serve_metrics(settings.metrics_host, settings.analytics_metrics_port, "analytics")
    client = await asyncio.to_thread(open_clickhouse, settings.clickhouse)
    applied = await asyncio.to_thread(apply_migrations, client)
    if applied:
        log.warning("applied ClickHouse migrations %s", ", ".join(applied))
    kinds = service_topics(settings)
    bootstrap = settings.kafka.removeprefix("kafka://")
    await _create_topics(bootstrap, list(kinds), settings.partitions)
    consumer = AIOKafkaConsumer(*kinds, bootstrap_servers=bootstrap, **consumer_settings(settings.app_id))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server: _Server | None = None
    tasks: list[asyncio.Task[None]] = []
    await consumer.start()
    try:
        if analysts is not None:
            engine = chdb_engine(settings.clickhouse)
            config = uvicorn.Config(
                create_http_interface(engine, analysts),
                host=settings.analytics_host,
                port=settings.analytics_port,
                log_level="warning",
                lifespan="off",
            )
            server = _Server(config)
            tasks.append(asyncio.create_task(server.serve()))
        service = AnalyticsService(consumer, kinds, ClickHouseWriters(client, attribution, tokens), progress)
        log.warning(
            "analytics service: consuming %s as group %s%s",
            ", ".join(kinds),
            consumer_settings(settings.app_id)["group_id"],
            f"; ClickHouse HTTP interface on http://{settings.analytics_host}:{settings.analytics_port}"
            if serves_http
            else "",
        )
        tasks.append(asyncio.create_task(service.run(stop)))
        # Whichever ends first (a stop signal, or a failure) ends both.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        if server is not None:
            server.should_exit = True
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await consumer.stop()
        client.close()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service stops it, after the consumer's last batch."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SwitchboardError(
                f"cannot serve the ClickHouse HTTP interface on {host}:{port} ({exc.strerror}); "
                "is another analytics service running? (setting SWITCHBOARD_ANALYTICS_PORT)"
            ) from None


async def _create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    """The service may start before any worker has created the topics it reads."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, partitions, 1) for name in names if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()

"""Where the API puts what it accepts: events, inbox receipts and conversions, onto their topics."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from records.audit import AuditRecord
from records.conversions import Conversion
from records.erasure import ErasureRequest
from records.signing import SIGNATURE_HEADER
from records.topics import Lane, Receipt, lane_topic
from state.flow_counters import FlowCounters

REQUEST_TIMEOUT_MS = 10_000


class PublishError(RuntimeError):
    """The broker did not acknowledge a record; the caller must not report it as accepted."""


class Publisher(Protocol):
    """Publishes records and returns only once the broker has acknowledged them."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def check(self) -> None:
        """Raise PublishError when the broker cannot be reached."""

    async def publish_event(self, key: str, value: bytes, lane: Lane = "bulk", signature: str = "") -> None:
        """Publish an event on its lane's topic (`events` or `events.urgent`), with its app's signature
        (`records.signing`) in the `switchboard-signature` header."""

    async def publish_receipt(self, receipt: Receipt) -> None: ...

    async def publish_conversion(self, conversion: Conversion) -> None: ...

    async def publish_audit(self, record: AuditRecord) -> None:
        """Publish an audit record on `audit`; an action is reported done only once this returns."""


class KafkaPublisher:
    """A Publisher on aiokafka: acks from all in-sync replicas before a send returns."""

    def __init__(
        self,
        kafka_url: str,
        events_topic: str,
        receipts_topic: str,
        check_timeout: float = 3.0,
        counters: FlowCounters | None = None,
        conversions_topic: str = "conversions",
        audit_topic: str = "audit",
        erasures_topic: str = "erasures",
    ) -> None:
        self.bootstrap = bootstrap_servers(kafka_url)
        self.events_topic = events_topic
        self.receipts_topic = receipts_topic
        self.conversions_topic = conversions_topic
        self.audit_topic = audit_topic
        self.erasures_topic = erasures_topic
        # Receipts the API adds (reads, clicks, provider reports) count like the stages' own, so
        # "caught up" means they are in ClickHouse too.
        self._counters = counters
        self._check_timeout = check_timeout
        self._producer: AIOKafkaProducer | None = None
        # Set when the broker did not answer: the next send asks for metadata first (`_send`).
        self._broker_was_away = False

    async def start(self) -> None:
        # A broker that is down costs a caller this long before its 503 (aiokafka's default is 40 s); a
        # record acknowledged after all is a duplicate the caller's retry makes, which ingest drops.
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", request_timeout_ms=REQUEST_TIMEOUT_MS
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise PublishError(f"cannot reach the Kafka broker at {self.bootstrap}: {exc}") from exc
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def check(self) -> None:
        producer = self._running()
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), self._check_timeout)
        except (KafkaError, TimeoutError) as exc:
            self._broker_was_away = True
            raise PublishError(f"Kafka broker at {self.bootstrap} does not answer: {exc!r}") from exc

    async def publish_event(self, key: str, value: bytes, lane: Lane = "bulk", signature: str = "") -> None:
        # Codes, alerts and urgent messages go on the urgent twin, which the worker reads first.
        headers = [(SIGNATURE_HEADER, signature.encode())] if signature else None
        await self._send(lane_topic(self.events_topic, lane), key, value, headers)

    async def publish_receipt(self, receipt: Receipt) -> None:
        # Keyed by message id, so every transition of one message stays in order on one partition.
        await self._send(self.receipts_topic, receipt.message_id, receipt.model_dump_json().encode())
        if self._counters is not None:
            await self._counters.add({"receipts": 1})

    async def publish_conversion(self, conversion: Conversion) -> None:
        # Keyed by user id (the topic's contract), so one person's conversions stay in order.
        await self._send(self.conversions_topic, conversion.user_id, conversion.model_dump_json().encode())

    async def publish_audit(self, record: AuditRecord) -> None:
        # Keyed by actor, so one operator's actions stay in order on one partition.
        await self._send(self.audit_topic, record.actor, record.model_dump_json().encode())

    async def publish_erasure(self, request: ErasureRequest) -> None:
        # Keyed by the pseudonym, never the person: record keys show in every tool that reads a topic.
        await self._send(self.erasures_topic, request.pseudonym, request.model_dump_json().encode())

    async def _send(
        self, topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        producer = self._running()
        try:
            if self._broker_was_away:
                # A broker back from a restart without storage (the local Tansu) acknowledges the first
                # record sent straight to a topic it no longer has, then never serves it; a metadata
                # request first makes the topic anew, and the record is kept (README, "Faults").
                await asyncio.wait_for(producer.client.force_metadata_update(), self._check_timeout)
                self._broker_was_away = False
            await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
        except (KafkaError, TimeoutError) as exc:
            self._broker_was_away = True
            raise PublishError(f"topic {topic!r} did not acknowledge the record: {exc!r}") from exc

    def _running(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise PublishError("the Kafka publisher is not started")
        return self._producer


def bootstrap_servers(kafka_url: str) -> str:
    """`kafka://host:port[,host:port]` (or bare `host:port`) to aiokafka's bootstrap string."""
    servers = kafka_url.split("://", 1)[1] if "://" in kafka_url else kafka_url
    servers = servers.rstrip("/")
    if not servers or any(":" not in part for part in servers.split(",")):
        raise ValueError(f"expected kafka://host:port[,host:port...], got {kafka_url!r}")
    return servers

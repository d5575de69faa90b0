"""The analytics service as it runs: a child process owning ClickHouse beside two workers, read live
through its HTTP interface with clickhouse-connect's ordinary client while the workers are sending."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.apps import AppRegistry
from state.flow_counters import FlowCounters, caught_up
from state.users import User, UserDirectory
from tests.integration.test_flow import FLOW_TIMEOUT, produce

PEOPLE = 40
WAVES = 6


def notice(event_id: str) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "app": "campus",
            "type": "campus.notice",
            "template": "campus_notice",
            "category": "transactional",  # no quiet hours: every notice goes out now, at any hour
            "audience": {"tags": ["student"]},
            "data": {"headline": "Library hours", "body": "Open until midnight."},
        }
    ).encode()


RULES = """
ruleset: service-test
rules:
  - id: notices
    description: Campus notices to the inbox.
    when: {type: [campus.notice]}
    then: {channels: [inbox]}
"""


async def test_two_workers_and_the_service_analysts_read_live_while_sending(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    flow = settings.model_copy(update={"rules": rules, "clickhouse": f"chdb://{tmp_path / 'service-ch'}"})
    await UserDirectory(redis).upsert(
        [User(user_id=f"s{i}", tags=("student",), bindings={"inbox": f"s{i}"}) for i in range(PEOPLE)]
    )
    await AppRegistry(redis).register("campus", {"inbox"})
    counters = FlowCounters(redis)
    with (
        SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
        SwitchboardProcess("worker", flow, tmp_path / "worker-1.log") as first,
        SwitchboardProcess("worker", flow, tmp_path / "worker-2.log") as second,
    ):
        analyst = await _connect(flow, service)
        seen: list[int] = []
        for wave in range(WAVES):
            await produce(flow, [notice(f"n{wave}")])
            # Live: each answer counts what is in ClickHouse at that moment, never fewer than before.
            live = analyst.query("SELECT count() FROM message_events WHERE status = 'delivered'")
            seen.append(live.result_rows[0][0])
            await asyncio.sleep(0.5)
        deadline = time.monotonic() + FLOW_TIMEOUT
        while not caught_up(counts := await counters.read(), WAVES):
            for process in (service, first, second):
                assert process.running, f"{process.role} exited:\n{process.log_tail()}"
            assert time.monotonic() < deadline, f"not caught up: {counts}\n{service.log_tail()}"
            await asyncio.sleep(0.2)
        # Two workers ran at once: neither could have if a worker still opened the engine.
        assert first.running and second.running

        # A business system reports two payments straight onto `conversions`, and one record that is
        # no conversion at all: both payments are credited, the bad record is a row, nothing stops.
        touched = analyst.query(
            "SELECT any(message_id) FROM message_events WHERE status = 'delivered' AND user_id = 's1'"
        ).result_rows[0][0]
        no_conversion = b'{"conversion_id": "no-user"}'
        await produce_to(
            flow, "conversions", [payment("pay-1", "s1", touched), no_conversion, payment("pay-2", "s2")]
        )
        deadline = time.monotonic() + FLOW_TIMEOUT
        while (await counters.read()).get("conversions", 0) < 2:
            assert service.running, service.log_tail()
            assert time.monotonic() < deadline, service.log_tail()
            await asyncio.sleep(0.2)
        converted = analyst.query(
            "SELECT conversion_id, user_id, message_id, channel, rule_id, value FROM message_events "
            "WHERE status = 'converted' ORDER BY conversion_id"
        ).result_rows
        recorded = analyst.query("SELECT count() FROM conversions FINAL").result_rows[0][0]
        refused = analyst.query(
            "SELECT reason FROM message_events WHERE status = 'dead_lettered' AND reason LIKE '%conversions%'"
        ).result_rows

        delivered = analyst.query(
            "SELECT uniqExact(message_id) FROM message_events WHERE status = 'delivered'"
        ).result_rows[0][0]
        logged = analyst.query("SELECT count() FROM event_log FINAL").result_rows[0][0]
        arrow = analyst.query_arrow("SELECT status, count() AS n FROM message_events GROUP BY status")
        per_status = dict(zip(arrow.column("status").to_pylist(), arrow.column("n").to_pylist(), strict=True))
        assert first.stop() == 0 and second.stop() == 0
        assert service.stop() == 0, service.log_tail()

    assert seen == sorted(seen) and seen[-1] < PEOPLE * WAVES  # read while the workers were sending
    assert delivered == PEOPLE * WAVES
    assert logged == WAVES
    assert per_status["decided"] >= PEOPLE * WAVES and per_status["sent"] >= PEOPLE * WAVES
    assert counts["rows"] >= counts["receipts"] and counts["logged"] == counts["accepted"] == WAVES
    assert converted[0][:5] == ("pay-1", "s1", touched, "inbox", "notices")
    assert [c for c, *_ in converted] == ["pay-1", "pay-2"]  # pay-2 by its last touch, within the window
    assert float(converted[0][5]) == 120.5
    assert recorded == 2
    assert len(refused) == 1 and "conversions:" in refused[0][0] and "Field required" in refused[0][0]


def payment(conversion_id: str, user_id: str, message_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "conversion_id": conversion_id, "app": "campus", "user_id": user_id, "type": "payment",
            "value": "120.50", "currency": "CNY", "occurred_at": datetime.now(UTC).isoformat(),
            "message_id": message_id,
        }
    ).encode()


async def produce_to(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(settings.topic(topic), value, key=b"test")
    finally:
        await producer.stop()


async def _connect(settings: Settings, service: SwitchboardProcess) -> clickhouse_connect.driver.Client:
    """clickhouse-connect's ordinary HTTP client, as an analyst would open it, once the service answers."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return clickhouse_connect.get_client(
                host=settings.analytics_host,
                port=settings.analytics_port,
                username="switchboard",
                password=settings.reader_password().get_secret_value(),
            )
        except Exception:
            assert service.running, service.log_tail()
            assert time.monotonic() < deadline, f"the HTTP interface never answered:\n{service.log_tail()}"
            await asyncio.sleep(0.3)

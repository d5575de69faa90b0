"""Named strategies in real processes: broker → worker (push through the local JPush peer, SMS through the
local gateway peer) → analytics service → ClickHouse. An event naming `push_then_sms` is pushed; a push
left unread brings the SMS after the step's delay, a read one does not; an event naming a strategy the
rules do not define is refused with the reason on its row."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from redis.asyncio import Redis

from analytics.connection import open_reader
from localparts.peers import jpush, sms_gateway
from localparts.peers.server import PeerServer
from localparts.switchboard_process import SwitchboardProcess
from records.topics import EventCore, Receipt, message_id_for
from settings import Settings
from state.apps import AppRegistry
from state.fallback import chain_shard
from state.users import User, UserDirectory
from tests.integration.test_flow import produce, wait_caught_up

SMS_SECRET = "strategy-gateway-secret"
JPUSH_KEY, JPUSH_SECRET = "strategyjpushappkey000", "strategy-jpush-master-secret"
STEP_SECONDS = 3
RULES = f"""\
ruleset: strategies-flow
strategies:
  push_then_sms:
    description: A push; unread after {STEP_SECONDS} seconds, an SMS.
    first_of: [push]
    fallback:
      - {{after: {STEP_SECONDS}s, if_not: read, first_of: [sms]}}
rules:
  - id: reminders
    description: Without a strategy, reminders go by SMS only; the event's strategy replaces that.
    when: {{type: [course.reminder]}}
    then: {{first_of: [sms]}}
"""
PEOPLE = {
    "ignorer": ("+8613800000101", jpush.new_registration_id()),
    "reader": ("+8613800000102", jpush.new_registration_id()),
}
DATA = {"course": "Linear Algebra", "starts_at": "10:00", "room": "B201"}


def providers(jpush_url: str, sms_url: str) -> str:
    return (
        "push:\n  - name: jpush\n    kind: jpush\n"
        f"    options: {{app_key: {JPUSH_KEY}, master_secret: '${{STRATEGY_JPUSH_SECRET}}',"
        f" endpoint: '{jpush_url}', apns_production: false, timeout: 5}}\n"
        "sms:\n  - name: gateway\n    kind: http-sms\n"
        f"    options: {{url: '{sms_url}/sms', secret: '${{STRATEGY_SMS_SECRET}}', sender: CAMPUS}}\n"
    )


def event(event_id: str, strategy: str, people: list[str]) -> dict[str, object]:
    return {
        "event_id": event_id, "app": "lms", "type": "course.reminder", "template": "course_reminder",
        "category": "notice", "data": DATA, "strategy": strategy, "audience": {"user_ids": people},
    }


async def read_receipt(settings: Settings, user_id: str) -> None:
    """What the app publishes when its user opens the push."""
    core = EventCore.model_validate({k: v for k, v in event("push-1", "push_then_sms", []).items()
                                     if k != "audience"})
    receipt = Receipt.of(core, user_id, "read", channel="push", provider="jpush", rule_id="reminders")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("receipts"), receipt.model_dump_json().encode(), key=b"t")
    finally:
        await producer.stop()


async def test_an_event_naming_a_strategy_follows_its_steps_and_an_unknown_one_is_refused(
    settings: Settings, redis: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATEGY_SMS_SECRET", SMS_SECRET)
    monkeypatch.setenv("STRATEGY_JPUSH_SECRET", JPUSH_SECRET)
    await UserDirectory(redis).upsert([
        User(user_id=name, bindings={"sms": phone, "push": f"jpush:{rid}"})
        for name, (phone, rid) in PEOPLE.items()
    ])
    await AppRegistry(redis).register("lms", {"push", "sms"})
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    push_peer = jpush.create_app(app_key=JPUSH_KEY, master_secret=JPUSH_SECRET)
    sms_peer = sms_gateway.create_app(SMS_SECRET)
    reader_message = message_id_for("lms", "push-1", "reader")
    async with PeerServer(push_peer) as push_server, PeerServer(sms_peer) as sms_server:
        path = tmp_path / "providers.yaml"
        path.write_text(providers(push_server.url, sms_server.url))
        flow = settings.model_copy(update={
            "clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}", "rules": rules, "providers": path,
            "webhook_secret": SecretStr("strategy-webhook-secret"),
        })
        with (
            SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
            SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
        ):
            pushed_at = datetime.now(UTC)
            await produce(flow, [
                json.dumps(event("push-1", "push_then_sms", ["ignorer", "reader"])).encode(),
                json.dumps(event("typo-1", "push_than_sms", ["ignorer"])).encode(),
            ])
            deadline = time.monotonic() + 60
            while len(push_peer[jpush.STATE].received) < 2:
                assert worker.running and time.monotonic() < deadline, worker.log_tail()
                await asyncio.sleep(0.1)
            await read_receipt(flow, "reader")
            while await redis.hget(chain_shard(reader_message).message(reader_message), "next") != b"0":
                assert worker.running and time.monotonic() < deadline, worker.log_tail()
                await asyncio.sleep(0.1)
            while not sms_peer[sms_gateway.STATE].received:
                assert worker.running and time.monotonic() < deadline, worker.log_tail()
                await asyncio.sleep(0.1)
            texted_after = (datetime.now(UTC) - pushed_at).total_seconds()
            await asyncio.sleep(STEP_SECONDS)  # the reader's step, had it not been cancelled, is due by now
            await wait_caught_up(redis, 2, worker, service)
            assert worker.stop() == 0, worker.log_tail()
            client = open_reader(flow)
            try:
                rows = client.query(
                    "SELECT event_id, user_id, channel, status, step, reason FROM message_events FINAL "
                    "WHERE app = 'lms' ORDER BY event_id, user_id, step, channel, status"
                ).result_rows
            finally:
                client.close()

    texts = sms_peer[sms_gateway.STATE].received
    assert [text["to"] for text in texts] == [PEOPLE["ignorer"][0]]  # the reader read the push
    assert texted_after >= STEP_SECONDS
    pushed = [(r[1], r[3], r[4]) for r in rows if r[0] == "push-1" and r[2] == "push" and r[3] == "sent"]
    assert sorted(pushed) == [("ignorer", "sent", 0), ("reader", "sent", 0)]
    ignorer = [(r[2], r[3], r[4]) for r in rows if r[0] == "push-1" and r[1] == "ignorer"]
    assert ("sms", "sent", 1) in ignorer and ("push", "decided", 0) in ignorer
    decided = next(r[5] for r in rows if r[0] == "push-1" and r[1] == "ignorer" and r[3] == "decided")
    assert "strategy push_then_sms (named by the event)" in decided
    assert not [r for r in rows if r[0] == "push-1" and r[1] == "reader" and r[2] == "sms"]
    refused = [(r[1], r[3], r[5]) for r in rows if r[0] == "typo-1"]
    assert refused == [(
        "ignorer", "suppressed",
        "rule reminders matched; refused: unknown strategy 'push_than_sms' (did you mean 'push_then_sms'?) "
        "in the loaded rules",
    )]

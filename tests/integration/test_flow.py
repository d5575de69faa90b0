"""The whole flow in real processes: broker → worker (ingest → decide → send → track) → analytics
service → ClickHouse.

The worker and the analytics service run as child processes; the service owns its own ClickHouse
folder (chdb allows one per process) and the test reads it through the service's HTTP interface.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import SecretStr
from redis.asyncio import Redis

from analytics.connection import open_reader
from analytics.report import NO_CHANNEL
from channels.webhook import verify
from localparts import LocalSmtpServer, free_port
from localparts.switchboard_process import SwitchboardProcess
from rules.loader import load_ruleset
from settings import ROOT, Settings
from state.apps import AppRegistry
from state.flow_counters import FlowCounters, caught_up
from state.inbox import Inbox
from state.offline import OfflineKeep
from state.users import User, UserDirectory
from tests.integration.signing import signatures

SECRET = "test-webhook-secret"
FLOW_TIMEOUT = 120.0

ALICE = User(
    user_id="alice",
    name="Alice",
    channel_pref="email",
    tags=("undergraduate",),
    bindings={"email": "alice@uni.example", "inbox": "alice"},
)
BO = User(user_id="bo", name="Bo", tags=("undergraduate",), bindings={"inbox": "bo"})
CHEN = User(
    user_id="chen", name="Chen", tags=("staff",), bindings={"email": "chen@uni.example", "inbox": "chen"}
)


def fee_due(event_id: str, **overrides: Any) -> dict[str, Any]:
    """A transactional bursar event that is not a fee notice: rule fees-and-payments, email and inbox."""
    event: dict[str, Any] = {
        "event_id": event_id,
        "app": "bursar",
        "type": "fee.statement",
        "template": "fee_due",
        "category": "transactional",
        "priority": "high",
        "audience": {"tags": ["undergraduate"]},
        "data": {"amount": "¥5,000", "due_date": "2026-12-01", "term": "Autumn 2026"},
    }
    event.update(overrides)
    return event


class WebhookPeer:
    """A local HTTP receiver that accepts only correctly signed bodies."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.rejected = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        signature = request.headers.get("X-Switchboard-Signature", "")
        if not verify(SECRET, request.headers.get("X-Switchboard-Timestamp", ""), body, signature):
            self.rejected += 1
            return web.Response(status=401)
        self.accepted.append(json.loads(body))
        return web.json_response({"ok": True})


@pytest.fixture
async def webhook_peer() -> AsyncIterator[tuple[WebhookPeer, str]]:
    peer = WebhookPeer()
    application = web.Application()
    application.router.add_post("/hook", peer.handle)
    runner = web.AppRunner(application)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield peer, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


@pytest.fixture
def flow_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}",
            "webhook_secret": SecretStr(SECRET),
        }
    )


async def produce(settings: Settings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    signed = await signatures(settings, values)
    try:
        for value, headers in zip(values, signed, strict=True):
            await producer.send_and_wait(settings.topic("events"), value, key=b"test", headers=headers)
    finally:
        await producer.stop()


async def wait_caught_up(
    redis: Redis, emitted: int, worker: SwitchboardProcess, service: SwitchboardProcess | None = None
) -> dict[str, int]:
    """Every event through the worker; with the analytics `service`, every row in ClickHouse too."""
    counters = FlowCounters(redis)
    deadline = time.monotonic() + FLOW_TIMEOUT
    while time.monotonic() < deadline:
        counts = await counters.read()
        if caught_up(counts, emitted, analytics=service is not None) and counts.get(
            "released", 0
        ) >= counts.get("scheduled", 0):
            return counts
        assert worker.running, f"worker exited:\n{worker.log_tail()}"
        assert service is None or service.running, f"analytics service exited:\n{service.log_tail()}"
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"flow not caught up in {FLOW_TIMEOUT}s: {await counters.read()}\n{worker.log_tail()}"
    )


async def dead_letters(settings: Settings, expected: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        settings.topic("events.deadletter"),
        bootstrap_servers=settings.kafka.removeprefix("kafka://"),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 20
        while len(found) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            found.extend(json.loads(r.value) for records in batches.values() for r in records)
    finally:
        await consumer.stop()
    return found


def report(settings: Settings) -> dict[str, Any]:
    """`switchboard report --json` in a child, reading through the analytics service's HTTP interface."""
    env = {**settings.to_env(), "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-m", "app", "report", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.redis_cluster_too  # the whole flow on a Redis Cluster too
async def test_events_flow_to_people_and_to_clickhouse(
    flow_settings: Settings,
    redis: Redis,
    smtp: LocalSmtpServer,
    webhook_peer: tuple[WebhookPeer, str],
    tmp_path: Path,
) -> None:
    peer, hook_url = webhook_peer
    await UserDirectory(redis).upsert([ALICE, BO, CHEN])
    registry = AppRegistry(redis)
    await registry.register("bursar", {"email", "inbox"})
    await registry.register("security", {"email", "inbox", "webhook"})
    events = [
        json.dumps(fee_due("fee-1")).encode(),  # alice: email+inbox, bo: inbox
        json.dumps(fee_due("fee-1")).encode(),  # duplicate: dropped
        b"{not json",  # dead letter
        json.dumps(fee_due("fee-2", category="urgent-ish")).encode(),  # dead letter: bad category
        json.dumps(fee_due("fee-3", app="nobody")).encode(),  # dead letter: unknown app
        json.dumps(fee_due("fee-4", template="no_such")).encode(),  # dead letter: unknown template
        json.dumps(
            {
                "event_id": "alert-1",
                "app": "security",
                "type": "security.alert",
                "template": "security_alert",
                "category": "alert",
                "priority": "urgent",
                "channels": ["webhook"],
                "audience": {"addresses": [{"channel": "webhook", "address": hook_url}]},
                "data": {"headline": "Phishing wave", "action": "Do not open the attachment"},
            }
        ).encode(),
    ]
    with (
        SwitchboardProcess("analytics", flow_settings, tmp_path / "analytics.log") as service,
        SwitchboardProcess("worker", flow_settings, tmp_path / "worker.log") as worker,
    ):
        await produce(flow_settings, events)
        await wait_caught_up(redis, len(events), worker, service)
        # With the worker warm, an event for a few seconds from now waits in the schedule first.
        soon = datetime.now(UTC) + timedelta(seconds=4)
        scheduled = fee_due("fee-5", audience={"user_ids": ["chen"]}, send_at=soon.isoformat())
        await produce(flow_settings, [json.dumps(scheduled).encode()])
        counts = await wait_caught_up(redis, len(events) + 1, worker, service)
        assert datetime.now(UTC) >= soon
        assert worker.stop() == 0, worker.log_tail()
        # The analysts' view, read live through the service, agrees with what happened.
        rows = {row["channel"]: row for row in report(flow_settings)["rows"]}
        assert service.stop() == 0, service.log_tail()

    # What people actually received.
    recipients = sorted(r for mail in smtp.messages for r in mail.rcpt_tos)
    assert recipients == ["alice@uni.example", "chen@uni.example"]  # once each: the duplicate was dropped
    fee_mail = next(m.message for m in smtp.messages if "alice@uni.example" in m.rcpt_tos)
    assert "¥5,000" in fee_mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    inbox = Inbox(redis)
    assert [m.template for m in await inbox.list("bo")] == ["fee_due"]
    assert await inbox.unread_count("alice") == 1
    assert len(peer.accepted) == 1 and peer.rejected == 0
    assert counts["dead_lettered"] == 4 and counts["duplicates"] == 1 and counts["scheduled"] == 1

    # Every refused event is on the dead-letter topic, byte for byte, with a reason naming the problem.
    letters = await dead_letters(flow_settings, 4)
    reasons = sorted(letter["reason"] for letter in letters)
    assert len(reasons) == 4
    assert any(r.startswith("invalid JSON") for r in reasons)
    assert any(r.startswith("category:") for r in reasons)
    assert "unknown app 'nobody'" in reasons
    assert any("unknown template 'no_such'" in r for r in reasons)
    assert {letter["payload"] for letter in letters} >= {"{not json"}

    assert rows["email"]["sent"] == 2
    assert rows["inbox"]["delivered"] == 3
    assert rows["webhook"]["delivered"] == 1
    assert rows[NO_CHANNEL]["dead_lettered"] == 4


def notices_rule(channels: str) -> str:
    return f"""
ruleset: reload-test
rules:
  - id: notices
    description: Campus notices, on whichever channel this version says.
    when: {{type: [campus.notice]}}
    then: {{channels: [{channels}]}}
"""


def notice(event_id: str, user_id: str) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "app": "campus",
            "type": "campus.notice",
            "template": "campus_notice",
            "category": "notice",
            "audience": {"user_ids": [user_id]},
            "data": {"headline": "Library hours", "body": "Open until midnight."},
        }
    ).encode()


async def wait_for_log(text: str, worker: SwitchboardProcess) -> None:
    deadline = time.monotonic() + FLOW_TIMEOUT
    while text not in worker.log_tail(200):
        assert worker.running, worker.log_tail()
        assert time.monotonic() < deadline, f"no {text!r} in the worker log:\n{worker.log_tail()}"
        await asyncio.sleep(0.2)


def read_back(settings: Settings) -> dict[str, Any]:
    """What the analytics service wrote, read through its HTTP interface as Switchboard's reader."""
    client = open_reader(settings)
    try:
        decided = client.query(
            "SELECT event_id, channel, rule_version FROM message_events FINAL "
            "WHERE status = 'decided' ORDER BY event_id"
        ).result_rows
        logged = client.query(
            "SELECT app, event_id, audience FROM event_log FINAL ORDER BY event_id"
        ).result_rows
    finally:
        client.close()
    return {"decided": [list(row) for row in decided], "logged": [list(row) for row in logged]}


async def test_changed_rules_take_effect_without_a_restart_and_accepted_events_are_logged(
    flow_settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(notices_rule("inbox"))
    flow = flow_settings.model_copy(update={"rules": rules})
    v1 = load_ruleset(rules).version
    await UserDirectory(redis).upsert(
        [User(user_id="xi", bindings={"inbox": "xi", "email": "xi@uni.example"})]
    )
    await AppRegistry(redis).register("campus", {"inbox", "email"})
    with (
        SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
        SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
    ):
        await produce(flow, [notice("n1", "xi")])
        await wait_caught_up(redis, 1, worker, service)

        rules.write_text(notices_rule("email"))
        v2 = load_ruleset(rules).version
        await wait_for_log(f"rules reloaded: version {v2}", worker)
        await produce(flow, [notice("n2", "xi")])
        await wait_caught_up(redis, 2, worker, service)

        rules.write_text(notices_rule("email") + "    chanels: [sms]\n")  # a typo: refused
        await wait_for_log("refused, keeping version", worker)
        await produce(flow, [notice("n3", "xi"), b"{not json", notice("n3", "xi")])
        await wait_caught_up(redis, 5, worker, service)
        assert worker.stop() == 0, worker.log_tail()
        rows = read_back(flow)

    assert [r for m in smtp.messages for r in m.rcpt_tos] == ["xi@uni.example"] * 2
    assert [m.template for m in await Inbox(redis).list("xi")] == ["campus_notice"]
    assert rows["decided"] == [["n1", "inbox", v1], ["n2", "email", v2], ["n3", "email", v2]]
    # Each accepted event once: the dead letter and the duplicate are not in the log.
    assert rows["logged"] == [
        ["campus", f"n{i}",
         '{"user_ids":["xi"],"tags":null,"segment":null,"all":false,"addresses":null,"upload":null}']
        for i in (1, 2, 3)
    ]


KEEP_RULES = """
ruleset: keep-test
rules:
  - id: notices
    description: Campus notices go to the inbox, kept a day for people without one yet.
    when: {type: [campus.notice]}
    then:
      channels: [inbox]
      keep_offline: 1d
"""


@pytest.mark.redis_cluster_too
async def test_a_kept_delivery_goes_out_once_its_user_becomes_reachable(
    flow_settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(KEEP_RULES)
    flow = flow_settings.model_copy(update={"rules": rules})
    directory = UserDirectory(redis)
    await directory.upsert([User(user_id="newcomer", bindings={"email": "n@uni.example"})])
    await AppRegistry(redis).register("campus", {"inbox", "email"})
    inbox = Inbox(redis)
    with SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker:
        await produce(flow, [notice("welcome", "newcomer")])
        await wait_caught_up(redis, 1, worker)
        assert await inbox.total("newcomer") == 0  # no inbox yet: kept
        await directory.upsert(
            [User(user_id="newcomer", bindings={"email": "n@uni.example", "inbox": "newcomer"})]
        )
        deadline = time.monotonic() + FLOW_TIMEOUT
        while await inbox.total("newcomer") == 0:
            assert worker.running, worker.log_tail()
            assert time.monotonic() < deadline, f"kept delivery never released\n{worker.log_tail()}"
            await asyncio.sleep(0.2)
        await asyncio.sleep(6)  # one more release round: nothing is handed out twice
        assert worker.stop() == 0, worker.log_tail()
    assert [m.template for m in await inbox.list("newcomer")] == ["campus_notice"]
    assert await OfflineKeep(redis).count("newcomer") == 0  # released and forgotten

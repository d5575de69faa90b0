"""Watched: the Redis state of alerting, and a real worker that sees an SMS provider refuse our
credentials, tells the on-call robot once, and tells it again once the provider is back."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from localparts import free_port
from localparts.peers import robots, sms_gateway
from localparts.peers.server import PeerServer
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.apps import AppRegistry
from state.users import User, UserDirectory
from state.watch import BUCKET_SECONDS, LAG_FRESH_SECONDS, Incidents, LagBoard, WatchWindow
from tests.integration.test_flow import notice, notices_rule, produce, wait_caught_up

GATEWAY_SECRET = "watch-gateway-secret"
ONCALL_KEY = "watch-oncall-key"
ALERT_TIMEOUT = 60.0
RECOVERY_TIMEOUT = 120.0  # the parked send is retried after 30 s, and the window must pass


async def test_watched_counts_are_summed_over_whole_buckets_of_the_window(redis: Redis) -> None:
    window = WatchWindow(redis)
    now = time.time()
    await window.add({"calls|sms|gw": 2, "failed|sms|gw": 1}, at=now)
    await window.add({"calls|sms|gw": 3, "zero": 0}, at=now - BUCKET_SECONDS)
    await window.add({"calls|sms|gw": 100}, at=now - 10 * BUCKET_SECONDS)
    assert await window.window(2 * BUCKET_SECONDS, at=now) == {"calls|sms|gw": 5, "failed|sms|gw": 1}
    assert (await window.window(11 * BUCKET_SECONDS, at=now))["calls|sms|gw"] == 105
    ttl = await redis.ttl(f"sb:watch:counts:{int(now // BUCKET_SECONDS)}")
    assert 0 < ttl <= 2 * 3600  # buckets expire by a duration, whatever the date


async def test_lag_is_summed_over_the_workers_that_reported_lately(redis: Redis) -> None:
    board = LagBoard(redis)
    now = time.time()
    await board.report("w1", {("send", "dispatch"): 40, ("ingest", "events"): 1}, at=now)
    await board.report("w2", {("send", "dispatch"): 2}, at=now)
    await board.report("gone", {("send", "dispatch"): 1000}, at=now - LAG_FRESH_SECONDS - 5)
    assert await board.by_stage(at=now) == {"send": 42, "ingest": 1}
    assert not any(b"gone" in field for field in await redis.hkeys("sb:watch:lag"))  # stale ones cleared


async def test_two_evaluators_announce_an_incident_once_and_its_resolution_once(redis: Redis) -> None:
    one, two = Incidents(redis), Incidents(redis)
    moves = await asyncio.gather(*(i.move("creds", "gw", True) for i in (one, two, one, two)))
    firing = [m for m in moves if m is not None]
    # Until announced, a firing is handed out again (the alert event's id makes repeats one message).
    assert {(m.state, m.incident) for m in firing} == {("firing", 1)}
    await one.notified("creds", "gw", firing[0])
    assert await two.move("creds", "gw", True) is None  # still firing: nothing to say
    assert await one.firing() == {"creds|gw": "1"}
    resolved = await two.move("creds", "gw", False)
    assert resolved is not None and (resolved.state, resolved.incident) == ("resolved", 1)
    await two.notified("creds", "gw", resolved)
    assert await one.move("creds", "gw", False) is None
    again = await one.move("creds", "gw", True)
    assert again is not None and (again.state, again.incident) == ("firing", 2)  # a new incident
    # A restarted evaluator finds the same state in Redis: nothing doubled.
    await Incidents(redis).notified("creds", "gw", again)
    assert await Incidents(redis).move("creds", "gw", True) is None


PROVIDERS = """
sms:
  - name: gateway
    kind: http-sms
    rate: {{per_second: 100, burst: 200}}
    options:
      url: {gateway}/sms
      secret: ${{WATCH_GATEWAY_SECRET}}
      sender: CAMPUS
      timeout: 5
robot:
  - name: wecom
    kind: wecom
    rate: {{per_second: 50, burst: 100}}
    options:
      base_url: {robots}
      robots:
        oncall:
          token: ${{WATCH_ONCALL_KEY}}
      timeout: 5
"""
RULES = """
ruleset: watch-test
rules:
  - id: alerts
    description: Switchboard's alerts to the on-call robot.
    when: {type: [switchboard.alert]}
    then: {channels: [robot]}
  - id: codes
    description: Everything else by SMS.
    then: {channels: [sms]}
"""
ALERTS = """
every: 1s
notify:
  app: ops
  audience: {addresses: [{channel: robot, address: oncall}]}
  channels: [robot]
rules:
  - name: bad-credentials
    kind: credentials_refused
    window: 10s
    summary: Check the gateway's keys.
"""


def login_code(n: int) -> bytes:
    return json.dumps({
        "event_id": f"code-{n}", "app": "portal", "type": "login.code", "template": "verification_code",
        "category": "verification", "priority": "urgent", "audience": {"user_ids": ["s1"]},
        "data": {"code": f"{n:06d}", "minutes": 5},
    }).encode()


def alerts_received(peer: robots.RobotsPeerState) -> list[str]:
    """The markdown of every alert the on-call robot accepted."""
    return [
        str(entry["body"].get("markdown", {}).get("content", ""))
        for entry in peer.received
        if entry["provider"] == "wecom" and entry["robot"] == ONCALL_KEY
    ]


async def wait_for(what: str, check: Any, within: float, worker: SwitchboardProcess) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert worker.running, f"worker exited:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, f"no {what} within {within:g}s:\n{worker.log_tail(60)}"
        await asyncio.sleep(0.5)


async def scrape_until(url: str, line: str, within: float, worker: SwitchboardProcess) -> str:
    """The worker's /metrics once it holds `line`."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=5) as http:
        while line not in (scraped := await _scrape(http, url)):
            assert worker.running, f"worker exited:\n{worker.log_tail()}"
            assert time.monotonic() < deadline, f"no {line} within {within:g}s:\n{worker.log_tail(60)}"
            await asyncio.sleep(0.5)
    return scraped


async def _scrape(http: httpx.AsyncClient, url: str) -> str:
    try:
        return (await http.get(url)).text
    except httpx.ConnectError:
        return ""  # the worker is still starting


@pytest.mark.integration
async def test_a_provider_refusing_credentials_alerts_the_on_call_robot_once_then_resolves(
    settings: Settings, redis: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCH_GATEWAY_SECRET", GATEWAY_SECRET)
    monkeypatch.setenv("WATCH_ONCALL_KEY", ONCALL_KEY)
    gateway_app = sms_gateway.create_app(GATEWAY_SECRET)
    robots_app = robots.create_app(wecom={ONCALL_KEY})
    gateway, robot_peer = gateway_app[sms_gateway.STATE], robots_app[robots.PEER]
    async with PeerServer(gateway_app) as gateway_server, PeerServer(robots_app) as robots_server:
        files = {"providers.yaml": PROVIDERS.format(gateway=gateway_server.url, robots=robots_server.url),
                 "rules.yaml": RULES, "alerts.yaml": ALERTS}
        for name, text in files.items():
            (tmp_path / name).write_text(textwrap.dedent(text))
        flow = settings.model_copy(update={
            "providers": tmp_path / "providers.yaml", "rules": tmp_path / "rules.yaml",
            "alerts": tmp_path / "alerts.yaml", "metrics_port": free_port(),
        })
        await UserDirectory(redis).upsert([User(user_id="s1", bindings={"sms": "+8613800138000"})])
        registry = AppRegistry(redis)
        await registry.register("portal", {"sms"})
        await registry.register("ops", {"robot"})
        # The gateway refuses our signature once (401: credentials), then accepts again.
        gateway.script.append("bad_signature")
        with SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker:
            await produce(flow, [login_code(1)])
            # The worker's own metrics tell the story as soon as the alert is emitted.
            scrape = f"http://127.0.0.1:{flow.metrics_port}/metrics"
            emitted = 'switchboard_alerts_total{rule="bad-credentials",state="firing"} 1.0'
            scraped = await scrape_until(scrape, emitted, ALERT_TIMEOUT, worker)
            calls = 'switchboard_provider_calls_total{channel="sms",provider="gateway",result="credentials"}'
            assert f"{calls} 1.0" in scraped
            assert "switchboard_provider_call_seconds_bucket" in scraped
            assert 'switchboard_waiting{queue="parked"}' in scraped
            assert 'switchboard_events_total{app="portal",lane=' in scraped

            def said(state: str) -> bool:
                return any(f"[{state}]" in alert for alert in alerts_received(robot_peer))

            await wait_for("firing alert", lambda: said("FIRING"), ALERT_TIMEOUT, worker)
            firing = alerts_received(robot_peer)[0]
            assert "bad-credentials" in firing and "gateway" in firing
            assert "refused our credentials" in firing and "Check the gateway's keys." in firing
            assert GATEWAY_SECRET not in firing

            # The code goes out once the breaker lets a probe through; the refusal leaves the window.
            await wait_for("resolved alert", lambda: said("RESOLVED"), RECOVERY_TIMEOUT, worker)
            await asyncio.sleep(3)  # a few more evaluations: still resolved, nothing more to say
            final = await scrape_until(scrape, "switchboard_sends_total", 5, worker)
            assert 'switchboard_sends_total{channel="sms",outcome="sent",provider="gateway"} 1.0' in final
            assert 'switchboard_provider_out{provider="gateway"} 0.0' in final
            assert 'switchboard_alerts_total{rule="bad-credentials",state="resolved"} 1.0' in final
            assert worker.stop() == 0, worker.log_tail()
    received = alerts_received(robot_peer)
    assert [("[FIRING]" in a, "[RESOLVED]" in a) for a in received] == [(True, False), (False, True)], \
        received  # once per incident: one firing, one resolved
    assert [m["to"] for m in gateway.received] == ["+8613800138000"]  # the code, once, after recovery
    assert await Incidents(redis).firing() == {}


@pytest.mark.integration
async def test_the_worker_and_the_analytics_service_serve_their_metrics(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(notices_rule("inbox"))
    flow = settings.model_copy(update={
        "rules": rules, "clickhouse": f"chdb://{tmp_path / 'clickhouse'}",
        "metrics_port": free_port(), "analytics_metrics_port": free_port(),
    })
    await UserDirectory(redis).upsert([User(user_id="xi", bindings={"inbox": "xi"})])
    await AppRegistry(redis).register("campus", {"inbox"})
    with (
        SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
        SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
    ):
        await produce(flow, [notice("n1", "xi"), notice("n1", "xi"), b"{not json"])
        await wait_caught_up(redis, 3, worker, service)
        lane = flow.topic("events")
        worker_metrics = await scrape_until(
            f"http://127.0.0.1:{flow.metrics_port}/metrics",
            'switchboard_consumer_lag{stage="ingest"', ALERT_TIMEOUT, worker,
        )
        analytics_metrics = await scrape_until(
            f"http://127.0.0.1:{flow.analytics_metrics_port}/metrics",
            'switchboard_consumer_lag{stage="analytics"', ALERT_TIMEOUT, service,
        )
    for line in (
        f'switchboard_events_total{{app="campus",lane="{lane}",outcome="accepted"}} 1.0',
        f'switchboard_events_total{{app="campus",lane="{lane}",outcome="duplicate"}} 1.0',
        f'switchboard_events_total{{app="",lane="{lane}",outcome="refused"}} 1.0',
        'switchboard_dead_letters_total{stage="ingest"} 1.0',
        'switchboard_flow_total{counter="deliveries"} 1.0',
        'switchboard_sends_total{channel="inbox",outcome="delivered",provider="switchboard-inbox"} 1.0',
        'switchboard_send_seconds_count{channel="inbox",provider="switchboard-inbox"} 1.0',
    ):
        assert line in worker_metrics, line
    rows = [line for line in analytics_metrics.splitlines()
            if line.startswith('switchboard_clickhouse_insert_rows_total{table="message_events"}')]
    assert rows and float(rows[0].split()[-1]) >= 3  # decided, delivered and the dead letter's row
    assert 'switchboard_clickhouse_insert_seconds_count{table="message_events"}' in analytics_metrics

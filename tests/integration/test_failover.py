"""Failover over real adapters and local peers: Aliyun first, Tencent second, Redis token buckets shared
by workers, `deliver` retrying around the chain and the send ledger keeping it to one send."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from channels.base import ChannelDeps, InvalidAddressError, RetryPolicy, SendResult, ThrottledError, deliver
from channels.failover import CircuitBreaker, ProviderChain, Route
from channels.providers import load_providers
from channels.templates import RenderedMessage
from localparts import free_port
from localparts.peers import aliyun_sms, tencent_sms
from localparts.peers.server import PeerServer
from records.topics import Dispatch, EventCore
from state.connection import open_redis
from state.idempotency import SendLedger
from state.rate_limit import TokenBucket

ALIYUN_KEY_ID, ALIYUN_SECRET = "LTAI5tFailoverKey01", "aliyun-secret-failover-Q7"
TENCENT_ID, TENCENT_KEY, TENCENT_APP = "AKIDfailover0001", "tencent-key-failover-K2", "1400000009"
NUMBER = "+8613800138000"
MESSAGE = RenderedMessage(
    template="login_code", channel="sms", text="您的登录验证码为 482913，5分钟内有效。",
    template_ids={"aliyun": "SMS_154950909", "tencent": "1110"}, params={"code": "482913"},
)


def dispatch(message_id: str = "m-1") -> Dispatch:
    return Dispatch(
        message_id=message_id, user_id="s2024001", channel="sms", address=NUMBER,
        event=EventCore(event_id="e-1", app="portal", type="login", template="login_code",
                        category="verification"),
        rule_id="default", rule_version="1",
    )


PROVIDERS = """
sms:
  - name: tencent-backup
    kind: tencent
    priority: 2
    rate: {per_second: 100, burst: 200}
    options:
      endpoint: ${TENCENT_URL}
      secret_id: ${TENCENT_ID}
      secret_key: ${TENCENT_KEY}
      sms_sdk_app_id: "${TENCENT_APP}"
      sign_name: 智慧校园
  - name: aliyun-main
    kind: aliyun
    priority: 1
    rate: {per_second: "${ALIYUN_RATE}", burst: 2}  # quoted: a bare ${ opens a mapping in {}
    cost_per_message: 0.5
    options:
      endpoint: ${ALIYUN_URL}/
      access_key_id: ${ALIYUN_KEY_ID}
      access_key_secret: ${ALIYUN_SECRET}
      sign_name: 智慧校园
      cost_per_segment: 0.045
"""


@dataclass
class Stage:
    aliyun: aliyun_sms.AliyunPeerState
    tencent: tencent_sms.TencentPeerState
    chain: ProviderChain
    redis: Redis
    urls: tuple[str, str]
    http: httpx.AsyncClient

    @property
    def aliyun_received(self) -> int:
        return len(self.aliyun.received)

    @property
    def tencent_received(self) -> int:
        return len(self.tencent.received)


async def build(tmp_path: Path, redis: Redis, http: httpx.AsyncClient, aliyun_url: str, tencent_url: str,
                *, aliyun_secret: str = ALIYUN_SECRET, aliyun_rate: float = 100.0,
                breaker: CircuitBreaker | None = None) -> ProviderChain:
    path = tmp_path / "providers.yaml"
    path.write_text(textwrap.dedent(PROVIDERS), encoding="utf-8")
    environ = {
        "ALIYUN_URL": aliyun_url, "ALIYUN_KEY_ID": ALIYUN_KEY_ID, "ALIYUN_SECRET": aliyun_secret,
        "ALIYUN_RATE": str(aliyun_rate), "TENCENT_URL": tencent_url, "TENCENT_ID": TENCENT_ID,
        "TENCENT_KEY": TENCENT_KEY, "TENCENT_APP": TENCENT_APP,
    }
    deps = ChannelDeps(http=http, redis=redis)
    routes = [Route(s.name, s.build(deps), s.priority, s.rate, s.cost_per_message)
              for s in load_providers(path, environ)]
    return ProviderChain("sms", routes, TokenBucket(redis), breaker=breaker or CircuitBreaker(threshold=2))


@pytest.fixture
async def stage(tmp_path: Path, redis: Redis) -> AsyncIterator[Stage]:
    aliyun = aliyun_sms.create_app(ALIYUN_KEY_ID, ALIYUN_SECRET)
    tencent = tencent_sms.create_app(TENCENT_ID, TENCENT_KEY, TENCENT_APP)
    async with PeerServer(aliyun) as a, PeerServer(tencent) as t, httpx.AsyncClient() as http:
        chain = await build(tmp_path, redis, http, a.url, t.url)
        yield Stage(aliyun[aliyun_sms.STATE], tencent[tencent_sms.STATE], chain, redis, (a.url, t.url), http)


CASES = [
    # id, Aliyun's scripted answers, Tencent's, provider expected (or error), sends each peer accepted
    ("aliyun carries", [], [], "aliyun-main", (1, 0)),
    ("aliyun throttled", ["isv.BUSINESS_LIMIT_CONTROL"], [], "tencent-backup", (0, 1)),
    ("aliyun day quota", ["isv.DAY_LIMIT_CONTROL"], [], "tencent-backup", (0, 1)),
    ("aliyun out of money", ["isv.AMOUNT_NOT_ENOUGH"], [], "tencent-backup", (0, 1)),
    ("aliyun 503", ["ServiceUnavailable"], [], "tencent-backup", (0, 1)),
    ("aliyun key unknown", ["InvalidAccessKeyId.NotFound"], [], "tencent-backup", (0, 1)),
    ("invalid number stops", ["isv.MOBILE_NUMBER_ILLEGAL"], [], InvalidAddressError, (0, 0)),
    ("both throttled", ["isv.BUSINESS_LIMIT_CONTROL"], ["LimitExceeded.PhoneNumberDailyLimit"],
     ThrottledError, (0, 0)),
]


@pytest.mark.parametrize(("aliyun_script", "tencent_script", "expected", "received"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
async def test_failover_against_the_peers(stage: Stage, aliyun_script: list[str], tencent_script: list[str],
                                          expected: object, received: tuple[int, int]) -> None:
    stage.aliyun.script.extend(aliyun_script)
    stage.tencent.script.extend(tencent_script)
    if isinstance(expected, str):
        result = await stage.chain.send(MESSAGE, NUMBER, dispatch())
        assert isinstance(result, SendResult)
        assert result.provider == expected
        assert result.provider_message_id
        # Aliyun prices by segment; Tencent reports no cost here, so the configured price or 0 applies.
        assert result.cost == (0.045 if expected == "aliyun-main" else 0.0)
    else:
        assert isinstance(expected, type)
        with pytest.raises(expected):
            await stage.chain.send(MESSAGE, NUMBER, dispatch())
    assert (stage.aliyun_received, stage.tencent_received) == received


async def test_a_wrong_secret_alerts_and_fails_over(tmp_path: Path, redis: Redis,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    wrong = "aliyun-wrong-secret-XY"
    aliyun = aliyun_sms.create_app(ALIYUN_KEY_ID, ALIYUN_SECRET)
    tencent = tencent_sms.create_app(TENCENT_ID, TENCENT_KEY, TENCENT_APP)
    async with PeerServer(aliyun) as a, PeerServer(tencent) as t, httpx.AsyncClient() as http:
        chain = await build(tmp_path, redis, http, a.url, t.url, aliyun_secret=wrong)
        with caplog.at_level(logging.INFO):
            first = await chain.send(MESSAGE, NUMBER, dispatch("m-1"))
            second = await chain.send(MESSAGE, NUMBER, dispatch("m-2"))
    assert (first.provider, second.provider) == ("tencent-backup", "tencent-backup")
    assert len(aliyun[aliyun_sms.STATE].received) == 0 and len(tencent[tencent_sms.STATE].received) == 2
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "ALERT: provider aliyun-main (aliyun) refused our credentials" in logged
    assert logged.count("ALERT") == 1  # the breaker opened at once: no second try with a bad key
    assert wrong not in logged and ALIYUN_SECRET not in logged and TENCENT_KEY not in logged
    assert wrong not in repr(chain) and wrong not in repr(chain.routes)


async def test_a_provider_that_is_down_is_passed_over(tmp_path: Path, redis: Redis) -> None:
    tencent = tencent_sms.create_app(TENCENT_ID, TENCENT_KEY, TENCENT_APP)
    breaker = CircuitBreaker(threshold=2, cool_down=60.0)
    async with PeerServer(tencent) as t, httpx.AsyncClient() as http:
        chain = await build(tmp_path, redis, http, f"http://127.0.0.1:{free_port()}", t.url, breaker=breaker)
        results = [await chain.send(MESSAGE, NUMBER, dispatch(f"m-{i}")) for i in range(4)]
    assert {r.provider for r in results} == {"tencent-backup"}
    assert len(tencent[tencent_sms.STATE].received) == 4
    assert breaker.closed_in("aliyun-main") > 0  # skipped after two refused connections


async def test_the_rate_limit_is_shared_by_two_workers(stage: Stage, tmp_path: Path, redis_url: str) -> None:
    """Two workers on one Redis: Aliyun's burst of 2 (then 1 per 100 s) is spent once, then Tencent."""
    other = open_redis(redis_url)
    try:
        workers = [
            await build(tmp_path, redis, stage.http, *stage.urls, aliyun_rate=0.01)
            for redis in (stage.redis, other)
        ]
        carried = [(await workers[i % 2].send(MESSAGE, NUMBER, dispatch(f"m-{i}"))).provider
                   for i in range(6)]
    finally:
        await other.aclose()
    assert carried == ["aliyun-main"] * 2 + ["tencent-backup"] * 4
    assert (stage.aliyun_received, stage.tencent_received) == (2, 4)


async def test_deliver_and_the_ledger_send_once(stage: Stage) -> None:
    ledger = SendLedger(stage.redis, ttl_seconds=3600)
    stage.aliyun.script.append("isv.BUSINESS_LIMIT_CONTROL")
    stage.tencent.script.append("RequestLimitExceeded")  # both throttled on the first attempt
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    for _ in range(2):  # a redelivered dispatch finds the claim and does not send again
        if not await ledger.claim("m-9", "sms", 0):
            continue
        outcome = await deliver(stage.chain, MESSAGE, NUMBER, dispatch("m-9"),
                                RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=120.0), sleep=sleep)
        await ledger.mark_done("m-9", "sms", 0, outcome.status)
    assert outcome.status == "sent" and outcome.attempts == 2
    assert len(sleeps) == 1
    assert stage.aliyun_received + stage.tencent_received == 1

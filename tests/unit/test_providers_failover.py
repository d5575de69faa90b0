"""ProviderChain: failover by priority, rate-limit tokens, circuit breaker, cost and provider naming."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from channels.base import (
    CallbackRejected,
    CallbackRequest,
    Channel,
    CredentialsError,
    InvalidAddressError,
    PermanentSendError,
    RetryableSendError,
    RetryPolicy,
    SendResult,
    ThrottledError,
    deliver,
)
from channels.failover import CircuitBreaker, ProviderChain, Rate, Route
from channels.templates import RenderedMessage
from records.topics import Dispatch, EventCore

MESSAGE = RenderedMessage(template="verification_code", channel="sms", text="code 1234")
DISPATCH = Dispatch(
    message_id="m1", user_id="u1", channel="sms", address="+8613800138000",
    event=EventCore(event_id="e1", app="portal", type="login", template="verification_code",
                    category="verification"),
    rule_id="r1", rule_version="1",
)
OK = SendResult(status="sent", provider_message_id="pm-1")


class FakeSms(Channel):
    """Answers from its script, one entry per call; the last entry repeats."""

    channel = "sms"
    provider = "fake"

    def __init__(self, *script: BaseException | SendResult, prefix: str = "+") -> None:
        self.script = list(script) or [OK]
        self.calls = 0
        self.prefix = prefix
        self.secret = "hunter2-secret"

    def accepts(self, address: str) -> bool:
        return address.startswith(self.prefix)

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(step, BaseException):
            raise step
        return step


class FakeBucket:
    """A limiter answering from a script of waits per provider name (0.0 = granted)."""

    def __init__(self, waits: dict[str, list[float]] | None = None) -> None:
        self.waits = waits or {}
        self.asked: list[str] = []

    async def acquire(self, key: str, rate: float, burst: float, tokens: float = 1) -> float:
        self.asked.append(key)
        script = self.waits.get(key, [])
        return script.pop(0) if script else 0.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def chain(adapters: dict[str, FakeSms], bucket: FakeBucket | None = None,
          breaker: CircuitBreaker | None = None, sleep: Sleeps | None = None,
          costs: dict[str, float] | None = None) -> ProviderChain:
    routes = [
        Route(name, adapter, priority=index, rate=Rate(10, 10), cost_per_message=(costs or {}).get(name))
        for index, (name, adapter) in enumerate(adapters.items())
    ]
    return ProviderChain("sms", list(reversed(routes)), bucket or FakeBucket(),
                         breaker=breaker or CircuitBreaker(clock=Clock()), sleep=sleep or Sleeps())


def throttled(wait: float = 5.0) -> ThrottledError:
    return ThrottledError("isv.BUSINESS_LIMIT_CONTROL", retry_after=wait)


Answers = Iterable[BaseException | SendResult]
CASES: list[tuple[str, Answers, Answers, object, int]] = [
    # id, first provider's answers, second's, expected (provider name or error type), second's calls
    ("first carries", [OK], [OK], "main", 0),
    ("throttled moves on", [throttled()], [OK], "backup", 1),
    ("credentials move on", [CredentialsError("InvalidAccessKeyId.NotFound")], [OK], "backup", 1),
    ("retryable moves on", [RetryableSendError("HTTP 503")], [OK], "backup", 1),
    ("timeout moves on", [TimeoutError()], [OK], "backup", 1),
    ("adapter bug moves on", [KeyError("oops")], [OK], "backup", 1),
    ("invalid number stops", [InvalidAddressError("isv.MOBILE_NUMBER_ILLEGAL")], [OK],
     InvalidAddressError, 0),
    ("permanent stops", [PermanentSendError("isv.SMS_TEMPLATE_ILLEGAL")], [OK], PermanentSendError, 0),
    ("both throttled", [throttled(7.0)], [throttled(3.0)], ThrottledError, 1),
    ("both retryable", [RetryableSendError("503")], [RetryableSendError("timeout")], RetryableSendError, 1),
    ("throttled then down", [throttled(3.0)], [RetryableSendError("503")], RetryableSendError, 1),
    ("both buggy", [KeyError("a")], [ValueError("b")], PermanentSendError, 1),
]


@pytest.mark.parametrize(("first", "second", "expected", "second_calls"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
async def test_failover_table(first: Answers, second: Answers, expected: object, second_calls: int) -> None:
    main, backup = FakeSms(*first), FakeSms(*second)
    sms = chain({"main": main, "backup": backup})
    if isinstance(expected, str):
        result = await sms.send(MESSAGE, DISPATCH.address, DISPATCH)
        assert isinstance(result, SendResult)
        assert result.provider == expected
    else:
        assert isinstance(expected, type)
        with pytest.raises(expected) as caught:
            await sms.send(MESSAGE, DISPATCH.address, DISPATCH)
        assert type(caught.value) is expected  # the exact class decides retry vs give up
        assert "main:" in str(caught.value)  # the reason names the provider that refused
    assert main.calls == 1
    assert backup.calls == second_calls


async def test_all_throttled_waits_for_the_shortest() -> None:
    sms = chain({"main": FakeSms(throttled(7.0)), "backup": FakeSms(throttled(3.0))})
    with pytest.raises(ThrottledError) as caught:
        await sms.send(MESSAGE, DISPATCH.address, DISPATCH)
    assert caught.value.retry_after == 3.0


async def test_rate_limit_waits_briefly_then_sends() -> None:
    bucket, sleeps = FakeBucket({"main": [0.1, 0.0]}), Sleeps()
    main, backup = FakeSms(), FakeSms()
    result = await chain({"main": main, "backup": backup}, bucket=bucket, sleep=sleeps).send(
        MESSAGE, DISPATCH.address, DISPATCH)
    assert result.provider == "main"
    assert sleeps.delays == [0.1]
    assert (main.calls, backup.calls) == (1, 0)


async def test_rate_limit_over_the_short_wait_is_throttled_and_moves_on() -> None:
    bucket, sleeps = FakeBucket({"main": [2.0]}), Sleeps()
    main, backup = FakeSms(), FakeSms()
    result = await chain({"main": main, "backup": backup}, bucket=bucket, sleep=sleeps).send(
        MESSAGE, DISPATCH.address, DISPATCH)
    assert result.provider == "backup"
    assert sleeps.delays == []
    assert main.calls == 0  # no token, no call: the provider's quota is respected


async def test_every_provider_over_its_rate_is_throttled_with_the_shortest_wait() -> None:
    bucket = FakeBucket({"main": [2.0], "backup": [0.5]})
    with pytest.raises(ThrottledError) as caught:
        await chain({"main": FakeSms(), "backup": FakeSms()}, bucket=bucket).send(
            MESSAGE, DISPATCH.address, DISPATCH)
    assert caught.value.retry_after == 0.5


async def test_providers_that_do_not_accept_the_address_are_skipped() -> None:
    apns, fcm = FakeSms(prefix="apns:"), FakeSms(prefix="fcm:")
    push = chain({"apns": apns, "fcm": fcm})
    result = await push.send(MESSAGE, "fcm:token-1", DISPATCH)
    assert result.provider == "fcm"
    assert apns.calls == 0
    assert push.accepts("apns:t") and not push.accepts("jpush:t")
    with pytest.raises(InvalidAddressError, match="no sms provider"):
        await push.send(MESSAGE, "jpush:t", DISPATCH)


@pytest.mark.parametrize(("adapter_cost", "configured", "recorded"),
                         [(0.0, 0.045, 0.045), (0.09, 0.045, 0.09), (0.0, None, 0.0)])
async def test_cost_is_the_adapters_else_the_configured_one(
    adapter_cost: float, configured: float | None, recorded: float
) -> None:
    adapter = FakeSms(SendResult(status="sent", provider_message_id="x", cost=adapter_cost))
    costs = {"main": configured} if configured is not None else {}
    result = await chain({"main": adapter}, costs=costs).send(MESSAGE, DISPATCH.address, DISPATCH)
    assert result.cost == recorded


async def test_breaker_skips_a_failing_provider_then_probes_after_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cool_down=30.0, clock=clock)
    main, backup = FakeSms(RetryableSendError("503")), FakeSms()
    sms = chain({"main": main, "backup": backup}, breaker=breaker)
    for _ in range(5):
        assert (await sms.send(MESSAGE, DISPATCH.address, DISPATCH)).provider == "backup"
    assert main.calls == 3  # opened after three failures in a row, skipped since
    clock.now += 31
    main.script = [OK]
    assert (await sms.send(MESSAGE, DISPATCH.address, DISPATCH)).provider == "main"
    assert main.calls == 4
    assert breaker.closed_in("main") == 0.0


async def test_failed_probe_reopens_at_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, cool_down=10.0, clock=clock)
    main = FakeSms(RetryableSendError("503"))
    sms = chain({"main": main, "backup": FakeSms()}, breaker=breaker)
    for _ in range(3):
        await sms.send(MESSAGE, DISPATCH.address, DISPATCH)
    clock.now += 11
    await sms.send(MESSAGE, DISPATCH.address, DISPATCH)  # the probe fails
    await sms.send(MESSAGE, DISPATCH.address, DISPATCH)
    assert main.calls == 3
    assert breaker.closed_in("main") == pytest.approx(10.0)


async def test_only_provider_failing_gives_retry_after_of_its_cool_down() -> None:
    clock = Clock()
    sms = chain({"main": FakeSms(RetryableSendError("503"))},
                breaker=CircuitBreaker(threshold=1, cool_down=20.0, clock=clock))
    with pytest.raises(RetryableSendError):
        await sms.send(MESSAGE, DISPATCH.address, DISPATCH)
    with pytest.raises(RetryableSendError, match="skipped after repeated failures") as caught:
        await sms.send(MESSAGE, DISPATCH.address, DISPATCH)
    assert caught.value.retry_after == pytest.approx(20.0)


async def test_credentials_refused_alerts_and_opens_at_once(caplog: pytest.LogCaptureFixture) -> None:
    main, backup = FakeSms(CredentialsError("SignatureDoesNotMatch")), FakeSms()
    sms = chain({"main": main, "backup": backup})
    with caplog.at_level(logging.ERROR, logger="channels.failover"):
        await sms.send(MESSAGE, DISPATCH.address, DISPATCH)
        await sms.send(MESSAGE, DISPATCH.address, DISPATCH)
    assert main.calls == 1
    alerts = [r.getMessage() for r in caplog.records if "ALERT" in r.getMessage()]
    assert alerts == ["ALERT: provider main (fake) refused our credentials: SignatureDoesNotMatch"]
    assert all("hunter2" not in r.getMessage() for r in caplog.records)


async def test_a_throttled_probe_does_not_wedge_the_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cool_down=10.0, clock=clock)
    main = FakeSms(RetryableSendError("503"), OK)
    bucket = FakeBucket({"main": [0.0, 5.0, 0.0]})
    sms = chain({"main": main, "backup": FakeSms()}, bucket=bucket, breaker=breaker)
    await sms.send(MESSAGE, DISPATCH.address, DISPATCH)  # fails: open
    clock.now += 11
    assert (await sms.send(MESSAGE, DISPATCH.address, DISPATCH)).provider == "backup"  # probe, no token
    assert (await sms.send(MESSAGE, DISPATCH.address, DISPATCH)).provider == "main"  # probe again


async def test_deliver_retries_around_the_chain() -> None:
    main = FakeSms(RetryableSendError("503"), RetryableSendError("503"), OK)
    sms = chain({"main": main}, breaker=CircuitBreaker(threshold=10, clock=Clock()))
    sleeps = Sleeps()
    outcome = await deliver(sms, MESSAGE, DISPATCH.address, DISPATCH, RetryPolicy(max_attempts=4),
                            sleep=sleeps)
    assert outcome.status == "sent"
    assert outcome.provider == "main"  # the configured provider, not the chain, is recorded
    assert outcome.attempts == 3
    assert len(sleeps.delays) == 2


def test_provider_named_and_callbacks() -> None:
    main, backup = FakeSms(), FakeSms()
    sms = chain({"main": main, "backup": backup})
    assert sms.provider_named("backup") is backup
    assert [route.name for route in sms.routes] == ["main", "backup"]
    with pytest.raises(LookupError, match=r"no provider named 'tencent'.*known: main, backup"):
        sms.provider_named("tencent")
    with pytest.raises(CallbackRejected):
        sms.parse_callback(CallbackRequest("POST", "/", {}, {}, b"[]"))
    assert "hunter2" not in repr(sms)
    assert sms.channel == "sms"


@pytest.mark.parametrize(("routes", "message"), [
    ([], "at least one provider"),
    ([Route("a", FakeSms()), Route("a", FakeSms())], "names repeat"),
])
def test_chain_refuses_bad_routes(routes: list[Route], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProviderChain("sms", routes, FakeBucket())


def test_chain_refuses_a_provider_of_another_channel() -> None:
    with pytest.raises(ValueError, match="'a' is a sms provider, not push"):
        ProviderChain("push", [Route("a", FakeSms())], FakeBucket())


async def test_a_throttled_answer_counts_as_alive() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, cool_down=10.0, clock=clock)
    main = FakeSms(RetryableSendError("503"), throttled(1.0), RetryableSendError("503"), OK)
    sms = chain({"main": main, "backup": FakeSms()}, breaker=breaker)
    for _ in range(3):  # failed, throttled, failed: never two failures in a row, so never open
        assert (await sms.send(MESSAGE, DISPATCH.address, DISPATCH)).provider == "backup"
    assert (await sms.send(MESSAGE, DISPATCH.address, DISPATCH)).provider == "main"
    assert main.calls == 4


async def test_a_lost_probe_lapses_after_the_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cool_down=10.0, clock=clock)
    breaker.failed("main")
    clock.now += 11
    assert breaker.closed_in("main") == 0.0  # this caller takes the probe, then is cancelled
    assert breaker.closed_in("main") == pytest.approx(10.0)  # others wait for the probe
    clock.now += 10.5
    assert breaker.closed_in("main") == 0.0  # the lost probe lapsed: a new one may go


async def test_no_send_without_the_shared_rate_limiter() -> None:
    class DownBucket:
        async def acquire(self, key: str, rate: float, burst: float, tokens: float = 1) -> float:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:16379")

    main = FakeSms()
    sms = ProviderChain("sms", [Route("main", main, rate=Rate(10, 10))], DownBucket())
    with pytest.raises(RetryableSendError, match="rate limiter unavailable: ConnectionError"):
        await sms.send(MESSAGE, DISPATCH.address, DISPATCH)
    assert main.calls == 0

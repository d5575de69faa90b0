"""The shared channel base: deliver's retries, backoff and classification, and masked secrets."""

from __future__ import annotations

import random
from collections.abc import Iterable

import httpx
import pytest
from pydantic import SecretStr

from channels.base import (
    Channel,
    DeliveryOutcome,
    PermanentSendError,
    RetryableSendError,
    RetryPolicy,
    SendResult,
    deliver,
)
from channels.email_smtp import SmtpEmail
from channels.links import LinkSigner
from channels.templates import RenderedMessage
from channels.webhook import Webhook
from records.topics import Dispatch, EventCore

MESSAGE = RenderedMessage(template="campus_notice", channel="email", subject="s", text="t")
DISPATCH = Dispatch(
    message_id="m1", user_id="u1", channel="email", address="u1@uni.example.edu",
    event=EventCore(event_id="e1", app="portal", type="notice", template="campus_notice", category="notice"),
    rule_id="r1", rule_version="1",
)
POLICY = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=30.0)


class Scripted(Channel):
    """A channel that fails or succeeds as its script says, one entry per attempt."""

    channel = "email"
    provider = "scripted"

    def __init__(self, script: Iterable[BaseException | SendResult]) -> None:
        self._script = list(script)
        self.calls = 0

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        step = self._script[self.calls]
        self.calls += 1
        if isinstance(step, BaseException):
            raise step
        return step


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def run(channel: Scripted, policy: RetryPolicy = POLICY) -> tuple[DeliveryOutcome, list[float]]:
    sleeps = Sleeps()
    outcome = await deliver(channel, MESSAGE, "u1@uni.example.edu", DISPATCH, policy,
                            sleep=sleeps, rng=random.Random(7))
    return outcome, sleeps.delays


SENT = SendResult(status="sent", provider_message_id="<m1.0@uni>", cost=0.01)


async def test_success_first_time_does_not_sleep() -> None:
    outcome, delays = await run(Scripted([SENT]))
    assert outcome == DeliveryOutcome("sent", 1, "scripted", cost=0.01, provider_message_id="<m1.0@uni>")
    assert outcome.ok
    assert delays == []


async def test_the_provider_a_channel_chose_is_the_one_recorded() -> None:
    # A failover chain names the configured provider that carried the message; callbacks look it up.
    chosen = SendResult(status="sent", provider_message_id="biz-1", provider="aliyun-main")
    outcome, _ = await run(Scripted([chosen]))
    assert (outcome.provider, outcome.provider_message_id) == ("aliyun-main", "biz-1")


async def test_retryable_errors_are_retried_then_succeed() -> None:
    channel = Scripted([RetryableSendError("timeout"), TimeoutError(), ConnectionResetError(), SENT])
    outcome, delays = await run(channel)
    assert (outcome.status, outcome.attempts, channel.calls) == ("sent", 4, 4)
    assert len(delays) == 3


async def test_permanent_error_is_not_retried() -> None:
    channel = Scripted([RetryableSendError("busy"), PermanentSendError("550 no such user")])
    outcome, delays = await run(channel)
    assert outcome == DeliveryOutcome("failed", 2, "scripted", reason="550 no such user")
    assert not outcome.retryable
    assert len(delays) == 1


async def test_gives_up_after_max_attempts_as_retryable() -> None:
    channel = Scripted([RetryableSendError(f"503 try {n}") for n in range(4)])
    outcome, delays = await run(channel)
    assert channel.calls == 4
    assert outcome.status == "failed" and outcome.retryable
    assert outcome.reason == "gave up after 4 attempt(s): 503 try 3"
    assert len(delays) == 3


async def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=1.0, max_delay=5.0)
    channel = Scripted([RetryableSendError("x")] * 6)
    _, delays = await run(channel, policy)
    caps = [1.0, 2.0, 4.0, 5.0, 5.0]
    assert len(delays) == 5
    assert all(0.0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) == 5  # jittered, not a fixed ladder


async def test_retry_after_is_honoured_as_a_minimum_wait() -> None:
    channel = Scripted([RetryableSendError("429", retry_after=20.0), SENT])
    outcome, delays = await run(channel)
    assert outcome.status == "sent"
    assert delays == [20.0]


async def test_retry_after_beyond_the_policy_hands_the_message_back() -> None:
    channel = Scripted([RetryableSendError("429 slow down", retry_after=3600.0), SENT])
    outcome, delays = await run(channel)
    assert channel.calls == 1 and delays == []
    assert outcome.status == "failed" and outcome.retryable
    assert "retry after 3600s" in outcome.reason


async def test_an_adapter_bug_fails_the_message_without_retry() -> None:
    channel = Scripted([KeyError("oops"), SENT])
    outcome, _ = await run(channel)
    assert channel.calls == 1
    assert outcome.status == "failed" and not outcome.retryable
    assert outcome.reason == "unexpected KeyError: 'oops'"


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(base_delay=-1)


def test_adapters_never_print_their_secrets() -> None:
    smtp = SmtpEmail("127.0.0.1", 2525, "Uni <noreply@uni.example.edu>", username="relay",
                     password=SecretStr("hunter2-smtp"),
                     links=LinkSigner(SecretStr("unit-test-link-secret-0123456789"), "https://n.example"))
    hook = Webhook(httpx.AsyncClient(), secret=SecretStr("hunter2-hook"), allow=["127.0.0.1/32"])
    for adapter in (smtp, hook):
        assert "hunter2" not in repr(adapter)
        assert "hunter2" not in str(adapter)
        assert "hunter2" not in str(vars(adapter))
    assert "**********" in repr(smtp)

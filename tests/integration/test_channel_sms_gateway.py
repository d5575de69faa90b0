"""HttpSmsGateway against the local gateway peer, which checks the HMAC signature of every request."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis

from channels.base import (
    CallbackRejected,
    CallbackRequest,
    ChannelDeps,
    CredentialsError,
    InvalidAddressError,
    PermanentSendError,
    ProviderReceipt,
    RetryableSendError,
    SendError,
    SendResult,
    ThrottledError,
)
from channels.sms_gateway import HttpSmsGateway, HttpSmsGatewayOptions
from channels.templates import RenderedMessage
from localparts import free_port
from localparts.peers.server import PeerServer
from localparts.peers.sms_gateway import STATE, GatewayPeerState, create_app, signed_report
from records.topics import Dispatch, EventCore

SECRET = "gateway-shared-secret-9Kp"
NUMBER = "+447700900123"
MESSAGE = RenderedMessage(template="login_code", channel="sms", text="Your Campus login code is 482913.")
DISPATCH = Dispatch(
    message_id="m-7c1e", user_id="s2024001", channel="sms", address=NUMBER,
    event=EventCore(
        event_id="e-1", app="portal", type="login", template="login_code", category="verification"
    ),
    rule_id="default", rule_version="1",
)


def options(url: str, **overrides: Any) -> HttpSmsGatewayOptions:
    return HttpSmsGatewayOptions(**{
        "url": url, "secret": SecretStr(SECRET), "sender": "CAMPUS", "cost_per_segment": 0.03, **overrides,
    })


class Tampering(httpx.AsyncHTTPTransport):
    """Changes one byte of every request body after it was signed, as a meddling proxy would."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read().replace(b"482913", b"482914", 1)
        tampered = httpx.Request(request.method, request.url, headers=request.headers, content=body)
        return await super().handle_async_request(tampered)


@dataclass
class Peer:
    app: web.Application
    url: str
    http: httpx.AsyncClient
    deps: ChannelDeps

    @property
    def state(self) -> GatewayPeerState:
        return self.app[STATE]

    def channel(
        self, clock_offset: float = 0.0, http: httpx.AsyncClient | None = None, **overrides: Any
    ) -> HttpSmsGateway:
        configured = options(self.url + "/sms", **overrides)
        if http is None and clock_offset == 0.0:
            channel = HttpSmsGateway.from_options(configured, self.deps)
            assert isinstance(channel, HttpSmsGateway)
            return channel
        return HttpSmsGateway(configured, http or self.http, clock=lambda: time.time() + clock_offset)


@pytest.fixture
async def peer(redis: Redis) -> AsyncIterator[Peer]:
    app = create_app(SECRET)
    async with PeerServer(app) as server, httpx.AsyncClient() as http:
        yield Peer(app, server.url, http, ChannelDeps(http=http, redis=redis))


@dataclass(frozen=True)
class Case:
    name: str
    error: type[SendError] | None = None
    match: str = ""
    script: tuple[str, ...] = ()
    address: str = NUMBER
    overrides: dict[str, Any] = field(default_factory=dict)
    clock_offset: float = 0.0
    retry_after: float | None = None
    message: RenderedMessage = MESSAGE


CASES = [
    Case("sent"),
    Case("mainland number", address="+8613800138000"),
    Case("number refused", InvalidAddressError, "HTTP 400 invalid_number", script=("invalid_number",)),
    Case("recipient opted out", InvalidAddressError, "blocked_recipient", script=("blocked_recipient",)),
    Case("not E.164", InvalidAddressError, "not an E.164", address="07700900123"),
    Case("content refused", PermanentSendError, "HTTP 400 content_rejected: the text was refused",
         script=("content_rejected",)),
    Case("empty text", PermanentSendError, "rendered no SMS text",
         message=MESSAGE.model_copy(update={"text": ""})),
    Case("rate limited", ThrottledError, "HTTP 429 throttled", script=("throttled",), retry_after=7.0),
    Case("carrier down", RetryableSendError, "HTTP 503 unavailable", script=("unavailable",),
         retry_after=2.0),
    Case("wrong secret", CredentialsError, "HTTP 401 bad_signature",
         overrides={"secret": SecretStr("gateway-shared-secret-9KP")}),
    Case("clock 10 minutes off", CredentialsError, "HTTP 401 stale_timestamp", clock_offset=-600),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
async def test_send(peer: Peer, case: Case, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    peer.state.script.extend(case.script)
    channel = peer.channel(case.clock_offset, **case.overrides)
    if case.error is None:
        result = await channel.send(case.message, case.address, DISPATCH)
        sent = peer.state.received[-1]
        assert result == SendResult(status="sent", provider_message_id=sent["id"], cost=0.03)
        assert {k: sent[k] for k in ("to", "text", "sender", "reference")} == {
            "to": case.address, "text": MESSAGE.text, "sender": "CAMPUS", "reference": "m-7c1e",
        }
        return
    with pytest.raises(SendError) as raised:
        await channel.send(case.message, case.address, DISPATCH)
    assert type(raised.value) is case.error
    assert case.match in str(raised.value)
    if isinstance(raised.value, RetryableSendError):
        assert raised.value.retry_after == case.retry_after
    assert not peer.state.received
    for text in (str(raised.value), caplog.text, repr(channel), repr(channel._options)):
        assert SECRET not in text


async def test_a_repeated_send_carries_the_same_idempotency_key_and_reaches_the_phone_once(
    peer: Peer,
) -> None:
    channel = peer.channel()
    first = await channel.send(MESSAGE, NUMBER, DISPATCH)
    again = await channel.send(MESSAGE, NUMBER, DISPATCH)  # e.g. its answer was lost, then redelivered
    fallback = await channel.send(MESSAGE, NUMBER, DISPATCH.model_copy(update={"step": 1}))
    assert first.provider_message_id == again.provider_message_id != fallback.provider_message_id
    assert [m["reference"] for m in peer.state.received] == ["m-7c1e", "m-7c1e"]
    assert list(peer.state.answered) == ['"m-7c1e.0"', '"m-7c1e.1"']
    assert peer.state.repeats == 1


async def test_a_body_changed_after_signing_is_refused(peer: Peer) -> None:
    async with httpx.AsyncClient(transport=Tampering()) as meddled:
        with pytest.raises(CredentialsError, match="bad_signature"):
            await peer.channel(http=meddled).send(MESSAGE, NUMBER, DISPATCH)
    assert not peer.state.received


@pytest.mark.parametrize(
    ("text", "reported", "cost"),
    [
        ("a" * 161, None, 0.06),  # two GSM-7 segments, counted by the adapter
        ("验证码" * 30, None, 0.06),  # 90 UCS-2 characters: two segments
        ("short", 3, 0.09),  # the gateway's own count wins when it reports one
    ],
)
async def test_cost_is_segments_times_the_price(
    peer: Peer, text: str, reported: int | None, cost: float
) -> None:
    peer.state.segments = reported
    result = await peer.channel().send(MESSAGE.model_copy(update={"text": text}), NUMBER, DISPATCH)
    assert result.cost == pytest.approx(cost)


async def test_connection_refused_is_retryable() -> None:
    async with httpx.AsyncClient() as http:
        channel = HttpSmsGateway(options(f"http://127.0.0.1:{free_port()}/sms"), http)
        with pytest.raises(RetryableSendError, match="http-sms connection failed") as raised:
            await channel.send(MESSAGE, NUMBER, DISPATCH)
    assert type(raised.value) is RetryableSendError


@pytest.mark.parametrize(
    ("values", "named"),
    [({"secret": ""}, "secret"), ({"url": "gateway.example/sms"}, "url"), ({"timeout": 0}, "timeout")],
)
def test_bad_options_name_the_field(values: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError) as raised:
        HttpSmsGatewayOptions(**{"url": "https://gateway.example/sms", "secret": SECRET, **values})
    assert named in str(raised.value)


def request(headers: dict[str, str], body: bytes) -> CallbackRequest:
    return CallbackRequest("POST", "/v1/callbacks/sms/http-sms", {}, headers, body)


async def test_signed_reports_become_receipts(peer: Peer) -> None:
    channel = peer.channel()
    first = await channel.send(MESSAGE, NUMBER, DISPATCH)
    second = await channel.send(MESSAGE, "+8613800138000", DISPATCH)
    headers, body = signed_report(SECRET, [
        {"id": first.provider_message_id, "status": "delivered", "to": NUMBER},
        {"id": second.provider_message_id, "status": "failed", "reason": "absent subscriber",
         "to": "+8613800138000"},
    ])
    reply = channel.parse_callback(request(headers, body))
    assert reply.receipts == (
        ProviderReceipt(first.provider_message_id, "delivered", "", NUMBER),
        ProviderReceipt(second.provider_message_id, "failed", "absent subscriber", "+8613800138000"),
    )


def forged(kind: str) -> tuple[dict[str, str], bytes]:
    entries = [{"id": "gw-1", "status": "delivered"}]
    headers, body = signed_report(SECRET, entries)
    if kind == "tampered":
        return headers, body.replace(b"delivered", b"failed\x20\x20\x20")
    if kind == "other secret":
        return signed_report("not-the-secret", entries)
    if kind == "unsigned":
        return {"x-sms-timestamp": headers["x-sms-timestamp"]}, body
    if kind == "old":
        return signed_report(SECRET, entries, timestamp=time.time() - 3600)
    if kind == "no timestamp":
        return {"x-sms-signature": headers["x-sms-signature"]}, body
    if kind == "not an array":
        return signed_report(SECRET, entries[0])  # type: ignore[arg-type]
    return signed_report(SECRET, [{"id": "gw-1", "status": "read"}])


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("tampered", "does not match its body"),
        ("other secret", "does not match its body"),
        ("unsigned", "does not match its body"),
        ("old", r"timestamp is 360\ds off, over 300s"),
        ("no timestamp", "no valid X-Sms-Timestamp"),
        ("not an array", "must be a JSON array"),
        ("unknown status", "entry 0: status"),
    ],
)
def test_forged_or_malformed_reports_are_refused(peer: Peer, kind: str, match: str) -> None:
    headers, body = forged(kind)
    with pytest.raises(CallbackRejected, match=match) as raised:
        peer.channel().parse_callback(request(headers, body))
    assert SECRET not in str(raised.value)
    assert json.loads(body) is not None

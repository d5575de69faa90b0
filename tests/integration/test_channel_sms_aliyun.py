"""AliyunSms against a local SendSms peer that verifies the RPC signature and answers as Aliyun does."""

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
    ProviderOptions,
    ProviderReceipt,
    RetryableSendError,
    SendError,
    SendResult,
    ThrottledError,
)
from channels.sms_aliyun import AliyunSms, AliyunSmsOptions, aliyun_number, rpc_signature
from channels.templates import RenderedMessage
from localparts import free_port
from localparts.peers.aliyun_sms import STATE, AliyunPeerState, create_app, report_for
from localparts.peers.server import PeerServer
from records.topics import Dispatch, EventCore

KEY_ID = "LTAI5tTestKeyId0001"
SECRET = "aliyun-secret-Zq8#not-for-logs"
TOKEN = "report-token-7f3a9c"
SIGN = "智慧校园"
NUMBER = "+8613800138000"
MESSAGE = RenderedMessage(
    template="login_code", channel="sms", text="您的登录验证码为 482913，5分钟内有效，请勿泄露。",
    template_ids={"aliyun": "SMS_154950909"}, params={"code": "482913", "minutes": "5"},
)
DISPATCH = Dispatch(
    message_id="m-7c1e", user_id="s2024001", channel="sms", address=NUMBER,
    event=EventCore(
        event_id="e-1", app="portal", type="login", template="login_code", category="verification"
    ),
    rule_id="default", rule_version="1",
)


class Tampering(httpx.AsyncHTTPTransport):
    """Changes one byte of every request body after it was signed, as a meddling proxy would."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read().replace(b"13800138000", b"13800138001", 1)
        tampered = httpx.Request(request.method, request.url, headers=request.headers, content=body)
        return await super().handle_async_request(tampered)


@dataclass
class Peer:
    app: web.Application
    url: str
    http: httpx.AsyncClient
    deps: ChannelDeps

    @property
    def state(self) -> AliyunPeerState:
        return self.app[STATE]

    def channel(
        self, clock_offset: float = 0.0, http: httpx.AsyncClient | None = None, **overrides: Any
    ) -> AliyunSms:
        values: dict[str, Any] = {
            "access_key_id": KEY_ID, "access_key_secret": SecretStr(SECRET), "sign_name": SIGN,
            "endpoint": self.url + "/", "cost_per_segment": 0.045, "callback_token": SecretStr(TOKEN),
            **overrides,
        }
        options = AliyunSmsOptions(**values)
        if http is None and clock_offset == 0.0:
            channel = AliyunSms.from_options(options, self.deps)
            assert isinstance(channel, AliyunSms)
            return channel
        return AliyunSms(options, http or self.http, clock=lambda: time.time() + clock_offset)


@pytest.fixture
async def peer(redis: Redis) -> AsyncIterator[Peer]:
    app = create_app(KEY_ID, SECRET)
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
    reaches_peer: bool = True
    message: RenderedMessage = MESSAGE


CASES = [
    Case("sent"),
    Case("international number", address="+85291234567"),
    Case("provider refuses the number", InvalidAddressError, "isv.MOBILE_NUMBER_ILLEGAL: 非法手机号",
         script=("isv.MOBILE_NUMBER_ILLEGAL",)),
    Case("number too short for the provider", InvalidAddressError, "isv.MOBILE_NUMBER_ILLEGAL",
         address="+8612345"),
    Case("not E.164: refused before any request", InvalidAddressError, "not an E.164", address="13800138000",
         reaches_peer=False),
    Case("minute flow control", ThrottledError, "isv.BUSINESS_LIMIT_CONTROL: 触发分钟级流控",
         script=("isv.BUSINESS_LIMIT_CONTROL",), retry_after=60.0),
    Case("daily limit", ThrottledError, "isv.DAY_LIMIT_CONTROL", script=("isv.DAY_LIMIT_CONTROL",),
         retry_after=86400.0),
    Case("balance exhausted", ThrottledError, "isv.AMOUNT_NOT_ENOUGH: 账户余额不足",
         script=("isv.AMOUNT_NOT_ENOUGH",), retry_after=3600.0),
    Case("API flow control", ThrottledError, "Throttling.User", script=("Throttling.User",)),
    Case("template refused", PermanentSendError, "isv.SMS_TEMPLATE_ILLEGAL",
         script=("isv.SMS_TEMPLATE_ILLEGAL",)),
    Case("signature name refused", PermanentSendError, "isv.SMS_SIGNATURE_ILLEGAL",
         script=("isv.SMS_SIGNATURE_ILLEGAL",)),
    Case("missing template code", PermanentSendError, "no Aliyun template code",
         message=MESSAGE.model_copy(update={"template_ids": {"tencent": "1"}}), reaches_peer=False),
    Case("system error", RetryableSendError, "isp.SYSTEM_ERROR", script=("isp.SYSTEM_ERROR",)),
    Case("service unavailable (HTTP 503)", RetryableSendError, "ServiceUnavailable",
         script=("ServiceUnavailable",)),
    Case("unknown access key", CredentialsError, "InvalidAccessKeyId.NotFound",
         overrides={"access_key_id": "LTAI5tSomebodyElse"}),
    Case("wrong secret", CredentialsError, "SignatureDoesNotMatch",
         overrides={"access_key_secret": SecretStr("aliyun-secret-Zq8#not-for-logX")}),
    Case("clock 20 minutes off", CredentialsError, "InvalidTimeStamp.Expired", clock_offset=-1200),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
async def test_send(peer: Peer, case: Case, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    peer.state.script.extend(case.script)
    message = case.message
    channel = peer.channel(case.clock_offset, **case.overrides)
    if case.error is None:
        result = await channel.send(message, case.address, DISPATCH)
        sent = peer.state.received[-1]
        assert result == SendResult(status="sent", provider_message_id=sent["BizId"], cost=0.045)
        assert sent["PhoneNumbers"] == aliyun_number(case.address)
        assert (sent["SignName"], sent["TemplateCode"], sent["OutId"]) == (SIGN, "SMS_154950909", "m-7c1e")
        assert json.loads(sent["TemplateParam"]) == {"code": "482913", "minutes": "5"}
        assert list(json.loads(sent["TemplateParam"])) == ["code", "minutes"]
        return
    with pytest.raises(SendError) as raised:
        await channel.send(message, case.address, DISPATCH)
    assert type(raised.value) is case.error
    assert case.match in str(raised.value)
    if isinstance(raised.value, RetryableSendError):
        assert raised.value.retry_after == case.retry_after
    assert not peer.state.received
    if not case.reaches_peer:
        assert not peer.state.nonces
    for text in (str(raised.value), caplog.text, repr(channel), repr(channel._options)):
        assert SECRET not in text and TOKEN not in text


async def test_a_body_changed_after_signing_is_refused(peer: Peer) -> None:
    async with httpx.AsyncClient(transport=Tampering()) as meddled:
        with pytest.raises(CredentialsError, match="SignatureDoesNotMatch"):
            await peer.channel(http=meddled).send(MESSAGE, NUMBER, DISPATCH)
    assert not peer.state.received


async def test_each_request_has_a_fresh_nonce_so_resends_are_accepted(peer: Peer) -> None:
    channel = peer.channel()
    first = await channel.send(MESSAGE, NUMBER, DISPATCH)
    second = await channel.send(MESSAGE, NUMBER, DISPATCH)
    assert first.provider_message_id != second.provider_message_id
    assert len(peer.state.nonces) == 2


async def test_a_long_message_costs_its_segments_counting_the_signature(peer: Peer) -> None:
    long_text = MESSAGE.model_copy(update={"text": "请" * 66})  # 【智慧校园】 makes it 72 characters
    result = await peer.channel().send(long_text, NUMBER, DISPATCH)
    assert result.cost == pytest.approx(0.09)


async def test_connection_refused_is_retryable() -> None:
    async with httpx.AsyncClient() as http:
        options = AliyunSmsOptions(access_key_id=KEY_ID, access_key_secret=SecretStr(SECRET), sign_name=SIGN,
                                   endpoint=f"http://127.0.0.1:{free_port()}/")
        with pytest.raises(RetryableSendError, match="aliyun connection failed") as raised:
            await AliyunSms(options, http).send(MESSAGE, NUMBER, DISPATCH)
    assert type(raised.value) is RetryableSendError


def test_signature_matches_aliyuns_documented_example() -> None:
    params = {
        "AccessKeyId": "testid", "Action": "DescribeRegions", "Format": "XML", "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf", "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z", "Version": "2014-05-26",
    }
    assert rpc_signature("testsecret", "GET", params) == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"access_key_secret": ""}, "access_key_secret"),
        ({"sign_name": ""}, "sign_name"),
        ({"endpoint": "dysmsapi.aliyuncs.com"}, "endpoint"),
        ({"timeout": 0}, "timeout"),
        ({"cost_per_segment": -1}, "cost_per_segment"),
        ({"sign_nmae": "x"}, "sign_nmae"),
    ],
)
def test_bad_options_name_the_field_and_never_the_secret(values: dict[str, Any], named: str) -> None:
    base: dict[str, Any] = {"access_key_id": KEY_ID, "access_key_secret": SECRET, "sign_name": SIGN}
    with pytest.raises(ValidationError) as raised:
        AliyunSmsOptions(**{**base, **values})
    assert named in str(raised.value)
    assert SECRET not in str(raised.value)


def test_from_options_refuses_another_providers_options(peer: Peer) -> None:
    with pytest.raises(ValueError, match="AliyunSms needs AliyunSmsOptions"):
        AliyunSms.from_options(ProviderOptions(), peer.deps)


def request(body: bytes, token: str | None = TOKEN) -> CallbackRequest:
    query = {} if token is None else {"token": token}
    headers = {"content-type": "application/json"}
    return CallbackRequest("POST", "/v1/callbacks/sms/aliyun", query, headers, body)


async def test_reports_for_sent_messages_become_receipts(peer: Peer) -> None:
    channel = peer.channel()
    delivered = await channel.send(MESSAGE, NUMBER, DISPATCH)
    failed = await channel.send(MESSAGE, "+8613900139000", DISPATCH)
    sent = peer.state.received
    body = json.dumps([report_for(sent[0], delivered.provider_message_id),
                       report_for(sent[1], failed.provider_message_id, success=False)], ensure_ascii=False)
    reply = channel.parse_callback(request(body.encode()))
    assert reply.receipts == (
        ProviderReceipt(delivered.provider_message_id, "delivered", "", "13800138000"),
        ProviderReceipt(failed.provider_message_id, "failed", "MK:0001: 空号", "13900139000"),
    )
    assert json.loads(reply.body) == {"code": 0, "msg": "成功"}


@pytest.mark.parametrize(
    ("body", "token", "match", "configured"),
    [
        (b"[]", "report-token-7f3a9d", "token is missing or wrong", True),
        (b"[]", None, "token is missing or wrong", True),
        (b"[]", TOKEN, "no callback_token is configured", False),
        (b"{not json", TOKEN, "not JSON", True),
        (b'{"biz_id": "1"}', TOKEN, "must be a JSON array", True),
        (b'[{"phone_number": "138", "success": true}]', TOKEN, "entry 0: biz_id: Field required", True),
        (b'[{"phone_number": "138", "success": "maybe", "biz_id": "1"}]', TOKEN, "entry 0: success", True),
    ],
)
def test_forged_or_malformed_reports_are_refused(
    peer: Peer, body: bytes, token: str | None, match: str, configured: bool
) -> None:
    channel = peer.channel() if configured else peer.channel(callback_token=None)
    with pytest.raises(CallbackRejected, match=match) as raised:
        channel.parse_callback(request(body, token))
    assert TOKEN not in str(raised.value)


@pytest.mark.parametrize(
    ("status", "body", "error", "match"),
    [
        (200, b'{"Code": "OK", "Message": "OK", "RequestId": "F655A8D5"}', PermanentSendError,
         "without a BizId"),
        (502, b"<html>Bad Gateway</html>", RetryableSendError, "HTTP 502 without a JSON object"),
        (200, b'["OK"]', RetryableSendError, "HTTP 200 without a JSON object"),
    ],
)
async def test_answers_no_aliyun_endpoint_gives(
    status: int, body: bytes, error: type[SendError], match: str
) -> None:
    """What a proxy or a broken answer looks like: never taken for a success."""
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    async with httpx.AsyncClient(transport=transport) as http:
        options = AliyunSmsOptions(access_key_id=KEY_ID, access_key_secret=SecretStr(SECRET), sign_name=SIGN)
        with pytest.raises(SendError, match=match) as raised:
            await AliyunSms(options, http).send(MESSAGE, NUMBER, DISPATCH)
    assert type(raised.value) is error

"""TencentSms against a local SendSms peer that verifies TC3-HMAC-SHA256 and answers as Tencent does."""

from __future__ import annotations

import hashlib
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
from channels.sms_tencent import TencentSms, TencentSmsOptions, canonical_post, tc3_signature
from channels.templates import RenderedMessage
from localparts import free_port
from localparts.peers.server import PeerServer
from localparts.peers.tencent_sms import STATE, TencentPeerState, create_app, status_report
from records.topics import Dispatch, EventCore

SECRET_ID = "AKIDtestSecretId0123456789"
SECRET_KEY = "tencent-key-Qw9!never-printed"
TOKEN = "status-token-51c0de"
APP_ID = "1400787878"
SIGN = "智慧校园"
NUMBER = "+8613800138000"
TEMPLATES = {
    "1850451": "您的登录验证码为{1}，{2}分钟内有效，请勿泄露。",
    "1850452": "{1}同学：您报名的{2}将于{3}在{4}举行，请携带学生证和身份证提前三十分钟到场，"
               "逾期不候。详情请登录教务系统查看考场安排。",
}
MESSAGE = RenderedMessage(
    template="login_code", channel="sms", text="您的登录验证码为482913，5分钟内有效，请勿泄露。",
    template_ids={"tencent": "1850451"}, params={"code": "482913", "minutes": "5"},
)
DISPATCH = Dispatch(
    message_id="m-7c1e", user_id="s2024001", channel="sms", address=NUMBER,
    event=EventCore(
        event_id="e-1", app="portal", type="login", template="login_code", category="verification"
    ),
    rule_id="default", rule_version="1",
)


def options(endpoint: str, **overrides: Any) -> TencentSmsOptions:
    return TencentSmsOptions(**{
        "secret_id": SECRET_ID, "secret_key": SecretStr(SECRET_KEY), "sms_sdk_app_id": APP_ID,
        "sign_name": SIGN, "endpoint": endpoint, "cost_per_segment": 0.05, **overrides,
    })


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
    def state(self) -> TencentPeerState:
        return self.app[STATE]

    def channel(
        self, clock_offset: float = 0.0, http: httpx.AsyncClient | None = None, **overrides: Any
    ) -> TencentSms:
        configured = options(self.url, **{"callback_token": SecretStr(TOKEN), **overrides})
        if http is None and clock_offset == 0.0:
            channel = TencentSms.from_options(configured, self.deps)
            assert isinstance(channel, TencentSms)
            return channel
        return TencentSms(configured, http or self.http, clock=lambda: time.time() + clock_offset)


@pytest.fixture
async def peer(redis: Redis) -> AsyncIterator[Peer]:
    app = create_app(SECRET_ID, SECRET_KEY, APP_ID, TEMPLATES)
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
    Case("international number", address="+447700900123"),
    Case("incorrect number", InvalidAddressError, "IncorrectPhoneNumber: 手机号格式错误",
         script=("InvalidParameterValue.IncorrectPhoneNumber",)),
    Case("number in the opt-out list", InvalidAddressError, "FailedOperation.PhoneNumberInBlacklist",
         script=("FailedOperation.PhoneNumberInBlacklist",)),
    Case("not E.164: refused before any request", InvalidAddressError, "not an E.164",
         address="8613800138000"),
    Case("daily limit of the number", ThrottledError, "LimitExceeded.PhoneNumberDailyLimit",
         script=("LimitExceeded.PhoneNumberDailyLimit",), retry_after=86400.0),
    Case("30-second limit of the number", ThrottledError, "LimitExceeded.PhoneNumberThirtySecondLimit",
         script=("LimitExceeded.PhoneNumberThirtySecondLimit",), retry_after=30.0),
    Case("API request limit", ThrottledError, "RequestLimitExceeded", script=("RequestLimitExceeded",),
         retry_after=1.0),
    Case("package used up", ThrottledError, "FailedOperation.InsufficientBalanceInSmsPackage",
         script=("FailedOperation.InsufficientBalanceInSmsPackage",), retry_after=3600.0),
    Case("template not approved", PermanentSendError, "FailedOperation.TemplateIncorrectOrUnapproved",
         message=MESSAGE.model_copy(update={"template_ids": {"tencent": "999999"}})),
    Case("missing template id", PermanentSendError, "no Tencent template id",
         message=MESSAGE.model_copy(update={"template_ids": {"aliyun": "SMS_1"}})),
    Case("internal error", RetryableSendError, "InternalError.SendAndRecvFail",
         script=("InternalError.SendAndRecvFail",)),
    Case("unknown SecretId", CredentialsError, "AuthFailure.SecretIdNotFound",
         overrides={"secret_id": "AKIDsomebodyElse000000000"}),
    Case("wrong SecretKey", CredentialsError, "AuthFailure.SignatureFailure",
         overrides={"secret_key": SecretStr("tencent-key-Qw9!never-printeD")}),
    Case("clock 10 minutes off", CredentialsError, "AuthFailure.SignatureExpire", clock_offset=600),
    Case("another account's SmsSdkAppId", CredentialsError, "UnauthorizedOperation.SmsSdkAppIdVerifyFail",
         overrides={"sms_sdk_app_id": "1400000001"}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
async def test_send(peer: Peer, case: Case, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    peer.state.script.extend(case.script)
    channel = peer.channel(case.clock_offset, **case.overrides)
    if case.error is None:
        result = await channel.send(case.message, case.address, DISPATCH)
        sent = peer.state.received[-1]
        assert result == SendResult(status="sent", provider_message_id=sent["SerialNo"], cost=0.05)
        assert sent["PhoneNumberSet"] == [case.address]
        assert (sent["SmsSdkAppId"], sent["SignName"], sent["TemplateId"]) == (APP_ID, SIGN, "1850451")
        assert (sent["TemplateParamSet"], sent["SessionContext"]) == (["482913", "5"], "m-7c1e")
        return
    with pytest.raises(SendError) as raised:
        await channel.send(case.message, case.address, DISPATCH)
    assert type(raised.value) is case.error
    assert case.match in str(raised.value)
    if isinstance(raised.value, RetryableSendError):
        assert raised.value.retry_after == case.retry_after
    assert not peer.state.received
    for text in (str(raised.value), caplog.text, repr(channel), repr(channel._options)):
        assert SECRET_KEY not in text and TOKEN not in text


async def test_a_body_changed_after_signing_is_refused(peer: Peer) -> None:
    async with httpx.AsyncClient(transport=Tampering()) as meddled:
        with pytest.raises(CredentialsError, match=r"AuthFailure\.SignatureFailure"):
            await peer.channel(http=meddled).send(MESSAGE, NUMBER, DISPATCH)
    assert not peer.state.received


async def test_cost_follows_the_fee_tencent_bills() -> None:
    # A 2-part message: the template text with its values and 【智慧校园】 is over 70 characters.
    exam = RenderedMessage(
        template="exam", channel="sms", text="", template_ids={"tencent": "1850452"},
        params={"name": "李伟", "exam": "线性代数期末考试", "at": "11月23日09:00", "room": "东教学楼204"},
    )
    app = create_app(SECRET_ID, SECRET_KEY, APP_ID, TEMPLATES)
    async with PeerServer(app) as server, httpx.AsyncClient() as http:
        result = await TencentSms(options(server.url), http).send(exam, NUMBER, DISPATCH)
    assert app[STATE].received[0]["Fee"] == 2
    assert result.cost == pytest.approx(0.1)


async def test_without_a_fee_cost_counts_segments_with_the_signature(peer: Peer) -> None:
    no_fee = create_app(SECRET_ID, SECRET_KEY, APP_ID)  # no template texts: the peer bills 1
    async with PeerServer(no_fee) as server, httpx.AsyncClient() as http:
        result = await TencentSms(options(server.url), http).send(MESSAGE, NUMBER, DISPATCH)
    assert result.cost == pytest.approx(0.05)


async def test_connection_refused_is_retryable() -> None:
    async with httpx.AsyncClient() as http:
        closed = options(f"http://127.0.0.1:{free_port()}")
        with pytest.raises(RetryableSendError, match="tencent connection failed") as raised:
            await TencentSms(closed, http).send(MESSAGE, NUMBER, DISPATCH)
    assert type(raised.value) is RetryableSendError


def test_signature_matches_tencents_documented_example() -> None:
    payload = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
    canonical = canonical_post("cvm.tencentcloudapi.com", payload)
    assert hashlib.sha256(canonical.encode()).hexdigest() == (
        "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    )
    assert tc3_signature("Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", "cvm", 1551113065, canonical) == (
        "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    )


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"secret_key": ""}, "secret_key"),
        ({"sms_sdk_app_id": "app-1"}, "sms_sdk_app_id"),
        ({"sign_name": ""}, "sign_name"),
        ({"endpoint": "https://"}, "endpoint"),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_bad_options_name_the_field_and_never_the_secret(values: dict[str, Any], named: str) -> None:
    base: dict[str, Any] = {"secret_id": SECRET_ID, "secret_key": SECRET_KEY, "sms_sdk_app_id": APP_ID,
                            "sign_name": SIGN}
    with pytest.raises(ValidationError) as raised:
        TencentSmsOptions(**{**base, **values})
    assert named in str(raised.value)
    assert SECRET_KEY not in str(raised.value)


def request(body: bytes, token: str | None = TOKEN) -> CallbackRequest:
    query = {} if token is None else {"token": token}
    headers = {"content-type": "application/json"}
    return CallbackRequest("POST", "/v1/callbacks/sms/tencent", query, headers, body)


async def test_status_reports_for_sent_messages_become_receipts(peer: Peer) -> None:
    channel = peer.channel()
    delivered = await channel.send(MESSAGE, NUMBER, DISPATCH)
    failed = await channel.send(MESSAGE, "+8613900139000", DISPATCH)
    sent = peer.state.received
    body = json.dumps([status_report(sent[0]), status_report(sent[1], success=False)], ensure_ascii=False)
    reply = channel.parse_callback(request(body.encode()))
    assert reply.receipts == (
        ProviderReceipt(delivered.provider_message_id, "delivered", "", "+8613800138000"),
        ProviderReceipt(failed.provider_message_id, "failed", "MK:0001: 空号", "+8613900139000"),
    )
    assert json.loads(reply.body) == {"result": 0, "errmsg": "OK"}


@pytest.mark.parametrize(
    ("body", "token", "match", "configured"),
    [
        (b"[]", "status-token-51c0dE", "token is missing or wrong", True),
        (b"[]", None, "token is missing or wrong", True),
        (b"[]", TOKEN, "no callback_token is configured", False),
        (b"\xff\xfe", TOKEN, "not JSON", True),
        (b'{"sid": "1"}', TOKEN, "must be a JSON array", True),
        (b'[{"mobile": "138", "report_status": "SUCCESS"}]', TOKEN, "entry 0: sid: Field required", True),
        (b'[{"mobile": "138", "report_status": "DONE", "sid": "1"}]', TOKEN, "entry 0: report_status", True),
    ],
)
def test_forged_or_malformed_reports_are_refused(
    peer: Peer, body: bytes, token: str | None, match: str, configured: bool
) -> None:
    channel = peer.channel() if configured else peer.channel(callback_token=None)
    with pytest.raises(CallbackRejected, match=match) as raised:
        channel.parse_callback(request(body, token))
    assert TOKEN not in str(raised.value)

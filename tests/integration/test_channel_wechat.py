"""WeChat official account and mini program adapters against the local WeChat peer and real Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr
from redis.asyncio import Redis

from channels.base import (
    CallbackRejected,
    CallbackRequest,
    Channel,
    ChannelDeps,
    CredentialsError,
    InvalidAddressError,
    PermanentSendError,
    ProviderReceipt,
    RetryableSendError,
    SendError,
    ThrottledError,
)
from channels.templates import RenderedMessage
from channels.wechat_mp import WechatMiniProgram, WechatMpOptions
from channels.wechat_oa import WechatOaOptions, WechatOfficialAccount
from localparts.peers.server import PeerServer
from localparts.peers.wechat import (
    PEER,
    WechatPeerState,
    create_app,
    signed_push_query,
    subscribe_sent_event,
    template_finish_event,
)
from records.topics import Dispatch, EventCore
from state.connection import open_redis

APPID = "wx5f3a1c9e2b7d4086"
SECRET = "app-secret-5b1e9c0d7a3f"
CALLBACK_TOKEN = "push-token-8c2e"
OPENID = "oia2TjuEGTNoeX76QEjQNrcURxG8"
DISPATCH = Dispatch(
    message_id="m-7", user_id="u1", channel="wechat_oa", address=OPENID,
    event=EventCore(event_id="e1", app="bursar", type="fee", template="fee_due", category="notice"),
    rule_id="r1", rule_version="1",
)
OA_MESSAGE = RenderedMessage(
    template="fee_due", channel="wechat_oa", link="https://portal.example.edu/finance",
    template_ids={"wechat-oa": "TPL-fee-due"}, params={"thing1": "2026秋学费", "amount2": "¥5,000"},
    page="pages/fees/index",
)
MP_MESSAGE = RenderedMessage(
    template="course_reminder", channel="wechat_mp", page="pages/course/index?id=CS101",
    template_ids={"wechat-mp": "TPL-course"}, params={"thing1": "CS101", "time2": "09:00"},
)


@dataclass
class Rig:
    peer: WechatPeerState
    url: str
    deps: ChannelDeps

    def oa(self, secret: str = SECRET, **options: object) -> WechatOfficialAccount:
        opts = WechatOaOptions.model_validate({
            "base_url": self.url, "appid": APPID, "secret": secret, "callback_token": CALLBACK_TOKEN,
            "miniprogram_appid": "wxminiprog0001", "cost_per_message": 0.001, **options,
        })
        return WechatOfficialAccount.from_options(opts, self.deps)

    def mp(self, **options: object) -> WechatMiniProgram:
        opts = WechatMpOptions.model_validate({
            "base_url": self.url, "appid": APPID, "secret": SECRET, "callback_token": CALLBACK_TOKEN,
            **options,
        })
        return WechatMiniProgram.from_options(opts, self.deps)

    def secrets(self) -> list[str]:
        return [SECRET, CALLBACK_TOKEN, *self.peer.tokens, *self.peer.expired]


@pytest.fixture
async def rig(redis: Redis) -> AsyncIterator[Rig]:
    app = create_app(APPID, SECRET)
    async with PeerServer(app) as server, httpx.AsyncClient() as http:
        yield Rig(app[PEER], server.url, ChannelDeps(http=http, redis=redis))


# (case, adapter, message, address, scripted errcodes, expected error or None)
SEND_CASES = [
    ("oa sent", "oa", OA_MESSAGE, OPENID, [], None),
    ("oa not a follower", "oa", OA_MESSAGE, "oUnsubscribed00000000000001", [], InvalidAddressError),
    ("oa invalid openid", "oa", OA_MESSAGE, OPENID, [40003], InvalidAddressError),
    ("oa malformed openid", "oa", OA_MESSAGE, "not an openid!", [], InvalidAddressError),
    ("oa unknown template", "oa",
     OA_MESSAGE.model_copy(update={"template_ids": {"wechat-oa": "TPL-nope"}}), OPENID, [],
     PermanentSendError),
    ("oa no template id", "oa", OA_MESSAGE.model_copy(update={"template_ids": {}}), OPENID, [],
     PermanentSendError),
    ("oa bad data", "oa", OA_MESSAGE, OPENID, [47003], PermanentSendError),
    ("oa daily quota", "oa", OA_MESSAGE, OPENID, [45009], ThrottledError),
    ("oa response limit", "oa", OA_MESSAGE, OPENID, [45047], ThrottledError),
    ("oa system busy", "oa", OA_MESSAGE, OPENID, [-1], RetryableSendError),
    ("oa token refused twice", "oa", OA_MESSAGE, OPENID, [40001, 40001], CredentialsError),
    ("mp sent", "mp", MP_MESSAGE, OPENID, [], None),
    ("mp refused subscription", "mp", MP_MESSAGE, "oUnsubscribed00000000000001", [], InvalidAddressError),
    ("mp daily quota", "mp", MP_MESSAGE, OPENID, [45009], ThrottledError),
    ("mp unknown template", "mp",
     MP_MESSAGE.model_copy(update={"template_ids": {"wechat-mp": "TPL-x"}}), OPENID, [], PermanentSendError),
]


@pytest.mark.parametrize(
    ("kind", "message", "address", "script", "expected"),
    [case[1:] for case in SEND_CASES],
    ids=[case[0] for case in SEND_CASES],
)
async def test_send(
    rig: Rig, caplog: pytest.LogCaptureFixture, kind: str, message: RenderedMessage, address: str,
    script: list[int], expected: type[SendError] | None,
) -> None:
    caplog.set_level(logging.DEBUG, logger="channels")
    rig.peer.unsubscribed.add("oUnsubscribed00000000000001")
    rig.peer.script.extend(script)
    adapter: Channel = rig.oa() if kind == "oa" else rig.mp()
    if expected is None:
        result = await adapter.send(message, address, DISPATCH)
        assert result.status == "sent"
        assert result.provider_message_id == str(rig.peer.next_msgid)
        body = rig.peer.received[-1]["body"]
        assert body["touser"] == address
        assert body["data"] == {k: {"value": v} for k, v in message.params.items()}
        if kind == "oa":
            assert result.cost == 0.001
            assert body["url"] == "https://portal.example.edu/finance"
            assert body["miniprogram"] == {"appid": "wxminiprog0001", "pagepath": "pages/fees/index"}
            assert body["client_msg_id"] == "m-7-0"
        else:
            assert body["page"] == "pages/course/index?id=CS101"
            assert body["miniprogram_state"] == "formal"
    else:
        with pytest.raises(expected) as caught:
            await adapter.send(message, address, DISPATCH)
        assert type(caught.value) is expected  # the exact class: Throttled is not plain Retryable
        if script:
            assert f"errcode {script[-1]}" in str(caught.value)
        assert not any(s in str(caught.value) for s in rig.secrets())
    assert not any(s in repr(adapter) for s in rig.secrets())
    assert not any(s in caplog.text for s in rig.secrets())


async def test_expired_token_is_refreshed_once_and_the_send_retried(rig: Rig) -> None:
    adapter = rig.oa()
    await adapter.send(OA_MESSAGE, OPENID, DISPATCH)
    rig.peer.expire_tokens()
    result = await adapter.send(OA_MESSAGE, OPENID, DISPATCH)
    assert result.status == "sent"
    sends = [r for r in rig.peer.received if "body" in r]
    assert [r["token_ok"] for r in sends] == [True, False, True]
    assert rig.peer.token_requests == 2


@pytest.mark.parametrize("stable", [True, False], ids=["stable_token", "classic token"])
async def test_token_is_cached_in_redis_across_adapters(rig: Rig, redis: Redis, stable: bool) -> None:
    await rig.oa(stable_token=stable).send(OA_MESSAGE, OPENID, DISPATCH)
    await rig.mp(stable_token=stable).send(MP_MESSAGE, OPENID, DISPATCH)  # same appid: same token
    assert rig.peer.token_requests == 1
    assert rig.peer.received[0]["path"] == ("/cgi-bin/stable_token" if stable else "/cgi-bin/token")
    ttl = await redis.ttl(f"wechat:token:{APPID}")
    assert 7200 - 300 - 5 <= ttl <= 7200 - 300


async def test_a_stable_token_near_its_end_is_cached_for_half_its_time(rig: Rig, redis: Redis) -> None:
    await rig.oa().send(OA_MESSAGE, OPENID, DISPATCH)
    (token,) = rig.peer.tokens
    rig.peer.tokens[token] = time.time() + 400  # another system fetched it 6600 s ago
    await redis.delete(f"wechat:token:{APPID}")
    await rig.oa().send(OA_MESSAGE, OPENID, DISPATCH)
    assert list(rig.peer.tokens) == [token] and rig.peer.token_requests == 2
    assert 190 <= await redis.ttl(f"wechat:token:{APPID}") <= 200


async def test_concurrent_workers_do_not_stampede_the_token_endpoint(rig: Rig, redis_url: str) -> None:
    # Two workers, each with its own Redis connection and adapter, 20 sends each at once.
    other = open_redis(redis_url)
    try:
        first = rig.oa()
        second = WechatOfficialAccount.from_options(
            first._options, ChannelDeps(http=rig.deps.http, redis=other)
        )
        sends = [a.send(OA_MESSAGE, OPENID, DISPATCH) for a in (first, second) for _ in range(20)]
        await asyncio.gather(*sends)
        assert rig.peer.token_requests == 1
        rig.peer.expire_tokens()
        again = [a.send(OA_MESSAGE, OPENID, DISPATCH) for a in (first, second) for _ in range(20)]
        await asyncio.gather(*again)
        assert rig.peer.token_requests == 2
    finally:
        await other.aclose()


@pytest.mark.parametrize(
    ("token_errcode", "secret", "expected"),
    [
        (None, "wrong-secret-0000", CredentialsError),  # tampered credentials: 40125 invalid appsecret
        (40013, SECRET, CredentialsError),
        (-1, SECRET, RetryableSendError),
        (45009, SECRET, ThrottledError),
    ],
    ids=["invalid appsecret", "invalid appid", "system busy", "token quota"],
)
async def test_token_refusals(
    rig: Rig, caplog: pytest.LogCaptureFixture, token_errcode: int | None, secret: str,
    expected: type[SendError],
) -> None:
    caplog.set_level(logging.DEBUG, logger="channels")
    if token_errcode is not None:
        rig.peer.token_script.append(token_errcode)
    with pytest.raises(expected) as caught:
        await rig.oa(secret=secret).send(OA_MESSAGE, OPENID, DISPATCH)
    assert type(caught.value) is expected
    assert "errcode" in str(caught.value)
    assert secret not in str(caught.value) and secret not in caplog.text


async def test_refused_credentials_are_shared_not_asked_again_by_every_send(rig: Rig) -> None:
    adapter = rig.oa(secret="wrong-secret-0000")
    outcomes = await asyncio.gather(*[adapter.send(OA_MESSAGE, OPENID, DISPATCH) for _ in range(10)],
                                    return_exceptions=True)
    assert all(type(o) is CredentialsError and "40125" in str(o) for o in outcomes)
    assert rig.peer.token_requests == 1


async def test_unreachable_api_is_retryable_and_names_no_secret(rig: Rig) -> None:
    adapter = rig.oa(base_url="http://127.0.0.1:9")
    with pytest.raises(RetryableSendError) as caught:
        await adapter.send(OA_MESSAGE, OPENID, DISPATCH)
    assert "connection failed" in str(caught.value)
    assert SECRET not in str(caught.value) and caught.value.__cause__ is None


def test_options_fail_fast_naming_the_bad_value(rig: Rig) -> None:
    with pytest.raises(ValueError, match="base_url 'ftp://x'"):
        rig.oa(base_url="ftp://x")
    with pytest.raises(ValueError, match="secret of appid") as caught:
        rig.oa(secret="")
    assert "appid" in str(caught.value)
    options = WechatOaOptions.model_validate({"appid": APPID, "secret": SECRET})
    assert SECRET not in repr(options) and SECRET not in str(options.model_dump())


async def test_delivery_events_pushed_by_wechat_become_receipts_of_the_sent_messages(redis: Redis) -> None:
    """The whole loop: send, WeChat pushes a signed event to our callback, the adapter reads it."""
    receipts: list[ProviderReceipt] = []
    adapters: dict[str, Channel] = {}

    async def callback(request: web.Request) -> web.Response:
        reply = adapters[request.match_info["provider"]].parse_callback(CallbackRequest(
            method=request.method, path=request.path, query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()}, body=await request.read()))
        receipts.extend(reply.receipts)
        return web.Response(body=reply.body, content_type=reply.media_type)

    receiver = web.Application()
    receiver.router.add_route("*", "/v1/callbacks/{provider}", callback)
    async with PeerServer(receiver) as ours:
        app = create_app(APPID, SECRET, push_url=f"{ours.url}/v1/callbacks/wechat-oa",
                         push_token=CALLBACK_TOKEN)
        peer = app[PEER]
        peer.blocked.add("oBlocked0000000000000000001")
        async with PeerServer(app) as wechat, httpx.AsyncClient() as http:
            rig = Rig(peer, wechat.url, ChannelDeps(http=http, redis=redis))
            adapters["wechat-oa"] = rig.oa()
            sent = [await adapters["wechat-oa"].send(OA_MESSAGE, openid, DISPATCH)
                    for openid in (OPENID, "oBlocked0000000000000000001")]
            for _ in range(500):
                if len(peer.pushed) == 2:
                    break
                await asyncio.sleep(0.01)
    assert peer.pushed == [200, 200]  # both pushes verified and answered "success"
    by_id = {r.provider_message_id: r for r in receipts}
    assert by_id[sent[0].provider_message_id].status == "delivered"
    assert by_id[sent[1].provider_message_id].status == "failed"
    assert by_id[sent[1].provider_message_id].reason == "wechat: failed:user block"


def _push(method: str, query: dict[str, str], body: bytes = b"") -> CallbackRequest:
    return CallbackRequest(method=method, path="/v1/callbacks/wechat-oa", query=query, headers={}, body=body)


def _tampered(query: dict[str, str]) -> dict[str, str]:
    sig = query["signature"]
    return {**query, "signature": sig[:-1] + ("0" if sig[-1] != "0" else "1")}


@pytest.mark.parametrize(
    ("status", "expected", "reason"),
    [("success", "delivered", ""), ("failed:user block", "failed", "wechat: failed:user block"),
     ("failed: system failed", "failed", "wechat: failed: system failed")],
)
def test_template_finish_push_becomes_a_receipt(rig: Rig, status: str, expected: str, reason: str) -> None:
    reply = rig.oa().parse_callback(
        _push("POST", signed_push_query(CALLBACK_TOKEN), template_finish_event(OPENID, "200228333", status))
    )
    assert reply.body == b"success"
    (receipt,) = reply.receipts
    assert (receipt.provider_message_id, receipt.status, receipt.reason, receipt.recipient) == (
        "200228333", expected, reason, OPENID)


def test_mini_program_sent_event_becomes_receipts(rig: Rig) -> None:
    body = subscribe_sent_event(OPENID, [("1864323726461255680", 0, "success"),
                                         ("1864323726461255681", 43101, "user refuse to accept the msg")])
    reply = rig.mp().parse_callback(_push("POST", signed_push_query(CALLBACK_TOKEN), body))
    assert [(r.provider_message_id, r.status) for r in reply.receipts] == [
        ("1864323726461255680", "delivered"), ("1864323726461255681", "failed")]
    assert "43101" in reply.receipts[1].reason and reply.body == b"success"


def test_url_verification_echoes_when_signed(rig: Rig) -> None:
    reply = rig.oa().parse_callback(_push("GET", signed_push_query(CALLBACK_TOKEN, echostr="7219843751")))
    assert reply.body == b"7219843751" and reply.receipts == ()


def test_other_events_are_acknowledged_without_receipts(rig: Rig) -> None:
    body = b"<xml><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>"
    reply = rig.oa().parse_callback(_push("POST", signed_push_query(CALLBACK_TOKEN), body))
    assert reply.receipts == () and reply.body == b"success"


REJECTED = [
    ("tampered signature", "POST", _tampered(signed_push_query(CALLBACK_TOKEN)), "does not match"),
    ("signed with another token", "POST", signed_push_query("other-token"), "does not match"),
    ("tampered echo", "GET", _tampered(signed_push_query(CALLBACK_TOKEN, echostr="1")), "does not match"),
    ("no signature", "POST", {"timestamp": "1", "nonce": "2"}, "without signature"),
    ("safe mode", "POST", {**signed_push_query(CALLBACK_TOKEN), "encrypt_type": "aes"}, "plaintext mode"),
]


@pytest.mark.parametrize(
    ("method", "query", "reason"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_forged_pushes_are_rejected(rig: Rig, method: str, query: dict[str, str], reason: str) -> None:
    with pytest.raises(CallbackRejected, match=reason) as caught:
        rig.oa().parse_callback(_push(method, query, template_finish_event(OPENID, "1")))
    assert CALLBACK_TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"<xml><Event>TEMPLATESENDJOBFINISH</Event></xml>", "without MsgID"),
     (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><xml>&a;</xml>', "DTD"),
     (b"not xml", "not XML"),
     (b"<root/>", "not <xml>")],
)
def test_malformed_pushes_are_rejected(rig: Rig, body: bytes, reason: str) -> None:
    with pytest.raises(CallbackRejected, match=reason):
        rig.oa().parse_callback(_push("POST", signed_push_query(CALLBACK_TOKEN), body))


def test_pushes_are_refused_without_a_callback_token(rig: Rig) -> None:
    with pytest.raises(CallbackRejected, match="no callback_token"):
        rig.oa(callback_token=None).parse_callback(
            _push("POST", signed_push_query(CALLBACK_TOKEN), template_finish_event(OPENID, "1")))


def test_callback_token_is_secret() -> None:
    options = WechatOaOptions(appid=APPID, secret=SecretStr(SECRET), callback_token=SecretStr(CALLBACK_TOKEN))
    assert CALLBACK_TOKEN not in repr(options)

"""JPush against the local JPush peer: Basic auth checked, real bodies, rate-limit headers, callbacks."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr
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
    ThrottledError,
)
from channels.push_jpush import JPush, JPushOptions
from channels.templates import RenderedMessage
from localparts.peers.jpush import STATE, JPushPeerState, callback_headers, create_app, new_registration_id
from localparts.peers.server import PeerServer
from records.topics import Dispatch, EventCore

APP_KEY = "7d431e42dfa6a6d693ac2d04"
SECRET = "5e987ac6d2e04d95a9d8f0d1"
RID = new_registration_id()
ADDRESS = f"jpush:{RID}"
MESSAGE = RenderedMessage(
    template="exam", channel="push", title="Exam moved", body="CS101 is now in East 204",
    page="app://exams/cs101", params={"room": "East 204"},
)
DISPATCH = Dispatch(
    message_id="m-7", user_id="u1", channel="push", address=ADDRESS,
    event=EventCore(event_id="e1", app="lms", type="exam", template="exam", category="notice"),
    rule_id="r1", rule_version="1",
)


@dataclass
class Peer:
    server: PeerServer
    client: httpx.AsyncClient

    @property
    def state(self) -> JPushPeerState:
        return self.server.app[STATE]

    def adapter(self, client: httpx.AsyncClient | None = None, **overrides: object) -> JPush:
        fields = {"app_key": APP_KEY, "master_secret": SECRET, "endpoint": self.server.url, **overrides}
        return JPush(JPushOptions.model_validate(fields), client or self.client)


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    app = create_app(app_key=APP_KEY, master_secret=SECRET)
    async with PeerServer(app) as server, httpx.AsyncClient() as client:
        peer = Peer(server, client)
        peer.state.registrations = {RID}
        yield peer


@pytest.mark.parametrize(
    ("script", "address", "expected", "reason_part"),
    [
        ([], ADDRESS, None, ""),
        ([], "jpush:1a0018970aunknown", InvalidAddressError, "jpush 1011 (HTTP 400): cannot find user"),
        ([1011], ADDRESS, InvalidAddressError, "1011"),
        ([1004], ADDRESS, CredentialsError, "jpush 1004 (HTTP 401): Authen failed"),
        ([2003], ADDRESS, CredentialsError, "jpush 2003 (HTTP 403)"),
        ([2002], ADDRESS, ThrottledError, "jpush 2002 (HTTP 429)"),
        ([2008], ADDRESS, ThrottledError, "jpush 2008 (HTTP 429)"),
        ([1003], ADDRESS, PermanentSendError, "jpush 1003 (HTTP 400)"),
        ([1005], ADDRESS, PermanentSendError, "too long"),
        ([1000], ADDRESS, RetryableSendError, "jpush 1000 (HTTP 500)"),
        ([], "jpush:not valid!", InvalidAddressError, "jpush:<registration id>"),
        ([], f"fcm:{RID}", InvalidAddressError, "jpush:<registration id>"),
    ],
)
async def test_send_maps_jpush_answers(
    peer: Peer, script: list[int], address: str, expected: type[SendError] | None, reason_part: str
) -> None:
    peer.state.script.extend(script)
    adapter = peer.adapter(cost_per_message=0.002)
    if expected is None:
        result = await adapter.send(MESSAGE, address, DISPATCH)
        assert (result.status, result.provider_message_id, result.cost) == ("sent", "54043200347", 0.002)
        return
    with pytest.raises(expected) as caught:
        await adapter.send(MESSAGE, address, DISPATCH)
    assert type(caught.value) is expected
    assert reason_part in str(caught.value)


async def test_rate_limit_reset_header_is_the_retry_after(peer: Peer) -> None:
    peer.state.remaining = 1
    peer.state.reset = 42
    adapter = peer.adapter()
    await adapter.send(MESSAGE, ADDRESS, DISPATCH)
    with pytest.raises(ThrottledError, match="2002") as caught:
        await adapter.send(MESSAGE, ADDRESS, DISPATCH)
    assert caught.value.retry_after == 42.0


async def test_push_body_targets_one_registration_id(peer: Peer) -> None:
    await peer.adapter(apns_production=False).send(MESSAGE, ADDRESS, DISPATCH)
    [received] = peer.state.received
    body = json.loads(received["body"])
    assert body["audience"] == {"registration_id": [RID]}
    assert body["options"] == {"apns_production": False, "time_to_live": 86_400}
    assert body["notification"]["ios"]["alert"] == {"title": "Exam moved", "body": "CS101 is now in East 204"}
    assert body["notification"]["android"]["extras"] == {
        "message_id": "m-7", "room": "East 204", "page": "app://exams/cs101",
    }


async def test_verification_codes_are_not_kept_for_long(peer: Peer) -> None:
    event = DISPATCH.event.model_copy(update={"category": "verification"})
    await peer.adapter().send(MESSAGE, ADDRESS, DISPATCH.model_copy(update={"event": event}))
    assert json.loads(peer.state.received[0]["body"])["options"]["time_to_live"] == 300


async def test_tampered_authorization_is_refused(peer: Peer) -> None:
    async def tamper(request: httpx.Request) -> None:
        auth = request.headers["Authorization"]
        request.headers["Authorization"] = auth[:-3] + ("A" if auth[-3] != "A" else "B") + auth[-2:]

    async with httpx.AsyncClient(event_hooks={"request": [tamper]}) as client:
        with pytest.raises(CredentialsError, match="1004"):
            await peer.adapter(client=client).send(MESSAGE, ADDRESS, DISPATCH)


async def test_wrong_master_secret_is_a_credentials_error(peer: Peer) -> None:
    with pytest.raises(CredentialsError, match="Authen failed"):
        await peer.adapter(master_secret="0" * 24).send(MESSAGE, ADDRESS, DISPATCH)


async def test_unreachable_endpoint_is_retryable(peer: Peer) -> None:
    with pytest.raises(RetryableSendError, match="connection failed"):
        await peer.adapter(endpoint="http://127.0.0.1:9").send(MESSAGE, ADDRESS, DISPATCH)


def callback(body: object, headers: dict[str, str], method: str = "POST", query: dict[str, str] | None = None
             ) -> CallbackRequest:
    return CallbackRequest(method, "/v1/callbacks/jpush", query or {}, headers, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("records", "receipts"),
    [
        (
            [{"type": 4, "msgid": "54043200347", "registration_id": RID}],
            (ProviderReceipt("54043200347", "delivered", "", RID),),
        ),
        (
            [{"type": 5, "msgid": "1", "registration_id": RID}, {"type": "6", "msgid": "2"}],
            (ProviderReceipt("1", "failed", "jpush: not delivered", RID), ProviderReceipt("2", "clicked")),
        ),
        ({"type": 4, "msgid": "9"}, (ProviderReceipt("9", "delivered"),)),
        ([{"type": 2, "msgid": "3"}, {"type": 0, "msgid": "4"}], ()),
    ],
)
def test_signed_callbacks_become_receipts(
    peer: Peer, records: object, receipts: tuple[ProviderReceipt, ...]
) -> None:
    reply = peer.adapter().parse_callback(callback(records, callback_headers(APP_KEY, SECRET)))
    assert reply.receipts == receipts


@pytest.mark.parametrize(
    ("headers", "body", "complaint"),
    [
        ({}, [{"type": 4, "msgid": "1"}], "Authorization does not match"),
        (callback_headers(APP_KEY, "x" * 24), [{"type": 4, "msgid": "1"}], "Authorization does not match"),
        (callback_headers(APP_KEY, SECRET), [{"type": 4}], "record 0 has no msgid"),
        (callback_headers(APP_KEY, SECRET), "just text", "neither a record nor a list"),
    ],
)
def test_forged_or_malformed_callbacks_are_refused(
    peer: Peer, headers: dict[str, str], body: object, complaint: str
) -> None:
    with pytest.raises(CallbackRejected, match=complaint) as caught:
        peer.adapter().parse_callback(callback(body, headers))
    assert SECRET not in str(caught.value)


def test_url_check_echoes_echostr(peer: Peer) -> None:
    request = callback(None, callback_headers(APP_KEY, SECRET), "GET", {"echostr": "571fd1bf"})
    reply = peer.adapter().parse_callback(request)
    assert (reply.receipts, reply.body) == ((), b"571fd1bf")


async def test_secrets_never_leak(peer: Peer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = peer.adapter()
    peer.state.script.append(1004)
    with pytest.raises(CredentialsError) as caught:
        await adapter.send(MESSAGE, ADDRESS, DISPATCH)
    options = JPushOptions(app_key=APP_KEY, master_secret=SecretStr(SECRET))
    auth = peer.state.received[0]["authorization"]
    for text in (repr(adapter), repr(options), str(options), str(caught.value), caplog.text):
        assert SECRET not in text
        assert auth.removeprefix("Basic ") not in text


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"app_key": "short"}, "app_key 'short'"),
        ({"master_secret": ""}, "master_secret is missing"),
        ({"endpoint": "api.jpush.cn"}, "endpoint 'api.jpush.cn'"),
    ],
)
def test_bad_options_fail_fast(peer: Peer, overrides: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        peer.adapter(**overrides)


def test_from_options_and_accepts(peer: Peer) -> None:
    options = JPushOptions(app_key=APP_KEY, master_secret=SecretStr(SECRET))
    adapter = JPush.from_options(options, ChannelDeps(http=peer.client, redis=Redis()))
    assert adapter.accepts(ADDRESS)
    assert not adapter.accepts("jpush:") and not adapter.accepts("apns:" + RID)


# --- cid: JPush's deduplication key ------------------------------------------------------------

async def test_a_repeated_push_carries_the_same_cid_and_is_pushed_once(peer: Peer, redis: Redis) -> None:
    options = JPushOptions.model_validate(
        {"app_key": APP_KEY, "master_secret": SECRET, "endpoint": peer.server.url}
    )
    # Two workers: the second sends the same dispatch again, as after a crash before its outcome was kept.
    first_worker = JPush.from_options(options, ChannelDeps(http=peer.client, redis=redis))
    second_worker = JPush.from_options(options, ChannelDeps(http=peer.client, redis=redis))
    first = await first_worker.send(MESSAGE, ADDRESS, DISPATCH)
    again = await second_worker.send(MESSAGE, ADDRESS, DISPATCH)
    fallback = await first_worker.send(MESSAGE, ADDRESS, DISPATCH.model_copy(update={"step": 1}))
    cids = [json.loads(r["body"])["cid"] for r in peer.state.received]
    assert cids[0] == cids[1] != cids[2] and all(c.startswith(f"{APP_KEY}-") for c in cids)
    assert first.provider_message_id == again.provider_message_id != fallback.provider_message_id
    assert peer.state.repeats == 1 and len(peer.state.pushed_cids) == 2
    assert await redis.get(f"sb:jpush:cid:{APP_KEY}:m-7.0") == cids[0].encode()


async def test_a_refused_cid_request_is_classified_like_a_push(peer: Peer, redis: Redis) -> None:
    options = JPushOptions.model_validate(
        {"app_key": APP_KEY, "master_secret": "not-the-secret", "endpoint": peer.server.url}
    )
    adapter = JPush.from_options(options, ChannelDeps(http=peer.client, redis=redis))
    with pytest.raises(CredentialsError, match="jpush 1004"):
        await adapter.send(MESSAGE, ADDRESS, DISPATCH)
    assert peer.state.received == []

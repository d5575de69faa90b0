"""FcmPush against the local FCM peer: real OAuth2 JWT-bearer exchange, real error bodies."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from redis.asyncio import Redis

from channels.base import (
    ChannelDeps,
    CredentialsError,
    InvalidAddressError,
    PermanentSendError,
    RetryableSendError,
    SendError,
    ThrottledError,
)
from channels.push_fcm import FcmOptions, FcmPush
from channels.templates import RenderedMessage
from localparts.peers.fcm import STATE, FcmPeerState, create_app
from localparts.peers.server import PeerServer
from records.topics import Category, Dispatch, EventCore, Priority

PROJECT = "campus-app-4711"
EMAIL = "switchboard@campus-app-4711.iam.gserviceaccount.com"
TOKEN = "fcm:" + "dQw4w9WgXcQ:APA91bH" + "x" * 140
MESSAGE = RenderedMessage(
    template="fee_due", channel="push", title="Fee due", body="Pay 120 EUR by Friday",
    link="https://campus.example/fees", params={"amount": "120"},
)


def dispatch(priority: Priority = "normal", category: Category = "transactional") -> Dispatch:
    return Dispatch(
        message_id="m-42", user_id="u1", channel="push", address=TOKEN,
        event=EventCore(
            event_id="e1", app="bursar", type="fee", template="bursar:fee_due", category=category,
            priority=priority,
        ),
        rule_id="r1", rule_version="1",
    )


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Fcm:
    peer: PeerServer
    client: httpx.AsyncClient
    private_pem: str

    @property
    def state(self) -> FcmPeerState:
        return self.peer.app[STATE]

    def options(self, **overrides: object) -> FcmOptions:
        fields: dict[str, object] = {
            "project_id": PROJECT, "client_email": EMAIL, "private_key": self.private_pem,
            "private_key_id": "k1", "token_uri": f"{self.peer.url}/token", "endpoint": self.peer.url,
        }
        return FcmOptions.model_validate({**fields, **overrides})

    def adapter(self, monotonic: Callable[[], float] | None = None, **overrides: object) -> FcmPush:
        if monotonic is None:
            return FcmPush(self.options(**overrides), self.client)
        return FcmPush(self.options(**overrides), self.client, monotonic=monotonic)


@pytest.fixture
async def fcm(rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[Fcm]:
    public = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    app = create_app(project_id=PROJECT, client_email=EMAIL, public_key_pem=public)
    async with PeerServer(app) as peer, httpx.AsyncClient() as client:
        yield Fcm(peer, client, pem(rsa_key))


@pytest.mark.parametrize(
    ("script", "expected", "reason_part"),
    [
        ([], None, ""),
        (["UNREGISTERED"], InvalidAddressError, "UNREGISTERED (HTTP 404)"),
        (["INVALID_TOKEN"], InvalidAddressError, "not a valid FCM registration token"),
        (["INVALID_ARGUMENT"], PermanentSendError, "INVALID_ARGUMENT (HTTP 400)"),
        (["SENDER_ID_MISMATCH"], InvalidAddressError, "SENDER_ID_MISMATCH (HTTP 403)"),
        (["QUOTA_EXCEEDED"], ThrottledError, "QUOTA_EXCEEDED (HTTP 429)"),
        (["UNAVAILABLE"], RetryableSendError, "UNAVAILABLE (HTTP 503)"),
        (["INTERNAL"], RetryableSendError, "INTERNAL (HTTP 500)"),
        (["THIRD_PARTY_AUTH_ERROR"], CredentialsError, "THIRD_PARTY_AUTH_ERROR"),
        (["UNAUTHENTICATED"], None, ""),  # refreshed once, then sent
        (["UNAUTHENTICATED", "UNAUTHENTICATED"], CredentialsError, "UNAUTHENTICATED (HTTP 401)"),
    ],
)
async def test_send_maps_fcm_answers(
    fcm: Fcm, script: list[str], expected: type[SendError] | None, reason_part: str
) -> None:
    fcm.state.script.extend(list(script))
    adapter = fcm.adapter()
    if expected is None:
        result = await adapter.send(MESSAGE, TOKEN, dispatch())
        assert result.status == "sent"
        assert result.provider_message_id.startswith(f"projects/{PROJECT}/messages/0:")
        return
    with pytest.raises(expected) as caught:
        await adapter.send(MESSAGE, TOKEN, dispatch())
    assert type(caught.value) is expected
    assert reason_part in str(caught.value)


async def test_throttled_and_unavailable_carry_retry_after(fcm: Fcm) -> None:
    fcm.state.script.extend(["QUOTA_EXCEEDED", "UNAVAILABLE"])
    adapter = fcm.adapter()
    for _ in range(2):
        with pytest.raises(RetryableSendError) as caught:
            await adapter.send(MESSAGE, TOKEN, dispatch())
        assert caught.value.retry_after == 30.0


async def test_message_carries_token_notification_and_priority(fcm: Fcm) -> None:
    await fcm.adapter(cost_per_message=0.0001).send(MESSAGE, TOKEN, dispatch("urgent"))
    [received] = fcm.state.received
    message = received["json"]["message"]
    assert message["token"] == TOKEN.removeprefix("fcm:")
    assert message["notification"] == {"title": "Fee due", "body": "Pay 120 EUR by Friday"}
    assert message["data"] == {"message_id": "m-42", "amount": "120", "link": "https://campus.example/fees"}
    assert message["android"]["priority"] == "high"
    assert message["apns"]["headers"]["apns-priority"] == "10"
    assert message["android"]["ttl"] == "86400s"
    assert message["fcm_options"]["analytics_label"] == "bursar_fee_due"
    # FCM has no idempotency key; a repeat replaces the first notification on the device instead.
    assert message["android"]["notification"] == {"tag": "m-42.0"}
    assert message["apns"]["headers"]["apns-collapse-id"] == "m-42.0"


async def test_verification_codes_are_not_stored_for_long(fcm: Fcm) -> None:
    await fcm.adapter().send(MESSAGE, TOKEN, dispatch("urgent", "verification"))
    assert fcm.state.received[0]["json"]["message"]["android"]["ttl"] == "300s"


async def test_access_token_is_cached_until_shortly_before_expiry(fcm: Fcm) -> None:
    now = [1_000.0]
    adapter = fcm.adapter(monotonic=lambda: now[0])
    await adapter.send(MESSAGE, TOKEN, dispatch())
    await adapter.send(MESSAGE, TOKEN, dispatch())
    assert fcm.state.token_requests == 1
    now[0] += 3599 - 300 - 1  # still inside the refresh margin
    await adapter.send(MESSAGE, TOKEN, dispatch())
    assert fcm.state.token_requests == 1
    now[0] += 2
    await adapter.send(MESSAGE, TOKEN, dispatch())
    assert fcm.state.token_requests == 2
    bearers = {r["bearer"] for r in fcm.state.received}
    assert len(bearers) == 2


async def test_refresh_on_unauthenticated_happens_once(fcm: Fcm) -> None:
    fcm.state.script.extend(["UNAUTHENTICATED", "UNAUTHENTICATED"])
    with pytest.raises(CredentialsError):
        await fcm.adapter().send(MESSAGE, TOKEN, dispatch())
    assert fcm.state.token_requests == 2
    assert len(fcm.state.received) == 2


async def test_assertion_signed_with_another_key_is_refused(fcm: Fcm) -> None:
    other = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(CredentialsError, match="invalid_grant: Invalid JWT Signature"):
        await fcm.adapter(private_key=other).send(MESSAGE, TOKEN, dispatch())
    assert fcm.state.received == []


async def test_tampered_bearer_is_refused(fcm: Fcm) -> None:
    async def tamper(request: httpx.Request) -> None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            last = "A" if auth[-1] != "A" else "B"
            request.headers["Authorization"] = auth[:-1] + last

    async with httpx.AsyncClient(event_hooks={"request": [tamper]}) as client:
        adapter = FcmPush(fcm.options(), client)
        with pytest.raises(CredentialsError, match="UNAUTHENTICATED"):
            await adapter.send(MESSAGE, TOKEN, dispatch())


async def test_unreachable_peer_is_retryable(fcm: Fcm) -> None:
    adapter = fcm.adapter(token_uri="http://127.0.0.1:9/token")
    with pytest.raises(RetryableSendError, match="unreachable"):
        await adapter.send(MESSAGE, TOKEN, dispatch())


async def test_secrets_never_leak(fcm: Fcm, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = fcm.adapter()
    await adapter.send(MESSAGE, TOKEN, dispatch())
    access_token = next(iter(fcm.state.tokens))
    fcm.state.script.extend(["UNAUTHENTICATED", "UNAUTHENTICATED"])
    with pytest.raises(CredentialsError) as caught:
        await adapter.send(MESSAGE, TOKEN, dispatch())
    key_body = fcm.private_pem.splitlines()[1]
    seen = [repr(adapter), repr(fcm.options()), str(caught.value), caplog.text]
    for text in seen:
        assert key_body not in text
        assert access_token not in text
    assert "**********" in repr(fcm.options())


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"project_id": "Bad Project"}, "project_id 'Bad Project'"),
        ({"client_email": "nobody"}, "client_email 'nobody'"),
        ({"endpoint": "ftp://x"}, "endpoint 'ftp://x'"),
        ({"private_key": "not a key"}, "private_key is not an unencrypted PEM"),
        ({"private_key": "EC"}, "needs an RSA key"),
    ],
)
def test_bad_options_fail_fast_without_echoing_the_key(
    fcm: Fcm, overrides: dict[str, object], complaint: str
) -> None:
    if overrides.get("private_key") == "EC":
        overrides = {"private_key": pem(ec.generate_private_key(ec.SECP256R1()))}
    with pytest.raises(ValueError, match=complaint) as caught:
        fcm.adapter(**overrides)
    assert "PRIVATE KEY" not in str(caught.value)


def test_from_service_account_and_from_options(fcm: Fcm) -> None:
    info = {
        "type": "service_account", "project_id": PROJECT, "private_key_id": "k1",
        "private_key": fcm.private_pem, "client_email": EMAIL, "client_id": "1",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": f"{fcm.peer.url}/token",
    }
    options = FcmOptions.from_service_account(info, endpoint=fcm.peer.url)
    adapter = FcmPush.from_options(options, ChannelDeps(http=fcm.client, redis=Redis()))
    assert adapter.accepts(TOKEN)
    assert not adapter.accepts("apns:abcd") and not adapter.accepts("fcm:")
    with pytest.raises(ValueError, match="not 'service_account'"):
        FcmOptions.from_service_account({**info, "type": "authorized_user"})


async def test_foreign_address_is_invalid(fcm: Fcm) -> None:
    with pytest.raises(InvalidAddressError, match="fcm:<registration token>"):
        await fcm.adapter().send(MESSAGE, "jpush:123", dispatch())

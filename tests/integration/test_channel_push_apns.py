"""ApnsPush against the local APNs peer: HTTP/2 over TLS, ES256 provider tokens, APNs' real reasons."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr
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
from channels.push_apns import ApnsOptions, ApnsPush
from channels.templates import RenderedMessage
from localparts.peers.apns import (
    ApnsPeer,
    ApnsPeerState,
    ThreadedApnsPeer,
    create_app,
    write_self_signed_certificate,
)
from records.topics import Category, Dispatch, EventCore, Priority

TEAM, KEY_ID, TOPIC = "DEF123GHIJ", "ABC123DEFG", "edu.campus.app"
DEVICE = "a" * 64
ADDRESS = f"apns:{DEVICE}"
MESSAGE = RenderedMessage(
    template="alert", channel="push", title="Campus alert", body="East building closed", link="https://c.example/a",
)


def dispatch(priority: Priority = "normal", category: Category = "alert") -> Dispatch:
    return Dispatch(
        message_id="m-99", user_id="u1", channel="push", address=ADDRESS,
        event=EventCore(
            event_id="e1", app="security", type="alert", template="alert",
            category=category, priority=priority,
        ),
        rule_id="r1", rule_version="1",
    )


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_self_signed_certificate(tmp_path_factory.mktemp("apns"))


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Apns:
    peer: ApnsPeer
    cert_file: Path
    private_pem: str
    adapters: list[ApnsPush]

    @property
    def state(self) -> ApnsPeerState:
        return self.peer.app.state

    def options(self, **overrides: object) -> ApnsOptions:
        fields = {
            "team_id": TEAM, "key_id": KEY_ID, "private_key": self.private_pem, "topic": TOPIC,
            "endpoint": self.peer.url, "ca_file": str(self.cert_file), **overrides,
        }
        return ApnsOptions.model_validate(fields)

    def adapter(
        self, client: httpx.AsyncClient | None = None, monotonic: Callable[[], float] | None = None,
        **overrides: object,
    ) -> ApnsPush:
        if monotonic is None:
            adapter = ApnsPush(self.options(**overrides), client)
        else:
            adapter = ApnsPush(self.options(**overrides), client, monotonic=monotonic)
        self.adapters.append(adapter)
        return adapter


@pytest.fixture
async def apns(
    certificate: tuple[Path, Path], signing_key: ec.EllipticCurvePrivateKey
) -> AsyncIterator[Apns]:
    public = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    app = create_app(team_id=TEAM, key_id=KEY_ID, public_key_pem=public, topic=TOPIC)
    async with ApnsPeer(app, *certificate) as peer:
        fixture = Apns(peer, certificate[0], pem(signing_key), [])
        yield fixture
        for adapter in fixture.adapters:
            await adapter.close()


@pytest.mark.parametrize(
    ("script", "expected", "reason_part"),
    [
        ([], None, ""),
        (["BadDeviceToken"], InvalidAddressError, "apns BadDeviceToken (HTTP 400)"),
        (["Unregistered"], InvalidAddressError, "apns Unregistered (HTTP 410)"),
        (["DeviceTokenNotForTopic"], InvalidAddressError, "DeviceTokenNotForTopic"),
        (["ExpiredProviderToken"], None, ""),  # refreshed once, then sent
        (["InvalidProviderToken"], None, ""),
        (["ExpiredProviderToken"] * 2, CredentialsError, "ExpiredProviderToken (HTTP 403)"),
        (["InvalidProviderToken"] * 2, CredentialsError, "InvalidProviderToken (HTTP 403)"),
        (["BadCertificateEnvironment"], CredentialsError, "BadCertificateEnvironment"),
        (["TooManyRequests"], ThrottledError, "apns TooManyRequests (HTTP 429)"),
        (["TooManyProviderTokenUpdates"], ThrottledError, "TooManyProviderTokenUpdates"),
        (["PayloadTooLarge"], PermanentSendError, "PayloadTooLarge (HTTP 413)"),
        (["BadCollapseId"], PermanentSendError, "BadCollapseId (HTTP 400)"),
        (["InternalServerError"], RetryableSendError, "InternalServerError (HTTP 500)"),
        (["ServiceUnavailable"], RetryableSendError, "ServiceUnavailable (HTTP 503)"),
        (["Shutdown"], RetryableSendError, "Shutdown (HTTP 503)"),
    ],
)
async def test_send_maps_apns_answers(
    apns: Apns, script: list[str], expected: type[SendError] | None, reason_part: str
) -> None:
    apns.state.script.extend(script)
    adapter = apns.adapter(cost_per_message=0.0)
    if expected is None:
        result = await adapter.send(MESSAGE, ADDRESS, dispatch())
        assert result.status == "sent"
        assert result.provider_message_id == apns.state.received[-1]["headers"]["apns-id"]
    else:
        with pytest.raises(expected) as caught:
            await adapter.send(MESSAGE, ADDRESS, dispatch())
        assert type(caught.value) is expected
        assert reason_part in str(caught.value)
    assert {r["http_version"] for r in apns.state.received} == {"2"}


async def test_request_carries_apns_headers_and_payload(apns: Apns) -> None:
    await apns.adapter().send(MESSAGE, ADDRESS, dispatch("urgent", "verification"))
    [received] = apns.state.received
    assert received["http_version"] == "2"
    assert received["path"] == f"/3/device/{DEVICE}"
    headers = received["headers"]
    assert headers["apns-topic"] == TOPIC
    assert (headers["apns-push-type"], headers["apns-priority"]) == ("alert", "10")
    assert headers["apns-collapse-id"] == "m-99"
    # The notification's id is derived from the send, so a repeat is recognisably the same one.
    assert headers["apns-id"] == str(uuid.uuid5(uuid.NAMESPACE_URL, "m-99/0"))
    assert headers["authorization"].startswith("bearer ")
    assert json.loads(received["payload"]) == {
        "aps": {"alert": {"title": "Campus alert", "body": "East building closed"}, "sound": "default"},
        "message_id": "m-99", "link": "https://c.example/a",
    }
    # A verification code expires within minutes, not the default day.
    await apns.adapter().send(MESSAGE, ADDRESS, dispatch("low", "notice"))
    later = apns.state.received[1]["headers"]
    assert int(later["apns-expiration"]) - int(headers["apns-expiration"]) > 80_000
    assert later["apns-priority"] == "5"


async def test_same_message_keeps_its_apns_id(apns: Apns) -> None:
    adapter = apns.adapter()
    first = await adapter.send(MESSAGE, ADDRESS, dispatch())
    second = await adapter.send(MESSAGE, ADDRESS, dispatch())
    assert first.provider_message_id == second.provider_message_id


async def test_provider_token_is_reused_then_refreshed_after_fifty_minutes(apns: Apns) -> None:
    now = [100.0]
    adapter = apns.adapter(monotonic=lambda: now[0])
    await adapter.send(MESSAGE, ADDRESS, dispatch())
    now[0] += 2999
    await adapter.send(MESSAGE, ADDRESS, dispatch())
    assert len(apns.state.provider_tokens) == 1
    now[0] += 2
    await adapter.send(MESSAGE, ADDRESS, dispatch())
    assert len({r["headers"]["authorization"] for r in apns.state.received}) == 2


async def test_key_apple_does_not_know_is_refused_after_one_refresh(apns: Apns) -> None:
    other = pem(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CredentialsError, match="InvalidProviderToken"):
        await apns.adapter(private_key=other).send(MESSAGE, ADDRESS, dispatch())
    assert len(apns.state.received) == 2


async def test_refresh_within_twenty_minutes_is_throttled_by_apns(apns: Apns) -> None:
    apns.state.min_token_interval = 1200
    adapter = apns.adapter()
    await adapter.send(MESSAGE, ADDRESS, dispatch())
    apns.state.script.append("ExpiredProviderToken")
    with pytest.raises(ThrottledError, match="TooManyProviderTokenUpdates"):
        await adapter.send(MESSAGE, ADDRESS, dispatch())
    assert len(apns.state.provider_tokens) == 1


async def test_tampered_signature_is_refused(apns: Apns) -> None:
    async def tamper(request: httpx.Request) -> None:
        auth = request.headers["authorization"]
        middle = len(auth) - 20  # a byte inside the signature
        flipped = "A" if auth[middle] != "A" else "B"
        request.headers["authorization"] = auth[:middle] + flipped + auth[middle + 1:]

    context = ssl.create_default_context(cafile=str(apns.cert_file))
    async with httpx.AsyncClient(http2=True, verify=context, event_hooks={"request": [tamper]}) as client:
        with pytest.raises(CredentialsError, match="InvalidProviderToken"):
            await apns.adapter(client=client).send(MESSAGE, ADDRESS, dispatch())


async def test_unregistered_device_is_an_invalid_address(apns: Apns) -> None:
    apns.state.unregistered.add(DEVICE)
    with pytest.raises(InvalidAddressError, match="Unregistered"):
        await apns.adapter().send(MESSAGE, ADDRESS, dispatch())


@pytest.mark.parametrize("address", ["apns:xyz", "apns:" + "a" * 10, "fcm:" + "a" * 64, "apns:"])
async def test_malformed_device_tokens_never_reach_apns(apns: Apns, address: str) -> None:
    with pytest.raises(InvalidAddressError, match="apns:<device token in hex>"):
        await apns.adapter().send(MESSAGE, address, dispatch())
    assert apns.state.received == []


async def test_payload_over_4096_bytes_is_refused_before_sending(apns: Apns) -> None:
    big = MESSAGE.model_copy(update={"body": "x" * 5000})
    with pytest.raises(PermanentSendError, match="over APNs' 4096"):
        await apns.adapter().send(big, ADDRESS, dispatch())
    assert apns.state.received == []


async def test_untrusted_certificate_is_a_connection_failure(apns: Apns, tmp_path: Path) -> None:
    stranger, _ = write_self_signed_certificate(tmp_path)
    with pytest.raises(RetryableSendError, match="connection failed"):
        await apns.adapter(ca_file=str(stranger)).send(MESSAGE, ADDRESS, dispatch())


async def test_secrets_never_leak(apns: Apns, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = apns.adapter()
    await adapter.send(MESSAGE, ADDRESS, dispatch())
    apns.state.script.extend(["ExpiredProviderToken", "ExpiredProviderToken"])
    with pytest.raises(CredentialsError) as caught:
        await adapter.send(MESSAGE, ADDRESS, dispatch())
    key_body = apns.private_pem.splitlines()[1]
    tokens = [r["headers"]["authorization"].removeprefix("bearer ") for r in apns.state.received]
    for text in (repr(adapter), repr(apns.options()), str(caught.value), caplog.text):
        assert key_body not in text
        assert not any(token in text for token in tokens)


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"team_id": "team"}, "team_id 'team'"),
        ({"key_id": "ABC"}, "key_id 'ABC'"),
        ({"topic": "not a bundle"}, "topic 'not a bundle'"),
        ({"endpoint": "http://api.push.apple.com"}, "not an https URL"),
        ({"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, "PEM"),
        ({"private_key": "RSA"}, "P-256 EC key"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file '/nonexistent/ca.pem' cannot be loaded"),
    ],
)
def test_bad_options_fail_fast_without_echoing_the_key(
    apns: Apns, overrides: dict[str, object], complaint: str
) -> None:
    if overrides.get("private_key") == "RSA":
        overrides = {"private_key": pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))}
    with pytest.raises(ValueError, match=complaint) as caught:
        ApnsPush(apns.options(**overrides))
    assert apns.private_pem.splitlines()[1] not in str(caught.value)


async def test_from_options_builds_its_own_http2_client(apns: Apns) -> None:
    async with httpx.AsyncClient() as http1:
        adapter = ApnsPush.from_options(apns.options(), ChannelDeps(http=http1, redis=Redis()))
        try:
            assert adapter.accepts(ADDRESS) and not adapter.accepts("jpush:abc")
            await adapter.send(MESSAGE, ADDRESS, dispatch())
        finally:
            await adapter.close()
    assert apns.state.received[0]["http_version"] == "2"


def test_threaded_peer_serves_callers_without_a_loop(
    certificate: tuple[Path, Path], signing_key: ec.EllipticCurvePrivateKey
) -> None:
    public = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    app = create_app(team_id=TEAM, key_id=KEY_ID, public_key_pem=public, topic=TOPIC)
    peer = ThreadedApnsPeer(app, *certificate).start()
    try:
        options = ApnsOptions(
            team_id=TEAM, key_id=KEY_ID, private_key=SecretStr(pem(signing_key)), topic=TOPIC,
            endpoint=peer.url, ca_file=str(certificate[0]),
        )

        async def send_once() -> str:
            adapter = ApnsPush(options)
            try:
                return (await adapter.send(MESSAGE, ADDRESS, dispatch())).provider_message_id
            finally:
                await adapter.close()

        assert asyncio.run(send_once()) == app.state.received[0]["headers"]["apns-id"]
    finally:
        peer.stop()

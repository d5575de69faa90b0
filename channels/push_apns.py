"""Apple Push Notification service over HTTP/2 with token auth (an ES256 JWT from a .p8 key).

Addresses are written `apns:<device token hex>`. The provider token is reused for ~50 minutes: APNs
refuses tokens older than an hour and answers TooManyProviderTokenUpdates to refreshes under 20
minutes apart. APNs sends no delivery callbacks; its `apns-id` is the provider message id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import Field, SecretStr

from channels.base import (
    Channel,
    ChannelDeps,
    CredentialsError,
    InvalidAddressError,
    PermanentSendError,
    ProviderOptions,
    RetryableSendError,
    SendResult,
    ThrottledError,
)
from channels.templates import RenderedMessage
from records.topics import Dispatch

# hpack logs every HTTP/2 header value at DEBUG unless marked sensitive, which httpx does not do:
# keep that logger above DEBUG so provider tokens never reach the logs.
logging.getLogger("hpack").setLevel(logging.INFO)

PREFIX = "apns:"
MAX_PAYLOAD = 4096
_APPLE_ID = re.compile(r"^[A-Z0-9]{10}$")
_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9](\.(voip|complication|pushkit\.fileprovider))?$")
_DEVICE_TOKEN = re.compile(r"^[0-9a-fA-F]{64,200}$")
_INVALID_ADDRESS = {"BadDeviceToken", "Unregistered", "ExpiredToken", "DeviceTokenNotForTopic"}
_TOKEN_REFUSED = {"ExpiredProviderToken", "InvalidProviderToken"}
_CREDENTIALS = {"MissingProviderToken", "BadCertificate", "BadCertificateEnvironment", "Forbidden"}
_THROTTLED = {"TooManyRequests", "TooManyProviderTokenUpdates"}
# Verification codes are worthless after a few minutes: APNs should not store them longer.
_SHORT_LIVED = {"verification": 300}

PushType = Literal[
    "alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity",
    "pushtotalk",
]


class ApnsOptions(ProviderOptions):
    """One APNs signing key (team, key id, .p8 PEM) for one app topic (its bundle id)."""

    team_id: str
    key_id: str
    private_key: SecretStr
    topic: str
    endpoint: str = "https://api.push.apple.com"
    """https://api.sandbox.push.apple.com for development builds."""
    ca_file: str | None = None
    """A CA bundle to trust instead of the system's (the local peer's self-signed certificate)."""
    push_type: PushType = "alert"
    expiration_seconds: int = Field(default=86_400, ge=0, le=2_592_000)
    token_refresh_seconds: float = Field(default=3000.0, ge=1200.0, lt=3600.0)
    timeout: float = Field(default=10.0, gt=0)
    cost_per_message: float = Field(default=0.0, ge=0)


@dataclass
class _ProviderToken:
    value: str
    issued_at: float
    """Monotonic seconds."""


class ApnsPush(Channel):
    """Notifications to iOS devices of one app, over one HTTP/2 connection the adapter owns."""

    channel = "push"
    provider = "apns"
    options_model = ApnsOptions

    def __init__(
        self,
        options: ApnsOptions,
        client: httpx.AsyncClient | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        for name in ("team_id", "key_id"):
            value = getattr(options, name)
            if not _APPLE_ID.match(value):
                raise ValueError(f"apns {name} {value!r} is not 10 upper-case letters or digits")
        if not _TOPIC.match(options.topic):
            raise ValueError(f"apns topic {options.topic!r} is not a bundle id")
        if not options.endpoint.startswith("https://"):
            raise ValueError(f"apns endpoint {options.endpoint!r} is not an https URL")
        try:
            key = load_pem_private_key(options.private_key.get_secret_value().encode(), password=None)
        except (ValueError, TypeError):
            raise ValueError("apns private_key is not an unencrypted PEM (.p8) private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("apns private_key must be the P-256 EC key of an APNs auth key (.p8)")
        self._options = options
        self._key = key
        self._monotonic = monotonic
        self._owns_client = client is None
        # APNs speaks HTTP/2 only; a shared HTTP/1.1 client cannot be used, so the adapter owns one.
        self._client = client or httpx.AsyncClient(
            http2=True, verify=_verify(options.ca_file), timeout=httpx.Timeout(options.timeout)
        )
        self._timeout = httpx.Timeout(options.timeout)
        self._base = options.endpoint.rstrip("/") + "/3/device/"
        self._token: _ProviderToken | None = None
        self._token_lock = asyncio.Lock()

    @classmethod
    def from_options(cls, options: ProviderOptions, deps: ChannelDeps) -> ApnsPush:
        """Built with its own HTTP/2 client (`deps.http` is not used)."""
        return cls(cls.own_options(options, ApnsOptions))

    def accepts(self, address: str) -> bool:
        return address.startswith(PREFIX) and len(address) > len(PREFIX)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        device_token = address[len(PREFIX):] if self.accepts(address) else ""
        if not _DEVICE_TOKEN.match(device_token):
            raise InvalidAddressError(f"apns address must be 'apns:<device token in hex>', got {address!r}")
        payload = json.dumps(self._payload(message, dispatch), ensure_ascii=False).encode()
        if len(payload) > MAX_PAYLOAD:
            raise PermanentSendError(f"apns payload is {len(payload)} bytes, over APNs' {MAX_PAYLOAD}")
        token = await self._provider_token()
        response = await self._post(device_token, payload, dispatch, token)
        reason = _reason(response)
        if reason in _TOKEN_REFUSED:
            # A token APNs calls expired or invalid is replaced once; a second refusal is for an operator.
            token = await self._provider_token(refused=token)
            response = await self._post(device_token, payload, dispatch, token)
            reason = _reason(response)
        if response.status_code == 200:
            apns_id = response.headers.get("apns-id", "")
            return SendResult(status="sent", provider_message_id=apns_id, cost=self._options.cost_per_message)
        raise _send_error(response, reason)

    def _payload(self, message: RenderedMessage, dispatch: Dispatch) -> dict[str, Any]:
        custom: dict[str, Any] = {"message_id": dispatch.message_id, **message.params}
        if message.link:
            custom["link"] = message.link
        if message.page:
            custom["page"] = message.page
        if self._options.push_type == "background":
            return {"aps": {"content-available": 1}, **custom}
        alert = {"title": message.title, "body": message.body or message.text}
        return {"aps": {"alert": alert, "sound": "default"}, **custom}

    def _headers(self, dispatch: Dispatch, token: str) -> dict[str, str]:
        event = dispatch.event
        background = self._options.push_type == "background"
        lifetime = _SHORT_LIVED.get(event.category, self._options.expiration_seconds)
        return {
            "authorization": f"bearer {token}",
            "apns-topic": self._options.topic,
            "apns-push-type": self._options.push_type,
            # Background pushes must be 5; alerts wake the device at once only when urgent.
            "apns-priority": "10" if event.priority in ("urgent", "high") and not background else "5",
            "apns-expiration": str(int(time.time()) + lifetime) if lifetime else "0",
            # A redelivered copy of the same message replaces itself on the device instead of stacking.
            "apns-collapse-id": dispatch.message_id.encode()[:64].decode(errors="ignore"),
            "apns-id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{dispatch.message_id}/{dispatch.step}")),
        }

    async def _post(
        self, device_token: str, payload: bytes, dispatch: Dispatch, token: str
    ) -> httpx.Response:
        try:
            return await self._client.post(
                self._base + device_token, content=payload, headers=self._headers(dispatch, token),
                timeout=self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"apns timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise RetryableSendError(f"apns connection failed: {type(exc).__name__}: {exc}") from exc

    async def _provider_token(self, refused: str | None = None) -> str:
        """The current token, or a new one when it is due or is the `refused` one."""
        async with self._token_lock:
            current = self._token
            age = self._monotonic() - current.issued_at if current else 0.0
            if current is not None and current.value != refused and age < self._options.token_refresh_seconds:
                return current.value
            value = jwt.encode(
                {"iss": self._options.team_id, "iat": int(time.time())}, self._key, algorithm="ES256",
                headers={"kid": self._options.key_id},
            )
            self._token = _ProviderToken(value, self._monotonic())
            return value


def _verify(ca_file: str | None) -> ssl.SSLContext | bool:
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"apns ca_file {ca_file!r} cannot be loaded: {exc}") from exc


def _reason(response: httpx.Response) -> str:
    if response.status_code == 200:
        return ""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    return str(body.get("reason", "")) if isinstance(body, dict) else ""


def _send_error(response: httpx.Response, reason: str) -> Exception:
    """The error class of one APNs refusal, from its reason, else its HTTP status."""
    http = response.status_code
    text = f"apns {reason or 'error'} (HTTP {http})"
    if reason in _INVALID_ADDRESS or http == 410:
        return InvalidAddressError(text)
    if reason in _TOKEN_REFUSED or reason in _CREDENTIALS or http == 403:
        return CredentialsError(text)
    if reason in _THROTTLED or http == 429:
        return ThrottledError(text)
    if http >= 500:
        return RetryableSendError(text)
    return PermanentSendError(text)

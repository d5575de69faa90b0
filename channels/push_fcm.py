"""Firebase Cloud Messaging, HTTP v1: a service account's signed JWT buys an OAuth2 token, cached.

Addresses are written `fcm:<registration token>`. FCM pushes no delivery callbacks to servers (its
delivery data goes to BigQuery), so this adapter reports `sent` and nothing later.

FCM's send API has no idempotency key: a send repeated after a lost answer reaches the device twice.
What it has is on the device: an Android notification `tag` and the APNs `apns-collapse-id`, both
set to the message id and step, so a repeated notification replaces the first on screen instead of
showing twice. (`collapse_key` is not used: FCM keeps only four per offline device.)
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
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
    idempotency_key,
)
from channels.templates import RenderedMessage
from records.topics import Dispatch

PREFIX = "fcm:"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Refresh this long before the token's own expiry, so a token never dies in flight.
REFRESH_MARGIN = 300.0
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$")
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
_URGENT = {"urgent", "high"}
_LABEL_FORBIDDEN = re.compile(r"[^A-Za-z0-9\-_.~%]")  # FCM's analytics_label alphabet
# Verification codes are worthless after a few minutes: FCM should not store them longer.
_SHORT_LIVED = {"verification": 300}


class FcmOptions(ProviderOptions):
    """The service account's fields FCM needs, and where to send (tests point both URLs at a peer)."""

    project_id: str
    client_email: str
    private_key: SecretStr
    private_key_id: str = ""
    token_uri: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
    endpoint: str = "https://fcm.googleapis.com"
    timeout: float = Field(default=10.0, gt=0)
    ttl_seconds: int = Field(default=86_400, ge=0, le=2_419_200)
    cost_per_message: float = Field(default=0.0, ge=0)

    @classmethod
    def from_service_account(cls, info: Mapping[str, Any], **overrides: Any) -> FcmOptions:
        """Options from a downloaded service-account JSON (its other keys are ignored)."""
        if info.get("type", "service_account") != "service_account":
            raise ValueError(f"fcm credentials are of type {info.get('type')!r}, not 'service_account'")
        keys = ("project_id", "client_email", "private_key", "private_key_id", "token_uri")
        return cls.model_validate({**{k: info[k] for k in keys if k in info}, **overrides})


@dataclass
class _AccessToken:
    value: str
    refresh_at: float


class FcmPush(Channel):
    """One Firebase project; sends one message per registration token."""

    channel = "push"
    provider = "fcm"
    options_model = FcmOptions

    def __init__(
        self,
        options: FcmOptions,
        client: httpx.AsyncClient,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not _PROJECT_ID.match(options.project_id):
            raise ValueError(f"fcm project_id {options.project_id!r} is not a Google Cloud project id")
        if "@" not in options.client_email:
            raise ValueError(f"fcm client_email {options.client_email!r} is not a service-account email")
        for name in ("token_uri", "endpoint"):
            url = getattr(options, name)
            if not url.startswith(("https://", "http://")):
                raise ValueError(f"fcm {name} {url!r} is not an http(s) URL")
        try:
            key = load_pem_private_key(options.private_key.get_secret_value().encode(), password=None)
        except (ValueError, TypeError):
            raise ValueError("fcm private_key is not an unencrypted PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"fcm private_key is a {type(key).__name__}, RS256 needs an RSA key")
        self._options = options
        self._key = key
        self._client = client
        self._monotonic = monotonic  # for the cache; token claims use wall time
        self._timeout = httpx.Timeout(options.timeout)
        self._url = f"{options.endpoint.rstrip('/')}/v1/projects/{options.project_id}/messages:send"
        self._token: _AccessToken | None = None
        self._token_lock = asyncio.Lock()

    @classmethod
    def from_options(cls, options: ProviderOptions, deps: ChannelDeps) -> FcmPush:
        return cls(cls.own_options(options, FcmOptions), deps.http)

    def accepts(self, address: str) -> bool:
        return address.startswith(PREFIX) and len(address) > len(PREFIX)

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        if not self.accepts(address):
            raise InvalidAddressError(
                f"fcm address must look like 'fcm:<registration token>', got {address!r}"
            )
        body = self._body(message, address[len(PREFIX):], dispatch)
        token = await self._access_token()
        response = await self._post(body, token)
        if response.status_code == 401 and _fcm_code(response) != "THIRD_PARTY_AUTH_ERROR":
            # Tokens can be revoked before their expiry: fetch a new one, once, then give up.
            token = await self._access_token(stale=token)
            response = await self._post(body, token)
        if response.status_code == 200:
            name = _json(response).get("name")
            if not isinstance(name, str) or not name:
                raise RetryableSendError(f"fcm answered 200 without a message name: {response.text[:200]!r}")
            return SendResult(status="sent", provider_message_id=name, cost=self._options.cost_per_message)
        raise _send_error(response)

    def _body(self, message: RenderedMessage, token: str, dispatch: Dispatch) -> dict[str, Any]:
        data = {"message_id": dispatch.message_id, **message.params}
        if message.link:
            data["link"] = message.link
        if message.page:
            data["page"] = message.page
        urgent = dispatch.event.priority in _URGENT
        ttl = min(self._options.ttl_seconds, _SHORT_LIVED.get(dispatch.event.category, 2_419_200))
        label = _LABEL_FORBIDDEN.sub("_", dispatch.event.template)[:50]
        # APNs takes at most 64 bytes of collapse id; message ids are 24 hex characters.
        key = idempotency_key(dispatch).encode()[:64].decode(errors="ignore")
        return {
            "message": {
                "token": token,
                "notification": {"title": message.title, "body": message.body or message.text},
                "data": data,
                "android": {
                    "priority": "high" if urgent else "normal",
                    # No collapse_key: FCM keeps only four distinct keys per offline device.
                    "ttl": f"{ttl}s",
                    "notification": {"tag": key},
                },
                "apns": {"headers": {"apns-priority": "10" if urgent else "5", "apns-collapse-id": key}},
                "fcm_options": {"analytics_label": label},
            }
        }

    async def _post(self, body: dict[str, Any], token: str) -> httpx.Response:
        try:
            return await self._client.post(
                self._url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"fcm timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise RetryableSendError(f"fcm connection failed: {type(exc).__name__}: {exc}") from exc

    async def _access_token(self, stale: str | None = None) -> str:
        """The cached token, or a new one if it is due for refresh or is the `stale` one just refused."""
        async with self._token_lock:
            cached = self._token
            if cached is not None and cached.value != stale and self._monotonic() < cached.refresh_at:
                return cached.value
            self._token = await self._fetch_token()
            return self._token.value

    async def _fetch_token(self) -> _AccessToken:
        now = time.time()
        headers = {"kid": self._options.private_key_id} if self._options.private_key_id else None
        claims = {
            "iss": self._options.client_email,
            "scope": SCOPE,
            "aud": self._options.token_uri,
            "iat": int(now),
            "exp": int(now) + 3600,
        }
        assertion = jwt.encode(claims, self._key, algorithm="RS256", headers=headers)
        try:
            response = await self._client.post(
                self._options.token_uri,
                data={"grant_type": GRANT_TYPE, "assertion": assertion},
                timeout=self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"fcm token endpoint timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise RetryableSendError(f"fcm token endpoint unreachable: {type(exc).__name__}: {exc}") from exc
        answer = _json(response)
        if response.status_code == 200 and isinstance(answer.get("access_token"), str):
            lifetime = float(answer.get("expires_in", 3600))
            refresh_in = max(lifetime - REFRESH_MARGIN, lifetime / 2)
            return _AccessToken(answer["access_token"], self._monotonic() + refresh_in)
        # OAuth errors are {"error": "invalid_grant", "error_description": "..."}; never echo the body whole.
        reason = f"fcm token endpoint answered HTTP {response.status_code}: " + ": ".join(
            str(answer[k]) for k in ("error", "error_description") if k in answer
        )
        if response.status_code >= 500 or response.status_code == 429:
            raise RetryableSendError(reason, retry_after=_retry_after(response))
        raise CredentialsError(reason)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _error(response: httpx.Response) -> dict[str, Any]:
    error = _json(response).get("error")
    return error if isinstance(error, dict) else {}


def _fcm_code(response: httpx.Response) -> str:
    """The `FcmError` code of a failure, else its canonical status (`UNAUTHENTICATED`, ...)."""
    error = _error(response)
    details = [d for d in error.get("details", []) if isinstance(d, dict)]
    code = next((str(d.get("errorCode")) for d in details if d.get("@type") == _FCM_ERROR_TYPE), "")
    return code or str(error.get("status", "")) or f"HTTP {response.status_code}"


def _send_error(response: httpx.Response) -> Exception:
    """The error class of one FCM failure, from its `FcmError` code or else its canonical status."""
    error = _error(response)
    code = _fcm_code(response)
    reason = f"fcm {code} (HTTP {response.status_code}): {error.get('message', response.reason_phrase)}"
    http = response.status_code
    if code in ("UNREGISTERED", "SENDER_ID_MISMATCH") or (code == "INVALID_ARGUMENT" and _bad_token(error)):
        return InvalidAddressError(reason)
    if code in ("QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED") or http == 429:
        return ThrottledError(reason, retry_after=_retry_after(response))
    if code in ("UNAVAILABLE", "INTERNAL") or http >= 500:
        return RetryableSendError(reason, retry_after=_retry_after(response))
    if code in ("THIRD_PARTY_AUTH_ERROR", "UNAUTHENTICATED", "PERMISSION_DENIED") or http in (401, 403):
        return CredentialsError(reason)
    return PermanentSendError(reason)


def _bad_token(error: Mapping[str, Any]) -> bool:
    """Whether an INVALID_ARGUMENT is about the registration token rather than the message."""
    for detail in error.get("details", []):
        if isinstance(detail, dict) and detail.get("@type") == _BAD_REQUEST_TYPE:
            fields = [v.get("field") for v in detail.get("fieldViolations", []) if isinstance(v, dict)]
            if "message.token" in fields:
                return True
    return "registration token" in str(error.get("message", "")).lower()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None

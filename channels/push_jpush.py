"""JPush (极光推送) REST API v3: `POST /v3/push` to one registration id, HTTP Basic appKey:masterSecret.

Each push carries a `cid` bound to its message id and step (channels/push_jpush_cid.py), JPush's
deduplication key: a retry after a lost answer is answered, not pushed again.

Addresses are written `jpush:<registration id>`. Delivery and click receipts reach the API as JPush's
callback: a POST carrying the same Basic credentials as the push API (JPush's documented default),
with a JSON list of records `{"type": 4|5|6, "msgid": ..., "registration_id": ...}`.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr
from redis.asyncio import Redis

from channels.base import (
    CallbackRejected,
    CallbackReply,
    CallbackRequest,
    Channel,
    ChannelDeps,
    CredentialsError,
    InvalidAddressError,
    PermanentSendError,
    ProviderOptions,
    ProviderReceipt,
    RetryableSendError,
    SendResult,
    ThrottledError,
    idempotency_key,
)
from channels.push_jpush_cid import JPushCids
from channels.templates import RenderedMessage
from records.topics import Dispatch

PREFIX = "jpush:"
_APP_KEY = re.compile(r"^[0-9A-Za-z]{16,32}$")  # JPush issues 24 hex characters
_REGISTRATION_ID = re.compile(r"^[0-9A-Za-z]{6,64}$")
# JPush's codes, grouped by what the base should do about them.
_BAD_AUDIENCE = {1011}  # cannot find user by this audience (or inactive for more than 255 days)
_CREDENTIALS = {1004, 1008, 2003, 2004}  # auth failed, bad app key, app restricted, no permission
_THROTTLED = {2002, 2005, 2008}  # API rate limit, daily volume limit, broadcast frequency limit
_TRANSIENT = {1000, 1030}  # internal error, internal timeout
# Verification codes are worthless after a few minutes: JPush should not keep them for offline devices.
_SHORT_LIVED = {"verification": 300}
# Callback record types (documented for JPush's VIP callbacks): 4 delivered, 5 not delivered, 6 clicked.
_RECEIPT_TYPES: dict[int, Literal["delivered", "failed", "clicked"]] = {
    4: "delivered", 5: "failed", 6: "clicked",
}


class JPushOptions(ProviderOptions):
    """One JPush application; `endpoint` is https://api.jpush.cn (tests point it at the peer)."""

    app_key: str
    master_secret: SecretStr
    endpoint: str = "https://api.jpush.cn"
    apns_production: bool = True
    time_to_live: int = Field(default=86_400, ge=0, le=864_000)
    timeout: float = Field(default=10.0, gt=0)
    cost_per_message: float = Field(default=0.0, ge=0)
    cid_batch: int = Field(default=10, ge=1, le=1000)
    """cids fetched per `GET /v3/push/cid` (JPush allows 10 to ordinary apps, 1000 to VIP ones)."""


class JPush(Channel):
    """Notifications to Android and iOS devices registered with JPush."""

    channel = "push"
    provider = "jpush"
    options_model = JPushOptions

    def __init__(self, options: JPushOptions, client: httpx.AsyncClient, redis: Redis | None = None) -> None:
        """With `redis`, every push carries a cid bound to its send (JPush deduplicates on it)."""
        if not _APP_KEY.match(options.app_key):
            raise ValueError(f"jpush app_key {options.app_key!r} is not an app key (16-32 letters or digits)")
        if len(options.master_secret.get_secret_value()) < 8:
            raise ValueError("jpush master_secret is missing or too short")
        if not options.endpoint.startswith(("https://", "http://")):
            raise ValueError(f"jpush endpoint {options.endpoint!r} is not an http(s) URL")
        self._options = options
        self._client = client
        self._url = options.endpoint.rstrip("/") + "/v3/push"
        self._timeout = httpx.Timeout(options.timeout)
        self._auth = "Basic " + base64.b64encode(
            f"{options.app_key}:{options.master_secret.get_secret_value()}".encode()
        ).decode()
        self._cids = None if redis is None else JPushCids(
            redis, client, options.endpoint, self._auth, options.app_key, batch=options.cid_batch,
            timeout=self._timeout, failure=lambda response: _send_error(response, _error_of(response)),
        )

    @classmethod
    def from_options(cls, options: ProviderOptions, deps: ChannelDeps) -> JPush:
        return cls(cls.own_options(options, JPushOptions), deps.http, deps.redis)

    def accepts(self, address: str) -> bool:
        return address.startswith(PREFIX) and len(address) > len(PREFIX)

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        registration_id = address[len(PREFIX):] if self.accepts(address) else ""
        if not _REGISTRATION_ID.match(registration_id):
            raise InvalidAddressError(f"jpush address must be 'jpush:<registration id>', got {address!r}")
        body = self._body(message, registration_id, dispatch)
        if self._cids is not None:
            body["cid"] = await self._cids.for_send(idempotency_key(dispatch))
        try:
            response = await self._client.post(
                self._url, json=body,
                headers={"Authorization": self._auth}, timeout=self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"jpush timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise RetryableSendError(f"jpush connection failed: {type(exc).__name__}: {exc}") from exc
        answer = _json(response)
        error = answer.get("error")
        if response.status_code == 200 and not error and answer.get("msg_id"):
            return SendResult(
                status="sent", provider_message_id=str(answer["msg_id"]), cost=self._options.cost_per_message
            )
        raise _send_error(response, error if isinstance(error, dict) else {})

    def _body(self, message: RenderedMessage, registration_id: str, dispatch: Dispatch) -> dict[str, Any]:
        alert = message.body or message.text
        extras = {"message_id": dispatch.message_id, **message.params}
        if message.link:
            extras["link"] = message.link
        if message.page:
            extras["page"] = message.page
        urgent = dispatch.event.priority in ("urgent", "high")
        android: dict[str, Any] = {"alert": alert, "title": message.title, "extras": extras}
        android["priority"] = 2 if urgent else 0
        ios_alert: dict[str, str] | str = {"title": message.title, "body": alert} if message.title else alert
        return {
            "platform": "all",
            "audience": {"registration_id": [registration_id]},
            "notification": {
                "alert": alert,
                "android": android,
                "ios": {"alert": ios_alert, "sound": "default", "extras": extras},
            },
            "options": {
                "apns_production": self._options.apns_production,
                "time_to_live": min(
                    self._options.time_to_live, _SHORT_LIVED.get(dispatch.event.category, 864_000)
                ),
            },
        }

    def parse_callback(self, request: CallbackRequest) -> CallbackReply:
        """Check JPush's Basic credentials; a GET with `echostr` is the URL check, answered verbatim."""
        if not hmac.compare_digest(request.headers.get("authorization", "").encode(), self._auth.encode()):
            raise CallbackRejected("jpush callback: Authorization does not match appKey:masterSecret")
        if request.method.upper() == "GET":
            echo = request.query.get("echostr", "")
            if not echo:
                raise CallbackRejected("jpush callback: GET without echostr")
            return CallbackReply(receipts=(), body=echo.encode(), media_type="text/plain")
        try:
            records = json.loads(request.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CallbackRejected(f"jpush callback: body is not JSON: {exc}") from exc
        if isinstance(records, dict):
            records = [records]
        if not isinstance(records, list):
            raise CallbackRejected("jpush callback: body is neither a record nor a list of records")
        receipts = []
        for index, record in enumerate(records):
            if not isinstance(record, dict) or not record.get("msgid"):
                raise CallbackRejected(f"jpush callback: record {index} has no msgid")
            status = _RECEIPT_TYPES.get(_int(record.get("type")))
            if status is None:
                continue  # target valid, submitted, recalled...: not a delivery status
            reason = "jpush: not delivered" if status == "failed" else ""
            receipts.append(ProviderReceipt(
                provider_message_id=str(record["msgid"]), status=status, reason=reason,
                recipient=str(record.get("registration_id") or record.get("userid") or ""),
            ))
        return CallbackReply(receipts=tuple(receipts), body=b"", media_type="text/plain")


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return -1


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _error_of(response: httpx.Response) -> dict[str, Any]:
    error = _json(response).get("error")
    return error if isinstance(error, dict) else {}


def _send_error(response: httpx.Response, error: dict[str, Any]) -> Exception:
    """The error class of one JPush failure, from its code, else its HTTP status."""
    code = _int(error.get("code"))
    http = response.status_code
    label = code if code >= 0 else "error"
    reason = f"jpush {label} (HTTP {http}): {error.get('message', response.reason_phrase)}"
    if code in _BAD_AUDIENCE:
        return InvalidAddressError(reason)
    if code in _CREDENTIALS or (code < 0 and http in (401, 403)):
        return CredentialsError(reason)
    if code in _THROTTLED or http == 429:
        return ThrottledError(reason, retry_after=_reset_seconds(response))
    if code in _TRANSIENT or http >= 500 or http == 200:  # a 200 without msg_id: try again
        return RetryableSendError(reason)
    return PermanentSendError(reason)


def _reset_seconds(response: httpx.Response) -> float | None:
    """`X-Rate-Limit-Reset`: seconds until JPush's rate-limit window resets."""
    try:
        return max(0.0, float(response.headers["X-Rate-Limit-Reset"]))
    except (KeyError, ValueError):
        return None

"""A generic SMS gateway over JSON and HTTP, for operators whose carrier or aggregator is not built in.

Request: `POST <url>` with `{"to": "+8613800138000", "text": "...", "sender": "...", "reference":
"<message id>"}`, headers `X-Sms-Timestamp: <unix seconds>` and `X-Sms-Signature: sha256=<hex>`, the
HMAC-SHA256 with the shared secret of `<timestamp>.<raw body>`. Answers: 2xx `{"id": "...",
"segments": n}`; 4xx `{"error": {"code": "...", "message": "..."}}` where codes `invalid_number`,
`unknown_recipient`, `blocked_recipient` refuse the address; 401/403 our signature; 429 with
`Retry-After` a rate limit; 5xx a failure to retry. Delivery reports come back signed the same way:
`POST` a JSON array of `{"id", "status": "delivered"|"failed", "reason", "to"}`.

Every request carries `Idempotency-Key: "<message id>.<step>"`, the same on every retry of one send:
a gateway that has accepted a key answers its first answer again and sends nothing (the local peer
does), so a send repeated after a lost answer reaches the phone once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from channels.base import (
    IDEMPOTENCY_HEADER,
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
    idempotency_header,
)
from channels.sms_segments import billed_segments, require_e164
from channels.templates import RenderedMessage
from records.topics import Dispatch

SIGNATURE_HEADER = "X-Sms-Signature"
TIMESTAMP_HEADER = "X-Sms-Timestamp"
ADDRESS_CODES = frozenset({"invalid_number", "unknown_recipient", "blocked_recipient"})
MAX_REPORT_AGE = 300.0


def gateway_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Sms-Signature` value of `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class HttpSmsGatewayOptions(ProviderOptions):
    """The gateway's URL, shared secret, sender id and price."""

    url: str
    secret: SecretStr
    sender: str = ""
    timeout: Annotated[float, Field(gt=0)] = 10.0
    cost_per_segment: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"url must be an http(s) URL, got {value!r}")
        return value

    @field_validator("secret")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("secret is empty: the gateway requires signed requests")
        return value


class _Report(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    status: Literal["delivered", "failed"]
    reason: str = ""
    to: str = ""


class HttpSmsGateway(Channel):
    """SMS through a JSON gateway that checks our HMAC signature; the address is an E.164 number."""

    channel = "sms"
    provider = "http-sms"
    options_model: ClassVar[type[ProviderOptions]] = HttpSmsGatewayOptions

    def __init__(
        self,
        options: HttpSmsGatewayOptions,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._options = options
        self._http = http
        self._clock = clock

    @classmethod
    def from_options(cls, options: ProviderOptions, deps: ChannelDeps) -> HttpSmsGateway:
        return cls(cls.own_options(options, HttpSmsGatewayOptions), deps.http)

    def accepts(self, address: str) -> bool:
        return address.startswith("+")

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        number = require_e164(address, self.provider)
        if not message.text:
            raise PermanentSendError(f"http-sms: template {message.template!r} rendered no SMS text")
        body = json.dumps({
            "to": number, "text": message.text, "sender": self._options.sender,
            "reference": dispatch.message_id,
        }, ensure_ascii=False).encode()
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: idempotency_header(dispatch),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: gateway_signature(self._options.secret.get_secret_value(), timestamp, body),
        }
        try:
            response = await self._http.post(
                self._options.url, content=body, headers=headers, timeout=self._options.timeout,
                follow_redirects=False,
            )
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"http-sms timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise RetryableSendError(f"http-sms connection failed: {type(exc).__name__}: {exc}") from exc
        answer = _json(response)
        status = response.status_code
        if 200 <= status < 300 and isinstance(answer.get("id"), str) and answer["id"]:
            segments = answer.get("segments")
            if not isinstance(segments, int) or segments < 1:
                segments = billed_segments(message.text, "", number).segments
            return SendResult(
                status="sent", provider_message_id=answer["id"],
                cost=round(segments * self._options.cost_per_segment, 6),
            )
        raise _error(status, answer, response.headers.get("Retry-After"))

    def parse_callback(self, request: CallbackRequest) -> CallbackReply:
        """Read a signed delivery-report push; refuse it if unsigned, forged or older than 5 minutes."""
        timestamp = request.headers.get(TIMESTAMP_HEADER.lower(), "")
        signature = request.headers.get(SIGNATURE_HEADER.lower(), "")
        try:
            age = abs(self._clock() - float(timestamp))
        except ValueError:
            raise CallbackRejected(f"http-sms report has no valid {TIMESTAMP_HEADER} header") from None
        if age > MAX_REPORT_AGE:
            raise CallbackRejected(f"http-sms report timestamp is {age:.0f}s off, over {MAX_REPORT_AGE:g}s")
        expected = gateway_signature(self._options.secret.get_secret_value(), timestamp, request.body)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise CallbackRejected(f"http-sms report {SIGNATURE_HEADER} does not match its body")
        try:
            entries = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CallbackRejected(f"http-sms report body is not JSON: {exc}") from exc
        if not isinstance(entries, list):
            raise CallbackRejected("http-sms report body must be a JSON array of reports")
        receipts = []
        for index, entry in enumerate(entries):
            try:
                report = _Report.model_validate(entry)
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(part) for part in error["loc"]) or "entry"
                raise CallbackRejected(f"http-sms report entry {index}: {where}: {error['msg']}") from exc
            receipts.append(ProviderReceipt(report.id, report.status, report.reason, report.to))
        return CallbackReply(receipts=tuple(receipts), body=b'{"ok":true}')


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _error(status: int, answer: dict[str, Any], retry_after: str | None) -> Exception:
    raw = answer.get("error")
    error: dict[str, Any] = raw if isinstance(raw, dict) else {}
    code, message = str(error.get("code", "")), str(error.get("message", ""))[:200]
    reason = f"http-sms HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    if 200 <= status < 300:
        return RetryableSendError(f"{reason}: answer without a message id")
    if status in (401, 403):
        return CredentialsError(reason)
    if status == 429:
        return ThrottledError(reason, retry_after=_seconds(retry_after))
    if status >= 500:
        return RetryableSendError(reason, retry_after=_seconds(retry_after))
    if code in ADDRESS_CODES:
        return InvalidAddressError(reason)
    return PermanentSendError(reason)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None

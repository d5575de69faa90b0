"""Tencent Cloud SMS (API 2021-01-11): `SendSms` signed with TC3-HMAC-SHA256, and status-report pushes.

TC3: a canonical request (method, `/`, empty query, the `content-type` and `host` headers, the body's
SHA-256) is hashed into the string to sign; the key is derived by HMAC-SHA256 chaining
`TC3<SecretKey>` → UTC date → service → `tc3_request`. Tencent's status pushes are not signed, so the
callback URL carries our `?token=`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

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
)
from channels.sms_segments import billed_segments, require_e164
from channels.templates import RenderedMessage
from records.topics import Dispatch

SERVICE = "sms"
API_VERSION = "2021-01-11"
CONTENT_TYPE = "application/json; charset=utf-8"

INVALID_ADDRESS = frozenset({
    "InvalidParameterValue.IncorrectPhoneNumber", "FailedOperation.PhoneNumberInBlacklist",
    "FailedOperation.PhoneNumberParseFail", "UnsupportedOperation.UnsupportedRegion",
})
CREDENTIALS = frozenset({
    "AuthFailure.SignatureFailure", "AuthFailure.SecretIdNotFound", "AuthFailure.SignatureExpire",
    "AuthFailure.InvalidSecretId", "AuthFailure.InvalidAuthorization", "AuthFailure.TokenFailure",
    "AuthFailure.UnauthorizedOperation", "UnauthorizedOperation.SmsSdkAppIdVerifyFail",
    "UnauthorizedOperation.RequestPermissionDeny", "UnauthorizedOperation.ServiceSuspendDueToArrears",
})
# Code -> seconds before this number or account may be tried again on this provider.
THROTTLED: dict[str, float | None] = {
    "RequestLimitExceeded": 1.0,
    "LimitExceeded.PhoneNumberThirtySecondLimit": 30.0,
    "LimitExceeded.PhoneNumberOneHourLimit": 3600.0,
    "LimitExceeded.PhoneNumberDailyLimit": 86400.0,
    "LimitExceeded.PhoneNumberSameContentDailyLimit": 86400.0,
    "LimitExceeded.DeliveryFrequencyLimit": 60.0,
    "LimitExceeded.DailyLimit": 86400.0,
    "FailedOperation.InsufficientBalanceInSmsPackage": 3600.0,
}
TRANSIENT_PREFIXES = (
    "InternalError", "ServiceUnavailable", "ResourceUnavailable", "FailedOperation.TimeoutErr",
)


class TencentSmsOptions(ProviderOptions):
    """A Tencent Cloud SMS application: API key pair, SmsSdkAppId, approved signature, price."""

    secret_id: Annotated[str, Field(min_length=1)]
    secret_key: SecretStr
    sms_sdk_app_id: Annotated[str, Field(pattern=r"^\d+$")]
    sign_name: Annotated[str, Field(min_length=1)]
    endpoint: str = "https://sms.tencentcloudapi.com"
    region: str = "ap-guangzhou"
    timeout: Annotated[float, Field(gt=0)] = 10.0
    cost_per_segment: Annotated[float, Field(ge=0)] = 0.0
    callback_token: SecretStr | None = None
    """Required in the status-report callback URL (`?token=`); without it every callback is refused."""

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or not urlsplit(value).netloc:
            raise ValueError(f"endpoint must be an http(s) URL with a host, got {value!r}")
        return value

    @field_validator("secret_key")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("secret_key is empty")
        return value


def tc3_signature(secret_key: str, service: str, timestamp: int, canonical_request: str) -> str:
    """The hex TC3-HMAC-SHA256 signature of a canonical request made at `timestamp` (UTC seconds)."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    hashed = hashlib.sha256(canonical_request.encode()).hexdigest()
    to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{date}/{service}/tc3_request\n{hashed}"
    key = f"TC3{secret_key}".encode()
    for part in (date, service, "tc3_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def canonical_post(host: str, payload: bytes, content_type: str = CONTENT_TYPE) -> str:
    """The canonical request of a JSON POST to `/` signing the `content-type` and `host` headers."""
    headers = f"content-type:{content_type.lower()}\nhost:{host.lower()}\n"
    return f"POST\n/\n\n{headers}\ncontent-type;host\n{hashlib.sha256(payload).hexdigest()}"


def tc3_authorization(secret_id: str, secret_key: str, host: str, timestamp: int, payload: bytes) -> str:
    """The `Authorization` header of a SendSms-style JSON POST."""
    signature = tc3_signature(secret_key, SERVICE, timestamp, canonical_post(host, payload))
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    return (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{date}/{SERVICE}/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={signature}"
    )


class _Report(BaseModel):
    """One entry of a status-report push."""

    model_config = ConfigDict(extra="ignore")

    sid: str
    mobile: str
    report_status: Literal["SUCCESS", "FAIL"]
    nationcode: str = ""
    errmsg: str = ""
    description: str = ""


class TencentSms(Channel):
    """SMS through Tencent Cloud; the address is an E.164 number, the template a registered id."""

    channel = "sms"
    provider = "tencent"
    options_model: ClassVar[type[ProviderOptions]] = TencentSmsOptions

    def __init__(
        self, options: TencentSmsOptions, http: httpx.AsyncClient, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._options = options
        self._http = http
        self._clock = clock
        self._host = urlsplit(options.endpoint).netloc

    @classmethod
    def from_options(cls, options: ProviderOptions, deps: ChannelDeps) -> TencentSms:
        return cls(cls.own_options(options, TencentSmsOptions), deps.http)

    def accepts(self, address: str) -> bool:
        return address.startswith("+")

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        number = require_e164(address, self.provider)
        template_id = self.template_id(message, "Tencent template id")
        options = self._options
        payload = json.dumps({
            "PhoneNumberSet": [number],
            "SmsSdkAppId": options.sms_sdk_app_id,
            "SignName": options.sign_name,
            "TemplateId": template_id,
            "TemplateParamSet": list(message.params.values()),
            "SessionContext": dispatch.message_id,
        }, ensure_ascii=False).encode()
        timestamp = int(self._clock())
        headers = {
            "Authorization": tc3_authorization(
                options.secret_id, options.secret_key.get_secret_value(), self._host, timestamp, payload
            ),
            "Content-Type": CONTENT_TYPE,
            "X-TC-Action": "SendSms",
            "X-TC-Version": API_VERSION,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Region": options.region,
        }
        try:
            response = await self._http.post(
                options.endpoint, content=payload, headers=headers, timeout=options.timeout
            )
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"tencent timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise RetryableSendError(f"tencent connection failed: {type(exc).__name__}: {exc}") from exc
        answer = _response(response)
        if "Error" in answer:
            error = answer["Error"] if isinstance(answer["Error"], dict) else {}
            raise _error(str(error.get("Code", "")), str(error.get("Message", "")))
        statuses = answer.get("SendStatusSet")
        if not isinstance(statuses, list) or not statuses or not isinstance(statuses[0], dict):
            raise RetryableSendError("tencent answered without a SendStatusSet")
        status = statuses[0]
        code = str(status.get("Code", ""))
        if code != "Ok":
            raise _error(code, str(status.get("Message", "")))
        # Fee is what Tencent bills (segments, signature included); count ourselves if it is missing.
        fee = status.get("Fee")
        segments = fee if isinstance(fee, int) and fee > 0 else billed_segments(
            message.text, options.sign_name, number
        ).segments
        return SendResult(
            status="sent", provider_message_id=str(status.get("SerialNo", "")),
            cost=round(segments * options.cost_per_segment, 6),
        )

    def parse_callback(self, request: CallbackRequest) -> CallbackReply:
        """Read a status-report push (a JSON array); it must carry our token in its query."""
        expected = self._options.callback_token
        if expected is None:
            raise CallbackRejected("tencent callbacks are refused: no callback_token is configured")
        given = request.query.get("token", "").encode()
        if not hmac.compare_digest(expected.get_secret_value().encode(), given):
            raise CallbackRejected("tencent callback token is missing or wrong")
        try:
            entries = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CallbackRejected(f"tencent status report body is not JSON: {exc}") from exc
        if not isinstance(entries, list):
            raise CallbackRejected("tencent status report body must be a JSON array of reports")
        receipts = []
        for index, entry in enumerate(entries):
            try:
                report = _Report.model_validate(entry)
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(part) for part in error["loc"]) or "entry"
                raise CallbackRejected(
                    f"tencent status report entry {index}: {where}: {error['msg']}"
                ) from exc
            ok = report.report_status == "SUCCESS"
            recipient = f"+{report.nationcode}{report.mobile}" if report.nationcode else report.mobile
            receipts.append(ProviderReceipt(
                provider_message_id=report.sid, status="delivered" if ok else "failed",
                reason="" if ok else ": ".join(p for p in (report.errmsg, report.description) if p),
                recipient=recipient,
            ))
        return CallbackReply(receipts=tuple(receipts), body=b'{"result":0,"errmsg":"OK"}')


def _response(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    answer = body.get("Response") if isinstance(body, dict) else None
    if not isinstance(answer, dict):
        raise RetryableSendError(f"tencent answered HTTP {response.status_code} without a Response object")
    return answer


def _error(code: str, message: str) -> Exception:
    reason = f"tencent {code or 'unknown error'}: {message[:200]}"
    if code in INVALID_ADDRESS:
        return InvalidAddressError(reason)
    if code in CREDENTIALS:
        return CredentialsError(reason)
    if code in THROTTLED or code.startswith("LimitExceeded."):
        return ThrottledError(reason, retry_after=THROTTLED.get(code))
    if not code or code.startswith(TRANSIENT_PREFIXES):
        return RetryableSendError(reason)
    return PermanentSendError(reason)

"""Alibaba Cloud SMS (dysmsapi 2017-05-25): `SendSms` with the RPC V1 signature, and SmsReport pushes.

The request is signed as Alibaba Cloud's RPC APIs require: parameters sorted by name, each name and
value percent-encoded (RFC 3986), joined into the canonical query; the string to sign is
`POST&%2F&<encoded canonical query>`, signed with HMAC-SHA1 keyed by `AccessKeySecret&`, base64.
SmsReport pushes are not signed by Aliyun, so the callback URL carries our `?token=`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar
from urllib.parse import quote

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
from channels.sms_segments import MAINLAND, billed_segments, require_e164
from channels.templates import RenderedMessage
from records.topics import Dispatch

API_VERSION = "2017-05-25"

INVALID_ADDRESS = frozenset({"isv.MOBILE_NUMBER_ILLEGAL"})
CREDENTIALS = frozenset({
    "InvalidAccessKeyId.NotFound", "InvalidAccessKeyId.Inactive", "SignatureDoesNotMatch",
    "IncompleteSignature", "InvalidTimeStamp.Expired", "Forbidden.RAM", "isp.RAM_PERMISSION_DENY",
    "isv.ACCOUNT_NOT_EXISTS", "isv.ACCOUNT_ABNORMAL", "isv.PRODUCT_UN_SUBSCRIPT",
    "isv.PRODUCT_UNSUBSCRIBE", "isv.OUT_OF_SERVICE",
})
THROTTLED = frozenset({
    "isv.BUSINESS_LIMIT_CONTROL", "isv.DAY_LIMIT_CONTROL", "isv.AMOUNT_NOT_ENOUGH",
    "Throttling", "Throttling.User", "Throttling.Api",
})
TRANSIENT = frozenset({"isp.SYSTEM_ERROR", "ServiceUnavailable", "InternalError", "SignatureNonceUsed"})
# isv.BUSINESS_LIMIT_CONTROL says which window tripped: "触发分钟级流控Permits:1".
WINDOWS = (("分钟级", 60.0), ("小时级", 3600.0), ("天级", 86400.0))
QUOTA_WAIT = 3600.0  # an empty balance needs an operator; try this provider again in an hour


class AliyunSmsOptions(ProviderOptions):
    """An Aliyun SMS account: AccessKey pair, approved signature name, endpoint and price."""

    access_key_id: Annotated[str, Field(min_length=1)]
    access_key_secret: SecretStr
    sign_name: Annotated[str, Field(min_length=1)]
    endpoint: str = "https://dysmsapi.aliyuncs.com/"
    region_id: str = "cn-hangzhou"
    timeout: Annotated[float, Field(gt=0)] = 10.0
    cost_per_segment: Annotated[float, Field(ge=0)] = 0.0
    callback_token: SecretStr | None = None
    """Required in the SmsReport callback URL (`?token=`); without it every callback is refused."""

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"endpoint must be an http(s) URL, got {value!r}")
        return value

    @field_validator("access_key_secret")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("access_key_secret is empty")
        return value


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as Alibaba Cloud's signature wants it: only A-Z a-z 0-9 - _ . ~ stay as is."""
    return quote(value, safe="~")


def rpc_signature(secret: str, method: str, params: Mapping[str, str]) -> str:
    """The RPC V1 `Signature` of `params` (which must not include it) for an HTTP `method`."""
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(params[k])}" for k in sorted(params))
    to_sign = f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def aliyun_number(e164: str) -> str:
    """Aliyun wants mainland numbers bare (13800138000) and others as country code + number, no '+'."""
    return e164.removeprefix(MAINLAND) if e164.startswith(MAINLAND) else e164.removeprefix("+")


class _Report(BaseModel):
    """One entry of an SmsReport push."""

    model_config = ConfigDict(extra="ignore")

    phone_number: str
    success: bool
    biz_id: str
    err_code: str = ""
    err_msg: str = ""
    out_id: str = ""


class AliyunSms(Channel):
    """SMS through Alibaba Cloud; the address is an E.164 number, the template a registered code."""

    channel = "sms"
    provider = "aliyun"
    options_model: ClassVar[type[ProviderOptions]] = AliyunSmsOptions

    def __init__(
        self,
        options: AliyunSmsOptions,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._options = options
        self._http = http
        self._clock = clock
        self._nonce = nonce

    @classmethod
    def from_options(cls, options: ProviderOptions, deps: ChannelDeps) -> AliyunSms:
        return cls(cls.own_options(options, AliyunSmsOptions), deps.http)

    def accepts(self, address: str) -> bool:
        return address.startswith("+")

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        number = require_e164(address, self.provider)
        template_code = self.template_id(message, "Aliyun template code")
        params = self._signed_params(number, template_code, message.params, dispatch.message_id)
        try:
            response = await self._http.post(
                self._options.endpoint, data=params, timeout=self._options.timeout
            )
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"aliyun timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise RetryableSendError(f"aliyun connection failed: {type(exc).__name__}: {exc}") from exc
        body = _json_object(response)
        code = str(body.get("Code", ""))
        if code != "OK":
            raise _error(response.status_code, code, str(body.get("Message", "")))
        if not body.get("BizId"):
            # Accepted but unnamed: retrying could send it twice, so record it failed for an operator.
            raise PermanentSendError("aliyun answered OK without a BizId; it may have been sent")
        segments = billed_segments(message.text, self._options.sign_name, number)
        return SendResult(
            status="sent", provider_message_id=str(body["BizId"]),
            cost=round(segments.segments * self._options.cost_per_segment, 6),
        )

    def _signed_params(
        self, number: str, template_code: str, template_params: Mapping[str, str], out_id: str
    ) -> dict[str, str]:
        options = self._options
        params = {
            "AccessKeyId": options.access_key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "RegionId": options.region_id,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": self._nonce(),
            "SignatureVersion": "1.0",
            "Timestamp": datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": API_VERSION,
            "PhoneNumbers": aliyun_number(number),
            "SignName": options.sign_name,
            "TemplateCode": template_code,
            "OutId": out_id,
        }
        if template_params:
            params["TemplateParam"] = json.dumps(dict(template_params), ensure_ascii=False)
        params["Signature"] = rpc_signature(options.access_key_secret.get_secret_value(), "POST", params)
        return params

    def parse_callback(self, request: CallbackRequest) -> CallbackReply:
        """Read an SmsReport push (a JSON array); it must carry our token in its query."""
        _check_token(self._options.callback_token, request.query.get("token", ""))
        try:
            entries = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CallbackRejected(f"aliyun SmsReport body is not JSON: {exc}") from exc
        if not isinstance(entries, list):
            raise CallbackRejected("aliyun SmsReport body must be a JSON array of reports")
        receipts = []
        for index, entry in enumerate(entries):
            try:
                report = _Report.model_validate(entry)
            except ValidationError as exc:
                raise CallbackRejected(f"aliyun SmsReport entry {index}: {_first_error(exc)}") from exc
            receipts.append(ProviderReceipt(
                provider_message_id=report.biz_id,
                status="delivered" if report.success else "failed",
                reason="" if report.success else ": ".join(p for p in (report.err_code, report.err_msg) if p),
                recipient=report.phone_number,
            ))
        reply = json.dumps({"code": 0, "msg": "成功"}, ensure_ascii=False).encode()
        return CallbackReply(receipts=tuple(receipts), body=reply)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    if not isinstance(body, dict):
        raise RetryableSendError(f"aliyun answered HTTP {response.status_code} without a JSON object")
    return body


def _error(http_status: int, code: str, message: str) -> Exception:
    reason = f"aliyun {code or f'HTTP {http_status}'}: {message[:200]}"
    if code in INVALID_ADDRESS:
        return InvalidAddressError(reason)
    if code in CREDENTIALS:
        return CredentialsError(reason)
    if code in THROTTLED:
        return ThrottledError(reason, retry_after=_throttle_wait(code, message))
    if code in TRANSIENT or http_status >= 500 or not code:
        return RetryableSendError(reason)
    return PermanentSendError(reason)


def _throttle_wait(code: str, message: str) -> float | None:
    if code == "isv.AMOUNT_NOT_ENOUGH":
        return QUOTA_WAIT
    if code == "isv.DAY_LIMIT_CONTROL":
        return 86400.0
    return next((wait for word, wait in WINDOWS if word in message), None)


def _check_token(expected: SecretStr | None, given: str) -> None:
    if expected is None:
        raise CallbackRejected("aliyun callbacks are refused: no callback_token is configured")
    if not hmac.compare_digest(expected.get_secret_value().encode(), given.encode()):
        raise CallbackRejected("aliyun callback token is missing or wrong")


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "entry"
    return f"{where}: {error['msg']}"

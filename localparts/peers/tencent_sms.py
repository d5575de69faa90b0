"""A local Tencent Cloud SMS endpoint: `SendSms` (2021-01-11) with TC3-HMAC-SHA256 signature checks.

Verifies the Authorization header as Tencent Cloud API 3.0 does (key id, timestamp within 5 minutes,
credential scope, the signed headers as received, the signature) and answers with Tencent's bodies.
`app[STATE]` holds accepted request bodies and the codes to answer next: request-level
codes (AuthFailure.*, RequestLimitExceeded, InternalError.*, FailedOperation.Template...) come back as
`Response.Error`, per-number codes (LimitExceeded.Phone..., InvalidParameterValue...) in `SendStatusSet`.
`templates` maps a template id to its text (`{1}`, `{2}`... placeholders) so `Fee` counts real segments.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

MAX_SKEW = 300
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
AUTHORIZATION = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[a-z]+)/tc3_request, "
    r"SignedHeaders=(?P<headers>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$"
)

REQUEST_ERRORS: dict[str, str] = {
    "AuthFailure.SignatureFailure":
        "The provided credentials could not be validated. Please check your signature is correct.",
    "AuthFailure.SecretIdNotFound": "The SecretId is not found, please ensure that your SecretId is correct.",
    "AuthFailure.SignatureExpire": "Signature expired. Timestamp comparison failed.",
    "AuthFailure.InvalidAuthorization": "Authorization header is invalid.",
    "RequestLimitExceeded": "Your current request times exceeds the limit, please try again later.",
    "InternalError.SendAndRecvFail":
        "接口超时或短信收发包超时，请检查您的网络是否有波动，或联系 腾讯云短信小助手 解决。",
    "FailedOperation.TemplateIncorrectOrUnapproved": "模板未审批或请求的内容与审核通过的模板内容不匹配。",
    "FailedOperation.SignatureIncorrectOrUnapproved": "签名未审批或格式错误。",
    "UnauthorizedOperation.SmsSdkAppIdVerifyFail":
        "SmsSdkAppId 校验失败，请检查 SmsSdkAppId 是否属于云 API 密钥的关联账户。",
    "FailedOperation.InsufficientBalanceInSmsPackage": "套餐包余量不足，请购买套餐包。",
    "InvalidAction": "接口`{action}`不存在或者正在维护中。",
}
NUMBER_ERRORS: dict[str, str] = {
    "LimitExceeded.PhoneNumberDailyLimit":
        "单个手机号日下发短信条数超过设定的上限，如需调整限制，可联系 腾讯云短信小助手。",
    "LimitExceeded.PhoneNumberThirtySecondLimit": "单个手机号30秒内下发短信条数超过设定的上限。",
    "InvalidParameterValue.IncorrectPhoneNumber": "手机号格式错误。",
    "FailedOperation.PhoneNumberInBlacklist":
        "手机号在免打扰名单库中，免打扰名单是指用户退订相关短信，导致的发送失败。",
}


@dataclass
class TencentPeerState:
    """What the peer accepted, and what it answers next."""

    received: list[dict[str, Any]] = field(default_factory=list)
    """Bodies of accepted sends, each with the `SerialNo` and `Fee` it was given."""
    script: list[str] = field(default_factory=list)
    """Codes to answer next: request-level ones for a whole request, per-number ones for one number."""


STATE = web.AppKey("tencent_sms", TencentPeerState)


def error_body(code: str, action: str = "SendSms") -> web.Response:
    """Tencent's request-level error: HTTP 200 with `Response.Error`."""
    message = REQUEST_ERRORS[code].replace("{action}", action)
    return web.json_response(
        {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": str(uuid.uuid4())}}
    )


def status_report(sent: dict[str, Any], success: bool = True) -> dict[str, Any]:
    """One status-report entry for a message this peer accepted, as Tencent pushes it."""
    number = sent["PhoneNumberSet"][0]
    nationcode, mobile = ("86", number[3:]) if number.startswith("+86") else ("", number)
    return {
        "user_receive_time": "2026-11-22 03:40:05", "nationcode": nationcode, "mobile": mobile,
        "report_status": "SUCCESS" if success else "FAIL", "errmsg": "DELIVRD" if success else "MK:0001",
        "description": "用户短信送达成功" if success else "空号", "sid": sent["SerialNo"],
    }


def create_app(
    secret_id: str, secret_key: str, sms_sdk_app_id: str, templates: dict[str, str] | None = None
) -> web.Application:
    """The SendSms endpoint for one API key pair and one SMS application, its state in `app[STATE]`."""
    app = web.Application()
    state = app[STATE] = TencentPeerState()

    def signature_ok(request: web.Request, body: bytes, found: re.Match[str], timestamp: int) -> bool:
        names = found["headers"].split(";")
        if "content-type" not in names or "host" not in names:
            return False
        canonical_headers = "".join(f"{n}:{request.headers.get(n, '').strip().lower()}\n" for n in names)
        canonical = "\n".join([
            request.method, request.path, request.query_string, canonical_headers, found["headers"],
            hashlib.sha256(body).hexdigest(),
        ])
        scope = f"{found['date']}/{found['service']}/tc3_request"
        to_sign = "\n".join([
            "TC3-HMAC-SHA256", str(timestamp), scope, hashlib.sha256(canonical.encode()).hexdigest(),
        ])

        def step(key: bytes, data: str) -> bytes:
            return hmac.new(key, data.encode(), hashlib.sha256).digest()

        signing = ("TC3" + secret_key).encode()
        for part in (found["date"], found["service"], "tc3_request"):
            signing = step(signing, part)
        expected = hmac.new(signing, to_sign.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, found["signature"])

    async def endpoint(request: web.Request) -> web.Response:
        body = await request.read()
        found = AUTHORIZATION.match(request.headers.get("Authorization", ""))
        if found is None:
            return error_body("AuthFailure.InvalidAuthorization")
        if found["id"] != secret_id:
            return error_body("AuthFailure.SecretIdNotFound")
        try:
            timestamp = int(request.headers.get("X-TC-Timestamp", ""))
        except ValueError:
            return error_body("AuthFailure.InvalidAuthorization")
        if abs(time.time() - timestamp) > MAX_SKEW:
            return error_body("AuthFailure.SignatureExpire")
        if datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d") != found["date"] \
                or found["service"] != "sms" or not signature_ok(request, body, found, timestamp):
            return error_body("AuthFailure.SignatureFailure")
        action = request.headers.get("X-TC-Action", "")
        if action != "SendSms" or request.headers.get("X-TC-Version") != "2021-01-11":
            return error_body("InvalidAction", action)
        script = state.script
        if script and script[0] in REQUEST_ERRORS:
            return error_body(script.pop(0))
        params = json.loads(body)
        if params.get("SmsSdkAppId") != sms_sdk_app_id:
            return error_body("UnauthorizedOperation.SmsSdkAppIdVerifyFail")
        template = (templates or {}).get(str(params.get("TemplateId")))
        if templates is not None and template is None:
            return error_body("FailedOperation.TemplateIncorrectOrUnapproved")
        statuses = []
        for number in params.get("PhoneNumberSet", []):
            code = script.pop(0) if script else "Ok"
            if code == "Ok" and not E164.fullmatch(number):
                code = "InvalidParameterValue.IncorrectPhoneNumber"
            status: dict[str, Any] = {
                "SerialNo": "", "PhoneNumber": number, "Fee": 0,
                "SessionContext": params.get("SessionContext", ""), "Code": code,
                "Message": NUMBER_ERRORS.get(code, "send success"),
                "IsoCode": "CN" if number.startswith("+86") else "",
            }
            if code == "Ok":
                status["SerialNo"] = f"5000:{len(state.received) + 1045710669157053657849499619}"
                status["Fee"] = _fee(template, params) if template is not None else 1
                state.received.append({**params, "SerialNo": status["SerialNo"], "Fee": status["Fee"]})
            statuses.append(status)
        return web.json_response({"Response": {"SendStatusSet": statuses, "RequestId": str(uuid.uuid4())}})

    app.router.add_post("/", endpoint)
    return app


def _fee(template: str, params: dict[str, Any]) -> int:
    """Billed segments: 70 characters with 【signature】 for one message, 67 per part beyond."""
    text = template
    for position, value in enumerate(params.get("TemplateParamSet", []), start=1):
        text = text.replace(f"{{{position}}}", str(value))
    length = len(f"【{params.get('SignName', '')}】{text}")
    return 1 if length <= 70 else math.ceil(length / 67)

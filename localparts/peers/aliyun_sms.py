"""A local Alibaba Cloud SMS endpoint: `SendSms` (dysmsapi 2017-05-25) with RPC V1 signature checks.

Checks what Aliyun checks, in its order (access key, timestamp, nonce, signature, then the business
parameters) and answers with Aliyun's own bodies. `app[STATE]` holds what it received and the codes
to answer next instead (e.g. "isv.BUSINESS_LIMIT_CONTROL").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

HOST_ID = "dysmsapi.aliyuncs.com"
MAX_SKEW = 15 * 60  # Aliyun refuses timestamps more than 15 minutes off

# Code -> (HTTP status, Message) as Aliyun answers them. Business (isv/isp) errors come with HTTP 200.
ANSWERS: dict[str, tuple[int, str]] = {
    "isv.MOBILE_NUMBER_ILLEGAL": (200, "非法手机号"),
    "isv.BUSINESS_LIMIT_CONTROL": (200, "触发分钟级流控Permits:1"),
    "isv.DAY_LIMIT_CONTROL": (200, "触发日发送限额"),
    "isv.SMS_TEMPLATE_ILLEGAL": (200, "模板不合法(不存在或被拉黑)"),
    "isv.SMS_SIGNATURE_ILLEGAL": (200, "签名不合法(不存在或被拉黑)"),
    "isv.TEMPLATE_MISSING_PARAMETERS": (200, "模板缺少变量"),
    "isv.INVALID_JSON_PARAM": (200, "JSON参数不合法，只接受字符串值"),
    "isv.AMOUNT_NOT_ENOUGH": (200, "账户余额不足"),
    "isv.BLACK_KEY_CONTROL_LIMIT": (200, "黑名单管控"),
    "isp.SYSTEM_ERROR": (200, "系统出现错误，请重新调用"),
    "InvalidAccessKeyId.NotFound": (404, "Specified access key is not found."),
    "SignatureDoesNotMatch": (400, "Specified signature does not match our calculation."),
    "InvalidTimeStamp.Expired": (400, "Specified time stamp or date value is expired."),
    "SignatureNonceUsed": (400, "Specified signature nonce was used already."),
    "MissingParameter": (400, "A required parameter is not supplied."),
    "Throttling.User": (400, "Request was denied due to user flow control."),
    "ServiceUnavailable": (503, "The request has failed due to a temporary failure of the server."),
}
MAINLAND_MOBILE = re.compile(r"^1[3-9]\d{9}$")
INTERNATIONAL = re.compile(r"^[1-9]\d{7,14}$")
REQUIRED = ("AccessKeyId", "Action", "Format", "SignatureMethod", "SignatureNonce", "SignatureVersion",
            "Timestamp", "Version", "Signature", "PhoneNumbers", "SignName", "TemplateCode")


@dataclass
class AliyunPeerState:
    """What the peer accepted, and what it answers next."""

    received: list[dict[str, str]] = field(default_factory=list)
    """Parameters of accepted requests, each with the `BizId` it was given."""
    script: list[str] = field(default_factory=list)
    """`ANSWERS` codes to answer next, one per request that passed the signature checks."""
    nonces: set[str] = field(default_factory=set)


STATE = web.AppKey("aliyun_sms", AliyunPeerState)


def string_to_sign(method: str, params: dict[str, str]) -> str:
    """Aliyun's StringToSign, built the documented way: urlencode sorted pairs with RFC 3986 quoting."""
    canonical = urlencode(sorted(params.items()), quote_via=quote, safe="~")
    return "&".join([method, quote("/", safe=""), quote(canonical, safe="~")])


def answer(code: str, extra: str = "") -> web.Response:
    """Aliyun's body for `code`: business errors bare, gateway (POP) errors with HostId and Recommend."""
    status, message = ANSWERS[code]
    body: dict[str, Any] = {"RequestId": str(uuid.uuid4()).upper(), "Code": code, "Message": message + extra}
    if status != 200:
        body["HostId"] = HOST_ID
        body["Recommend"] = f"https://api.aliyun.com/troubleshoot?q={code}&product=Dysmsapi"
    return web.json_response(body, status=status)


def report_for(params: dict[str, str], biz_id: str, success: bool = True) -> dict[str, Any]:
    """One SmsReport entry for a message this peer accepted, as Aliyun pushes it."""
    return {
        "phone_number": params["PhoneNumbers"], "send_time": "2026-11-22 03:40:00",
        "report_time": "2026-11-22 03:40:05", "success": success,
        "err_code": "DELIVERED" if success else "MK:0001", "err_msg": "用户接收成功" if success else "空号",
        "sms_size": "1", "biz_id": biz_id, "out_id": params.get("OutId", ""),
    }


def create_app(access_key_id: str, access_key_secret: str) -> web.Application:
    """The SendSms endpoint for one AccessKey pair, its state in `app[STATE]`."""
    app = web.Application()
    state = app[STATE] = AliyunPeerState()

    async def rpc(request: web.Request) -> web.Response:
        params = dict(await request.post()) if request.method == "POST" else {}
        params.update(request.query)
        values = {k: str(v) for k, v in params.items()}
        missing = [name for name in REQUIRED if not values.get(name)]
        if missing:
            return answer("MissingParameter", f" ({missing[0]})")
        if values["AccessKeyId"] != access_key_id:
            return answer("InvalidAccessKeyId.NotFound")
        try:
            stamp = datetime.strptime(values["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return answer("InvalidTimeStamp.Expired")
        if abs((datetime.now(UTC) - stamp).total_seconds()) > MAX_SKEW:
            return answer("InvalidTimeStamp.Expired")
        signature = values.pop("Signature")
        to_sign = string_to_sign(request.method, values)
        expected = base64.b64encode(
            hmac.new((access_key_secret + "&").encode(), to_sign.encode(), hashlib.sha1).digest()
        ).decode()
        if not hmac.compare_digest(expected, signature):
            return answer("SignatureDoesNotMatch", f" server string to sign is:{to_sign}")
        if values["SignatureNonce"] in state.nonces:
            return answer("SignatureNonceUsed")
        state.nonces.add(values["SignatureNonce"])
        if state.script:
            return answer(state.script.pop(0))
        number = values["PhoneNumbers"]
        if not (MAINLAND_MOBILE.fullmatch(number) or INTERNATIONAL.fullmatch(number)):
            return answer("isv.MOBILE_NUMBER_ILLEGAL")
        if "TemplateParam" in values:
            try:
                template_params = json.loads(values["TemplateParam"])
            except json.JSONDecodeError:
                return answer("isv.INVALID_JSON_PARAM")
            if not isinstance(template_params, dict) or not all(
                isinstance(v, str) for v in template_params.values()
            ):
                return answer("isv.INVALID_JSON_PARAM")
        biz_id = f"{len(state.received) + 900619746936498440}^0"
        state.received.append({**values, "BizId": biz_id})
        return web.json_response({
            "Message": "OK", "RequestId": str(uuid.uuid4()).upper(), "Code": "OK", "BizId": biz_id,
        })

    app.router.add_route("POST", "/", rpc)
    app.router.add_route("GET", "/", rpc)
    return app

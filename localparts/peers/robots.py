"""Local DingTalk, WeCom and Feishu group robot webhooks, in one app (the demo serves them on one port).

Each checks the robot's token and, for signed robots, the timestamp and signature exactly as the
provider does, and answers with the provider's own success and error bodies. Tests script the next
answers per provider with `peer.script["dingtalk"]` etc. (error codes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_DINGTALK_MORE = ", more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"
DINGTALK_ERRMSG: dict[int, str] = {
    -1: "系统繁忙",
    40035: "缺少参数 json",
    130101: "send too fast, exceed 20 times per minute" + _DINGTALK_MORE,
    300001: "token is not exist",
    310000: "sign not match" + _DINGTALK_MORE,
    400013: "群已被解散",
}
WECOM_ERRMSG: dict[int, str] = {
    -1: "system busy",
    40008: "invalid message type",
    40058: "markdown.content exceed max length 4096",
    45009: "api freq out of limit",
    93000: "invalid webhook url",
}
FEISHU_ERRMSG: dict[int, str] = {
    9499: "too many request",
    11232: "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]",
    19001: "param invalid: incoming webhook access token invalid",
    19002: "params error, msg_type need",
    19021: "sign match fail or timestamp is not within one hour from current time",
    19024: "Key Words Not Found",
}
# Both DingTalk and Feishu accept a signature made within the last hour.
MAX_SKEW_SECONDS = 3600.0


@dataclass
class RobotsPeerState:
    """Robots the peer knows (token -> signing secret or None), what it received, scripted answers."""

    dingtalk: dict[str, str | None] = field(default_factory=dict)
    wecom: set[str] = field(default_factory=set)
    feishu: dict[str, str | None] = field(default_factory=dict)
    script: dict[str, list[int]] = field(
        default_factory=lambda: {"dingtalk": [], "wecom": [], "feishu": []}
    )
    received: list[dict[str, Any]] = field(default_factory=list)
    clock: Callable[[], float] = time.time


PEER = web.AppKey("robots_peer", RobotsPeerState)


def _dingtalk(code: int, message: str | None = None) -> web.Response:
    return web.json_response({"errcode": code, "errmsg": message or DINGTALK_ERRMSG.get(code, "error")})


def _wecom(code: int) -> web.Response:
    hint = f", hint: [{int(time.time() * 1e9)}], from ip: 127.0.0.1, more info at " \
           f"https://open.work.weixin.qq.com/devtool/query?e={code}"
    return web.json_response({"errcode": code, "errmsg": WECOM_ERRMSG.get(code, "error") + hint})


def _feishu(code: int) -> web.Response:
    return web.json_response({"code": code, "data": {}, "msg": FEISHU_ERRMSG.get(code, "error")})


async def _json(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def dingtalk_send(request: web.Request) -> web.Response:
    peer = request.app[PEER]
    token = request.query.get("access_token", "")
    body = await _json(request)
    peer.received.append({"provider": "dingtalk", "robot": token, "query": dict(request.query), "body": body})
    if token not in peer.dingtalk:
        return _dingtalk(300001)
    secret = peer.dingtalk[token]
    if secret is not None:
        timestamp, sign = request.query.get("timestamp", ""), request.query.get("sign", "")
        try:
            skew = abs(peer.clock() - int(timestamp) / 1000)
        except ValueError:
            return _dingtalk(310000)
        if skew > MAX_SKEW_SECONDS:
            return _dingtalk(310000, "invalid timestamp" + _DINGTALK_MORE)
        digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), sign):
            return _dingtalk(310000)
    if peer.script["dingtalk"]:
        return _dingtalk(peer.script["dingtalk"].pop(0))
    kind = body.get("msgtype") if body else None
    if kind not in ("text", "markdown") or not isinstance(body, dict):
        return _dingtalk(40035)
    content = body.get(kind) or {}
    if kind == "markdown" and not (content.get("title") and content.get("text")):
        return _dingtalk(40035)
    if kind == "text" and not content.get("content"):
        return _dingtalk(40035)
    return _dingtalk(0, "ok")


async def wecom_send(request: web.Request) -> web.Response:
    peer = request.app[PEER]
    key = request.query.get("key", "")
    body = await _json(request)
    peer.received.append({"provider": "wecom", "robot": key, "query": dict(request.query), "body": body})
    if key not in peer.wecom:
        return _wecom(93000)
    if peer.script["wecom"]:
        return _wecom(peer.script["wecom"].pop(0))
    kind = body.get("msgtype") if body else None
    if kind not in ("text", "markdown") or not isinstance(body, dict):
        return _wecom(40008)
    content = str((body.get(kind) or {}).get("content", ""))
    if kind == "markdown" and len(content.encode()) > 4096:
        return _wecom(40058)
    return web.json_response({"errcode": 0, "errmsg": "ok"})


async def feishu_send(request: web.Request) -> web.Response:
    peer = request.app[PEER]
    hook = request.match_info["hook"]
    body = await _json(request)
    peer.received.append({"provider": "feishu", "robot": hook, "query": dict(request.query), "body": body})
    if hook not in peer.feishu:
        return _feishu(19001)
    if body is None or body.get("msg_type") not in ("text", "post", "interactive", "image", "share_chat"):
        return _feishu(19002)
    secret = peer.feishu[hook]
    if secret is not None:
        timestamp, sign = str(body.get("timestamp", "")), str(body.get("sign", ""))
        try:
            skew = abs(peer.clock() - int(timestamp))
        except ValueError:
            return _feishu(19021)
        digest = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
        if skew > MAX_SKEW_SECONDS or not hmac.compare_digest(base64.b64encode(digest).decode(), sign):
            return _feishu(19021)
    if peer.script["feishu"]:
        return _feishu(peer.script["feishu"].pop(0))
    return web.json_response(
        {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}
    )


def create_app(
    dingtalk: dict[str, str | None] | None = None,
    wecom: set[str] | None = None,
    feishu: dict[str, str | None] | None = None,
) -> web.Application:
    """The three robot webhooks as one aiohttp app; its state is `app[PEER]`."""
    app = web.Application()
    app[PEER] = RobotsPeerState(dingtalk=dict(dingtalk or {}), wecom=set(wecom or ()),
                                feishu=dict(feishu or {}))
    app.router.add_post("/robot/send", dingtalk_send)
    app.router.add_post("/cgi-bin/webhook/send", wecom_send)
    app.router.add_post("/open-apis/bot/v2/hook/{hook}", feishu_send)
    return app

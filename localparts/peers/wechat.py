"""A local WeChat API: access tokens (classic and stable), template and subscribe messages, event pushes.

It checks the appid and secret, issues tokens and refuses unknown (40001) or expired (42001) ones,
and answers with WeChat's own success and error bodies. Tests script the next answers with
`peer.script` (errcodes for message sends) and `peer.token_script` (for token requests).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from channels.wechat_oa import push_signature

# WeChat's errmsg for each errcode the adapters meet, as the API words them (a request id follows).
ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40003: "invalid openid",
    40013: "invalid appid",
    40014: "invalid access_token",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    41001: "access_token missing",
    42001: "access_token expired",
    43004: "require subscribe",
    43101: "user refuse to accept the msg",
    45009: "reach max api daily quota limit",
    45047: "out of response count limit",
    47001: "data format error",
    47003: "argument invalid! data.keyword1.value is empty",
}
_OPENID = re.compile(r"^[A-Za-z0-9_-]{6,64}$")


@dataclass
class WechatPeerState:
    """What the peer knows and saw; tests read and script it."""

    appid: str
    secret: str
    templates: set[str] = field(default_factory=lambda: {"TPL-fee-due", "TPL-course"})
    unsubscribed: set[str] = field(default_factory=set)
    """Openids that do not follow the account (43004) or refused subscribe messages (43101)."""
    script: list[int] = field(default_factory=list)
    token_script: list[int] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)
    """Valid token -> its expiry (time.time())."""
    expired: set[str] = field(default_factory=set)
    token_requests: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    next_msgid: int = 200228332
    push_url: str | None = None
    """Where to push delivery events after each accepted message, as WeChat's server configuration does."""
    push_token: str = ""
    blocked: set[str] = field(default_factory=set)
    """Openids whose messages are accepted but then reported `failed:user block`."""
    pushed: list[int] = field(default_factory=list)
    """HTTP status of every push made; a push answered other than `success` is a failure here."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def expire_tokens(self) -> None:
        """Make every issued token expired, as if two hours had passed."""
        self.expired.update(self.tokens)
        self.tokens.clear()

    def _issue(self) -> tuple[str, int]:
        token = secrets.token_urlsafe(96)
        self.tokens[token] = time.time() + 7200
        return token, 7200


PEER = web.AppKey("wechat_peer", WechatPeerState)
SESSION = web.AppKey("wechat_peer_session", aiohttp.ClientSession)


def error(errcode: int) -> web.Response:
    """WeChat's error body: HTTP 200 with errcode and errmsg carrying a request id."""
    message = ERRMSG.get(errcode, "unknown error")
    return web.json_response({"errcode": errcode, "errmsg": f"{message} rid: {secrets.token_hex(12)}"})


async def _token(request: web.Request) -> web.Response:
    peer = request.app[PEER]
    peer.token_requests += 1
    if request.method == "GET":
        query: dict[str, Any] = dict(request.query)
    else:
        query = await request.json()
    peer.received.append({"path": request.path, "appid": query.get("appid")})
    if peer.token_script:
        return error(peer.token_script.pop(0))
    if query.get("grant_type") != "client_credential":
        return error(40002 if "grant_type" in query else 41001)
    if query.get("appid") != peer.appid:
        return error(40013)
    if query.get("secret") != peer.secret:
        return error(40125)
    if request.method == "GET":
        # The classic API replaces the token: the old one stops working (WeChat allows 5 minutes).
        peer.expire_tokens()
        token, expires_in = peer._issue()
    else:
        current = next(iter(peer.tokens.items()), None)
        if current is None or query.get("force_refresh") is True:
            peer.expire_tokens()
            token, expires_in = peer._issue()
        else:
            token, expires_in = current[0], int(current[1] - time.time())
    return web.json_response({"access_token": token, "expires_in": expires_in})


def _token_error(peer: WechatPeerState, request: web.Request) -> int:
    token = request.query.get("access_token", "")
    if not token:
        return 41001
    if token in peer.expired:
        return 42001
    if peer.tokens.get(token, 0) <= time.time():
        return 40001
    return 0


async def _send(request: web.Request) -> web.Response:
    peer = request.app[PEER]
    refused = _token_error(peer, request)
    try:
        body = await request.json()
    except ValueError:
        return error(47001)
    peer.received.append({"path": request.path, "body": body, "token_ok": refused == 0})
    if refused:
        return error(refused)
    if peer.script:
        return error(peer.script.pop(0))
    touser = body.get("touser")
    if not isinstance(touser, str) or not _OPENID.match(touser):
        return error(40003)
    if body.get("template_id") not in peer.templates:
        return error(40037)
    data = body.get("data")
    if not isinstance(data, dict) or any(
        not isinstance(v, dict) or not str(v.get("value", "")) for v in data.values()
    ):
        return error(47003)
    subscribe = request.path.endswith("/subscribe/send")
    if touser in peer.unsubscribed:
        return error(43101 if subscribe else 43004)
    peer.next_msgid += 1
    if peer.push_url:
        msg_id, blocked = str(peer.next_msgid), touser in peer.blocked
        event = (subscribe_sent_event(touser, [(msg_id, 43101, "user refuse to accept the msg")
                                               if blocked else (msg_id, 0, "success")])
                 if subscribe else
                 template_finish_event(touser, msg_id, "failed:user block" if blocked else "success"))
        task = asyncio.create_task(_push(request.app, event))
        peer._tasks.add(task)
        task.add_done_callback(peer._tasks.discard)
    return web.json_response({"errcode": 0, "errmsg": "ok", "msgid": peer.next_msgid})


async def _push(app: web.Application, event: bytes) -> None:
    """Push one event as WeChat does: signed query, XML body, `success` expected back."""
    peer = app[PEER]
    if peer.push_url is None:
        return
    await asyncio.sleep(0.01)  # after the send's answer, as WeChat pushes asynchronously
    try:
        async with app[SESSION].post(peer.push_url, params=signed_push_query(peer.push_token), data=event,
                                     headers={"Content-Type": "text/xml"}) as response:
            ok = response.status == 200 and (await response.read()) == b"success"
            peer.pushed.append(response.status if ok else -response.status)
    except aiohttp.ClientError:
        peer.pushed.append(0)


async def _session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[SESSION] = session
        yield
        await asyncio.gather(*app[PEER]._tasks, return_exceptions=True)


def create_app(
    appid: str, secret: str, *, push_url: str | None = None, push_token: str = ""
) -> web.Application:
    """The peer as an aiohttp app; its state is `app[PEER]`. With `push_url`, accepted messages are
    followed by signed delivery-event pushes there (TEMPLATESENDJOBFINISH, subscribe_msg_sent_event)."""
    app = web.Application()
    app[PEER] = WechatPeerState(appid=appid, secret=secret, push_url=push_url, push_token=push_token)
    app.cleanup_ctx.append(_session)
    app.router.add_get("/cgi-bin/token", _token)
    app.router.add_post("/cgi-bin/stable_token", _token)
    app.router.add_post("/cgi-bin/message/template/send", _send)
    app.router.add_post("/cgi-bin/message/subscribe/send", _send)
    return app


def signed_push_query(token: str, echostr: str | None = None) -> dict[str, str]:
    """The query WeChat puts on an event push (or URL check with `echostr`) signed with `token`."""
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
    query = {"signature": push_signature(token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
    if echostr is not None:
        query["echostr"] = echostr
    return query


def template_finish_event(openid: str, msg_id: str, status: str = "success") -> bytes:
    """A TEMPLATESENDJOBFINISH push as WeChat sends it."""
    return (
        "<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>"
        f"<MsgID>{msg_id}</MsgID><Status><![CDATA[{status}]]></Status></xml>"
    ).encode()


def subscribe_sent_event(openid: str, items: list[tuple[str, int, str]]) -> bytes:
    """A mini program's subscribe_msg_sent_event push: (msg id, error code, error status) per message."""
    entries = "".join(
        f"<List><TemplateId><![CDATA[TPL-course]]></TemplateId><MsgID>{msg_id}</MsgID>"
        f"<ErrorCode>{code}</ErrorCode><ErrorStatus><![CDATA[{status}]]></ErrorStatus></List>"
        for msg_id, code, status in items
    )
    return (
        "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[subscribe_msg_sent_event]]></Event>"
        f"<SubscribeMsgSentEvent>{entries}</SubscribeMsgSentEvent></xml>"
    ).encode()

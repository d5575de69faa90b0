"""WeChat official account template messages, and the event pushes that report their delivery.

Event pushes are read in plaintext mode (the server configuration's 明文模式): WeChat signs each push
with the configured Token; safe mode (AES-encrypted bodies) is refused with a clear reason.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr
from redis.asyncio import Redis

from channels.base import (
    CallbackRejected,
    CallbackReply,
    CallbackRequest,
    Channel,
    ChannelDeps,
    InvalidAddressError,
    ProviderOptions,
    ProviderReceipt,
    SendResult,
)
from channels.templates import RenderedMessage
from channels.wechat_token import WechatApi, WechatOptions, WechatTokenCache
from records.topics import Dispatch

log = logging.getLogger(__name__)
# Openids are 28 characters of URL-safe base64 today; allow some room, refuse anything else early.
_OPENID = re.compile(r"^[A-Za-z0-9_-]{6,64}$")
_MAX_PUSH_BYTES = 64 * 1024


class WechatOaOptions(WechatOptions):
    """An official account; `miniprogram_appid` lets template messages open a mini-program page."""

    miniprogram_appid: str | None = None


def check_openid(address: str, provider: str) -> None:
    """Refuse what cannot be an openid before spending a call on it."""
    if not _OPENID.match(address):
        raise InvalidAddressError(f"{provider}: {address[:64]!r} is not a WeChat openid")


def wechat_data(params: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Template parameters in WeChat's `data` shape: {"keyword1": {"value": "..."}}."""
    return {key: {"value": value} for key, value in params.items()}


def push_signature(token: str, timestamp: str, nonce: str) -> str:
    """WeChat's push signature: SHA-1 of the token, timestamp and nonce, sorted and joined."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()  # noqa: S324


def verify_push(token: SecretStr | None, request: CallbackRequest, provider: str) -> None:
    """Check a push's `signature` exactly as WeChat computes it; raise CallbackRejected if it is off."""
    if token is None or not token.get_secret_value():
        raise CallbackRejected(f"{provider}: no callback_token configured, event pushes are refused")
    query = request.query
    missing = [name for name in ("signature", "timestamp", "nonce") if not query.get(name)]
    if missing:
        raise CallbackRejected(f"{provider}: push without {', '.join(missing)} in its query")
    expected = push_signature(token.get_secret_value(), query["timestamp"], query["nonce"])
    if not hmac.compare_digest(expected, query["signature"]):
        raise CallbackRejected(f"{provider}: push signature does not match the configured token")
    if query.get("encrypt_type", "raw") != "raw":
        raise CallbackRejected(
            f"{provider}: safe-mode (encrypted) pushes are not supported; set the server "
            "configuration to plaintext mode"
        )


def parse_event(body: bytes, provider: str) -> ET.Element:
    """The root of a pushed XML event; DTDs are refused so no entity can expand."""
    if len(body) > _MAX_PUSH_BYTES:
        raise CallbackRejected(f"{provider}: push body of {len(body)} bytes is too large")
    if b"<!" in body.replace(b"<![CDATA[", b""):
        raise CallbackRejected(f"{provider}: push body declares a DTD or entity")
    try:
        root = ET.fromstring(body)  # noqa: S314 - DTDs and entities refused above
    except ET.ParseError as exc:
        raise CallbackRejected(f"{provider}: push body is not XML: {exc}") from None
    if root.tag != "xml":
        raise CallbackRejected(f"{provider}: push root element is <{root.tag}>, not <xml>")
    return root


def handle_push(
    token: SecretStr | None, request: CallbackRequest, provider: str
) -> tuple[ET.Element | None, CallbackReply | None]:
    """Verify a push; a GET (URL verification) gets its reply, a POST its parsed event."""
    verify_push(token, request, provider)
    if request.method.upper() == "GET":
        echo = request.query.get("echostr", "")
        if not echo:
            raise CallbackRejected(f"{provider}: URL verification without echostr")
        return None, CallbackReply(receipts=(), body=echo.encode(), media_type="text/plain")
    return parse_event(request.body, provider), None


SUCCESS_REPLY = b"success"
"""What WeChat wants answered to a push it should not retry."""


class WechatOfficialAccount(Channel):
    """Template messages to an official account's followers; the address is the follower's openid."""

    channel = "wechat_oa"
    provider = "wechat-oa"
    options_model: ClassVar[type[ProviderOptions]] = WechatOaOptions

    def __init__(self, http: httpx.AsyncClient, redis: Redis, options: WechatOaOptions) -> None:
        self._options = options
        self._tokens = WechatTokenCache(http, redis, options)
        self._api = WechatApi(http, self._tokens, options)

    @classmethod
    def from_options(cls, options: ProviderOptions, deps: ChannelDeps) -> WechatOfficialAccount:
        return cls(deps.http, deps.redis, cls.own_options(options, WechatOaOptions))

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        check_openid(address, self.provider)
        template_id = self.template_id(message, f"{self.provider} template id")
        payload: dict[str, Any] = {
            "touser": address,
            "template_id": template_id,
            "data": wechat_data(message.params),
            # WeChat sends one message per (openid, client_msg_id) within 10 minutes: a retry
            # after a lost answer does not reach the follower twice.
            "client_msg_id": f"{dispatch.message_id}-{dispatch.step}",
        }
        if message.link.startswith(("https://", "http://")):
            payload["url"] = message.link
        elif message.link:
            # WeChat opens only absolute URLs; a site path would make the whole send fail.
            log.warning("%s: link %r of template %r is not absolute, sent without it",
                        self.provider, message.link, message.template)
        if message.page and self._options.miniprogram_appid:
            payload["miniprogram"] = {"appid": self._options.miniprogram_appid, "pagepath": message.page}
        answer = await self._api.post("/cgi-bin/message/template/send", payload, f"{self.provider} send")
        return SendResult(
            status="sent", provider_message_id=str(answer.get("msgid", "")),
            cost=self._options.cost_per_message,
        )

    def parse_callback(self, request: CallbackRequest) -> CallbackReply:
        root, reply = handle_push(self._options.callback_token, request, self.provider)
        if reply is not None or root is None:
            return reply or CallbackReply(receipts=())
        receipts: tuple[ProviderReceipt, ...] = ()
        if root.findtext("Event", "").strip() == "TEMPLATESENDJOBFINISH":
            msg_id = root.findtext("MsgID", "").strip() or root.findtext("MsgId", "").strip()
            status = root.findtext("Status", "").strip()
            if not msg_id or not status:
                raise CallbackRejected(f"{self.provider}: TEMPLATESENDJOBFINISH without MsgID or Status")
            recipient = root.findtext("FromUserName", "").strip()
            if status == "success":
                receipts = (ProviderReceipt(msg_id, "delivered", recipient=recipient),)
            else:
                # "failed:user block" or "failed: system failed", as WeChat words them.
                receipts = (ProviderReceipt(msg_id, "failed", reason=f"wechat: {status}",
                                            recipient=recipient),)
        return CallbackReply(receipts=receipts, body=SUCCESS_REPLY, media_type="text/plain")

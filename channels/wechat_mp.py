"""WeChat mini-program subscribe messages, and the `subscribe_msg_sent_event` pushes about them."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import httpx
from redis.asyncio import Redis

from channels.base import (
    CallbackRejected,
    CallbackReply,
    CallbackRequest,
    Channel,
    ChannelDeps,
    ProviderOptions,
    ProviderReceipt,
    SendResult,
)
from channels.templates import RenderedMessage
from channels.wechat_oa import SUCCESS_REPLY, check_openid, handle_push, wechat_data
from channels.wechat_token import WechatApi, WechatOptions, WechatTokenCache
from records.topics import Dispatch


class WechatMpOptions(WechatOptions):
    """A mini program; `miniprogram_state` picks which version a tapped message opens."""

    miniprogram_state: Literal["developer", "trial", "formal"] = "formal"
    lang: Literal["zh_CN", "en_US", "zh_HK", "zh_TW"] = "zh_CN"


class WechatMiniProgram(Channel):
    """Subscribe messages to a mini program's users; the address is the user's openid."""

    channel = "wechat_mp"
    provider = "wechat-mp"
    options_model: ClassVar[type[ProviderOptions]] = WechatMpOptions

    def __init__(self, http: httpx.AsyncClient, redis: Redis, options: WechatMpOptions) -> None:
        self._options = options
        self._tokens = WechatTokenCache(http, redis, options)
        self._api = WechatApi(http, self._tokens, options)

    @classmethod
    def from_options(cls, options: ProviderOptions, deps: ChannelDeps) -> WechatMiniProgram:
        return cls(deps.http, deps.redis, cls.own_options(options, WechatMpOptions))

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        check_openid(address, self.provider)
        template_id = self.template_id(message, f"{self.provider} template id")
        payload: dict[str, Any] = {
            "touser": address,
            "template_id": template_id,
            "data": wechat_data(message.params),
            "miniprogram_state": self._options.miniprogram_state,
            "lang": self._options.lang,
        }
        if message.page:
            payload["page"] = message.page
        answer = await self._api.post("/cgi-bin/message/subscribe/send", payload, f"{self.provider} send")
        # The API answers a msgid since 2021; without one, our message id still ties the receipt.
        msg_id = answer.get("msgid")
        return SendResult(
            status="sent", provider_message_id=str(msg_id) if msg_id else dispatch.message_id,
            cost=self._options.cost_per_message,
        )

    def parse_callback(self, request: CallbackRequest) -> CallbackReply:
        root, reply = handle_push(self._options.callback_token, request, self.provider)
        if reply is not None or root is None:
            return reply or CallbackReply(receipts=())
        receipts: list[ProviderReceipt] = []
        if root.findtext("Event", "").strip() == "subscribe_msg_sent_event":
            recipient = root.findtext("FromUserName", "").strip()
            for item in root.iter("List"):
                msg_id = item.findtext("MsgID", "").strip()
                code = item.findtext("ErrorCode", "").strip()
                if not msg_id or not code:
                    raise CallbackRejected(f"{self.provider}: subscribe_msg_sent_event item without "
                                           "MsgID or ErrorCode")
                if code == "0":
                    receipts.append(ProviderReceipt(msg_id, "delivered", recipient=recipient))
                else:
                    status = item.findtext("ErrorStatus", "").strip()
                    receipts.append(ProviderReceipt(msg_id, "failed", recipient=recipient,
                                                    reason=f"wechat: errcode {code} {status}".strip()))
        return CallbackReply(receipts=tuple(receipts), body=SUCCESS_REPLY, media_type="text/plain")

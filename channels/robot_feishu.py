"""Feishu (飞书) custom bots: the address is the hook id of `/open-apis/bot/v2/hook/{id}` or a robot name.

Signed bots get `timestamp` and `sign` in the body: base64 of HMAC-SHA256 keyed by
"{timestamp}\\n{secret}" over an empty message, as Feishu documents it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any, ClassVar

import httpx

from channels.base import Channel, ChannelDeps, ProviderOptions, SendResult
from channels.robot_dingtalk import (
    RobotOptions,
    classify,
    post_robot,
    resolve_robot,
    robot_base_url,
    robot_markdown,
    robot_text,
)
from channels.templates import RenderedMessage
from records.topics import Dispatch


def feishu_sign(secret: str, timestamp: str) -> str:
    """Feishu's bot signature for a timestamp in seconds."""
    digest = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class FeishuRobot(Channel):
    """Feishu custom bots (自定义机器人); markdown goes as an interactive card with a markdown element."""

    channel = "robot"
    provider = "feishu"
    options_model: ClassVar[type[ProviderOptions]] = RobotOptions

    _INVALID = frozenset({19001})  # incoming webhook access token invalid
    _THROTTLED = frozenset({9499, 11232})  # 100 a minute, 5 a second per bot
    _CREDENTIALS = frozenset({19021, 19022, 19024})  # sign, IP allowlist, keywords refused

    def __init__(
        self, http: httpx.AsyncClient, options: RobotOptions, clock: Callable[[], float] = time.time
    ) -> None:
        self._base = robot_base_url(options, "https://open.feishu.cn", self.provider)
        self._http = http
        self._options = options
        self._clock = clock

    @classmethod
    def from_options(cls, options: ProviderOptions, deps: ChannelDeps) -> FeishuRobot:
        return cls(deps.http, cls.own_options(options, RobotOptions))

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        robot = resolve_robot(self._options, address, self.provider)
        payload: dict[str, Any]
        if self._options.msgtype == "markdown":
            title, text = robot_markdown(message)
            payload = {"msg_type": "interactive", "card": {
                "config": {"wide_screen_mode": True},
                "header": {"title": {"tag": "plain_text", "content": title}},
                "elements": [{"tag": "markdown", "content": text}],
            }}
        else:
            payload = {"msg_type": "text", "content": {"text": robot_text(message)}}
        if robot.secret:
            timestamp = str(int(self._clock()))
            payload = {"timestamp": timestamp, "sign": feishu_sign(robot.secret, timestamp), **payload}
        what = f"{self.provider} {robot.label}"
        answer = await post_robot(self._http, f"{self._base}/open-apis/bot/v2/hook/{robot.token}", payload,
                                  params=None, seconds=self._options.timeout, what=what)
        code = int(answer.get("code", answer.get("StatusCode", -1)))
        if code != 0:
            raise classify(code, str(answer.get("msg", "")), what, invalid=self._INVALID,
                           throttled=self._THROTTLED, credentials=self._CREDENTIALS, retry_after=10.0)
        return SendResult(status="sent", provider_message_id=dispatch.message_id,
                          cost=self._options.cost_per_message)

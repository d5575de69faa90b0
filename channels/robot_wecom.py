"""WeCom (企业微信) group robots: the address is the robot's webhook key or a configured robot name.

WeCom robots are not signed: the key is the credential, so it is kept as a secret and masked.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from channels.base import Channel, ChannelDeps, PermanentSendError, ProviderOptions, SendResult
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

# WeCom's limits on a message's content, in UTF-8 bytes.
MAX_BYTES = {"markdown": 4096, "text": 2048}


class WeComRobot(Channel):
    """WeCom group robots (群机器人) over `POST /cgi-bin/webhook/send?key=`."""

    channel = "robot"
    provider = "wecom"
    options_model: ClassVar[type[ProviderOptions]] = RobotOptions

    _INVALID = frozenset({93000, 93004})  # invalid webhook url; robot disabled
    _THROTTLED = frozenset({45009})  # 20 messages a minute per robot
    _CREDENTIALS = frozenset({93008})  # robot cannot post into the group (removed, not allowed)

    def __init__(self, http: httpx.AsyncClient, options: RobotOptions) -> None:
        base = robot_base_url(options, "https://qyapi.weixin.qq.com", self.provider)
        self._url = base + "/cgi-bin/webhook/send"
        self._http = http
        self._options = options

    @classmethod
    def from_options(cls, options: ProviderOptions, deps: ChannelDeps) -> WeComRobot:
        return cls(deps.http, cls.own_options(options, RobotOptions))

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        robot = resolve_robot(self._options, address, self.provider)
        kind = self._options.msgtype
        content = robot_markdown(message)[1] if kind == "markdown" else robot_text(message)
        size = len(content.encode())
        if size > MAX_BYTES[kind]:
            raise PermanentSendError(
                f"{self.provider}: {kind} content of {size} bytes is over WeCom's {MAX_BYTES[kind]}"
            )
        payload: dict[str, Any] = {"msgtype": kind, kind: {"content": content}}
        what = f"{self.provider} {robot.label}"
        answer = await post_robot(self._http, self._url, payload, params={"key": robot.token},
                                  seconds=self._options.timeout, what=what)
        code = int(answer.get("errcode", -1))
        if code != 0:
            raise classify(code, str(answer.get("errmsg", "")), what, invalid=self._INVALID,
                           throttled=self._THROTTLED, credentials=self._CREDENTIALS, retry_after=60.0)
        return SendResult(status="sent", provider_message_id=dispatch.message_id,
                          cost=self._options.cost_per_message)

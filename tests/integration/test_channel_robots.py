"""DingTalk, WeCom and Feishu group robots against the local robot webhooks, which check signatures."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from channels.base import (
    Channel,
    ChannelDeps,
    CredentialsError,
    InvalidAddressError,
    PermanentSendError,
    RetryableSendError,
    SendError,
    ThrottledError,
)
from channels.robot_dingtalk import DingTalkRobot, RobotOptions, dingtalk_sign
from channels.robot_feishu import FeishuRobot, feishu_sign
from channels.robot_wecom import WeComRobot
from channels.templates import RenderedMessage
from localparts.peers.robots import PEER, RobotsPeerState, create_app
from localparts.peers.server import PeerServer
from records.topics import Dispatch, EventCore

DT_TOKEN = "1c53e149ba5de6597ca2442e8d6a1bd0c5e7a3b2f94d8e1c6a07b5f3d2e4c1a9"
DT_SECRET = "SEC6d1f0b6a0e9c4b7f8a2d3e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b"
DT_OPEN = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0"  # keyword robot, unsigned
WECOM_KEY = "693a91f6-7a0c-4bc4-97a0-0ec2b1f8a5aa"
FEISHU_HOOK = "c2a7e5d1-3b4f-4e8a-9c6d-0f1e2d3c4b5a"
FEISHU_SECRET = "lIXkHvYpS1zZqW8rT4uE2b"
UNKNOWN = "0000000000000000000000000000000000000000000000000000000000000000"
SECRETS = [DT_TOKEN, DT_SECRET, DT_OPEN, WECOM_KEY, FEISHU_HOOK, FEISHU_SECRET]

MESSAGE = RenderedMessage(
    template="security_alert", channel="robot", title="Security alert: East gate",
    text="**Door forced** at East gate, 02:14. Security is on the way.",
    link="https://campus.example.edu/alerts/881",
)
DISPATCH = Dispatch(
    message_id="m-99", user_id="ops", channel="robot", address="ops",
    event=EventCore(event_id="e9", app="security", type="alert", template="security_alert", category="alert"),
    rule_id="r1", rule_version="1",
)


@dataclass
class Rig:
    peer: RobotsPeerState
    url: str
    deps: ChannelDeps

    def adapter(self, provider: str, **options: Any) -> Channel:
        defaults: dict[str, Any] = {
            "dingtalk": {"secret": DT_SECRET,
                         "robots": {"ops": {"token": DT_TOKEN, "secret": DT_SECRET},
                                    "lobby": {"token": DT_OPEN}}},
            "wecom": {"robots": {"ops": {"token": WECOM_KEY}}},
            "feishu": {"secret": FEISHU_SECRET,
                       "robots": {"ops": {"token": FEISHU_HOOK, "secret": FEISHU_SECRET}}},
        }[provider]
        opts = RobotOptions.model_validate({"base_url": self.url, "cost_per_message": 0.0001,
                                            **defaults, **options})
        cls = {"dingtalk": DingTalkRobot, "wecom": WeComRobot, "feishu": FeishuRobot}[provider]
        return cls.from_options(opts, self.deps)


@pytest.fixture
async def rig(redis: Redis) -> AsyncIterator[Rig]:
    app = create_app(dingtalk={DT_TOKEN: DT_SECRET, DT_OPEN: None}, wecom={WECOM_KEY},
                     feishu={FEISHU_HOOK: FEISHU_SECRET})
    async with PeerServer(app) as server, httpx.AsyncClient() as http:
        yield Rig(app[PEER], server.url, ChannelDeps(http=http, redis=redis))


def _tamper(secret: str) -> str:
    return secret[:-1] + ("x" if secret[-1] != "x" else "y")


# (case, provider, address, option overrides, scripted codes, expected error or None, reason part)
CASES: list[tuple[str, str, str, dict[str, Any], list[int], type[SendError] | None, str]] = [
    ("dingtalk robot name", "dingtalk", "ops", {}, [], None, ""),
    ("dingtalk token signed", "dingtalk", DT_TOKEN, {}, [], None, ""),
    ("dingtalk unsigned robot", "dingtalk", "lobby", {"secret": None}, [], None, ""),
    ("dingtalk text", "dingtalk", "ops", {"msgtype": "text"}, [], None, ""),
    ("dingtalk tampered secret", "dingtalk", DT_TOKEN, {"secret": _tamper(DT_SECRET)}, [],
     CredentialsError, "310000 sign not match"),
    ("dingtalk unsigned send to signed robot", "dingtalk", DT_TOKEN, {"secret": None}, [],
     CredentialsError, "310000"),
    ("dingtalk unknown token", "dingtalk", UNKNOWN, {}, [], InvalidAddressError, "300001"),
    ("dingtalk group dissolved", "dingtalk", "ops", {}, [400013], InvalidAddressError, "400013"),
    ("dingtalk too fast", "dingtalk", "ops", {}, [130101], ThrottledError, "130101 send too fast"),
    ("dingtalk busy", "dingtalk", "ops", {}, [-1], RetryableSendError, "code -1"),
    ("dingtalk not a robot", "dingtalk", "no such robot!", {}, [], InvalidAddressError, "neither"),
    ("wecom robot name", "wecom", "ops", {}, [], None, ""),
    ("wecom key", "wecom", WECOM_KEY, {"msgtype": "text"}, [], None, ""),
    ("wecom invalid key", "wecom", "5f0e2c1a-0000-4bc4-97a0-0ec2b1f8a5aa", {}, [],
     InvalidAddressError, "93000 invalid webhook url"),
    ("wecom too fast", "wecom", "ops", {}, [45009], ThrottledError, "45009 api freq out of limit"),
    ("wecom busy", "wecom", "ops", {}, [-1], RetryableSendError, "code -1"),
    ("feishu robot name", "feishu", "ops", {}, [], None, ""),
    ("feishu hook id text", "feishu", FEISHU_HOOK, {"msgtype": "text"}, [], None, ""),
    ("feishu tampered secret", "feishu", FEISHU_HOOK, {"secret": _tamper(FEISHU_SECRET)}, [],
     CredentialsError, "19021 sign match fail"),
    ("feishu unsigned send to signed bot", "feishu", FEISHU_HOOK, {"secret": None}, [],
     CredentialsError, "19021"),
    ("feishu unknown hook", "feishu", "6b1d2e3f-0000-4e8a-9c6d-0f1e2d3c4b5a", {}, [],
     InvalidAddressError, "19001"),
    ("feishu too many requests", "feishu", "ops", {}, [9499], ThrottledError, "9499"),
    ("feishu frequency limited", "feishu", "ops", {}, [11232], ThrottledError, "11232 frequency limited"),
    ("feishu keyword refused", "feishu", "ops", {}, [19024], CredentialsError, "19024 Key Words Not Found"),
]


@pytest.mark.parametrize(
    ("provider", "address", "options", "script", "expected", "reason"),
    [case[1:] for case in CASES], ids=[case[0] for case in CASES],
)
async def test_send(
    rig: Rig, caplog: pytest.LogCaptureFixture, provider: str, address: str, options: dict[str, Any],
    script: list[int], expected: type[SendError] | None, reason: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="channels")
    rig.peer.script[provider].extend(script)
    adapter = rig.adapter(provider, **options)
    if expected is None:
        result = await adapter.send(MESSAGE, address, DISPATCH)
        assert (result.status, result.provider_message_id, result.cost) == ("sent", "m-99", 0.0001)
        seen = rig.peer.received[-1]
        assert seen["provider"] == provider
        _assert_content(provider, options.get("msgtype", "markdown"), seen["body"])
    else:
        with pytest.raises(expected) as caught:
            await adapter.send(MESSAGE, address, DISPATCH)
        assert type(caught.value) is expected
        assert reason in str(caught.value)
        assert not any(s in str(caught.value) for s in SECRETS)
    assert not any(s in repr(adapter) for s in SECRETS)
    assert not any(s in caplog.text for s in SECRETS)


def _assert_content(provider: str, msgtype: str, body: dict[str, Any]) -> None:
    """The message as each provider shows it: title, text and link all present."""
    if provider == "feishu" and msgtype == "markdown":
        assert body["msg_type"] == "interactive"
        assert body["card"]["header"]["title"]["content"] == MESSAGE.title
        text = body["card"]["elements"][0]["content"]
    elif provider == "feishu":
        text = body["content"]["text"]
    elif provider == "dingtalk" and msgtype == "markdown":
        assert body["markdown"]["title"] == MESSAGE.title
        text = body["markdown"]["text"]
    else:
        text = body[msgtype]["content"]
    assert MESSAGE.text in text and MESSAGE.link in text
    if msgtype == "markdown":
        assert f"### {MESSAGE.title}" in text and f"]({MESSAGE.link})" in text


async def test_dingtalk_signs_the_query_as_dingtalk_documents(rig: Rig) -> None:
    await rig.adapter("dingtalk").send(MESSAGE, "ops", DISPATCH)
    query = rig.peer.received[-1]["query"]
    assert query["access_token"] == DT_TOKEN
    assert abs(int(query["timestamp"]) / 1000 - time.time()) < 60
    assert query["sign"] == dingtalk_sign(DT_SECRET, query["timestamp"])


async def test_feishu_signs_the_body_as_feishu_documents(rig: Rig) -> None:
    await rig.adapter("feishu").send(MESSAGE, "ops", DISPATCH)
    body = rig.peer.received[-1]["body"]
    assert body["sign"] == feishu_sign(FEISHU_SECRET, body["timestamp"])
    assert rig.peer.received[-1]["robot"] == FEISHU_HOOK


@pytest.mark.parametrize("provider", ["dingtalk", "feishu"])
async def test_a_signature_over_an_hour_old_is_refused(rig: Rig, provider: str) -> None:
    opts = RobotOptions.model_validate({"base_url": rig.url, "secret": DT_SECRET if provider == "dingtalk"
                                        else FEISHU_SECRET})
    cls = DingTalkRobot if provider == "dingtalk" else FeishuRobot
    adapter = cls(rig.deps.http, opts, clock=lambda: time.time() - 7200)
    with pytest.raises(CredentialsError):
        await adapter.send(MESSAGE, DT_TOKEN if provider == "dingtalk" else FEISHU_HOOK, DISPATCH)


async def test_wecom_refuses_markdown_over_its_limit_before_sending(rig: Rig) -> None:
    long = MESSAGE.model_copy(update={"text": "警" * 1400})  # 4200 bytes of UTF-8
    with pytest.raises(PermanentSendError, match="over WeCom's 4096"):
        await rig.adapter("wecom").send(long, "ops", DISPATCH)
    assert rig.peer.received == []


async def test_an_empty_message_is_refused_before_sending(rig: Rig) -> None:
    empty = MESSAGE.model_copy(update={"text": "", "body": " "})
    with pytest.raises(PermanentSendError, match="rendered no robot text"):
        await rig.adapter("dingtalk").send(empty, "ops", DISPATCH)
    assert rig.peer.received == []


@pytest.mark.parametrize("provider", ["dingtalk", "wecom", "feishu"])
async def test_unreachable_robot_is_retryable_and_names_no_token(rig: Rig, provider: str) -> None:
    adapter = rig.adapter(provider, base_url="http://127.0.0.1:9")
    with pytest.raises(RetryableSendError, match="connection failed") as caught:
        await adapter.send(MESSAGE, "ops", DISPATCH)
    assert caught.value.__cause__ is None and not any(s in str(caught.value) for s in SECRETS)


def test_options_fail_fast_without_echoing_secrets(rig: Rig) -> None:
    with pytest.raises(ValueError, match="base_url 'ftp://x'"):
        rig.adapter("wecom", base_url="ftp://x")
    with pytest.raises(ValueError, match="robot 'ops': token is not") as caught:
        rig.adapter("dingtalk", robots={"ops": {"token": "bad token with spaces"}})
    assert "bad token" not in str(caught.value)
    options = RobotOptions.model_validate({"secret": DT_SECRET, "robots": {"ops": {"token": DT_TOKEN}}})
    assert not any(s in repr(options) for s in SECRETS)

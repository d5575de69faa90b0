"""DingTalk group robots, and what every group robot adapter shares (options, markdown, posting).

A robot's address is either the name of a robot configured under `robots` (its token and signing
secret kept in the providers file as secrets) or the robot's webhook token itself, signed with the
provider's `secret`. Robots post to a group, so there is no delivery callback: accepted means sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, SecretStr

from channels.base import (
    Channel,
    ChannelDeps,
    CredentialsError,
    InvalidAddressError,
    PermanentSendError,
    ProviderOptions,
    RetryableSendError,
    SendError,
    SendResult,
    ThrottledError,
)
from channels.templates import RenderedMessage
from records.topics import Dispatch

_ROBOT_ID = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


class RobotEntry(ProviderOptions):
    """One configured robot: its webhook token (access_token, key or hook id) and signing secret."""

    token: SecretStr
    secret: SecretStr | None = None


class RobotOptions(ProviderOptions):
    """Options every group robot provider takes; the base URL lets tests point at the local peer."""

    base_url: str = ""
    """The API's base URL; empty means the provider's public endpoint."""
    secret: SecretStr | None = None
    """Signing secret for robots addressed by their token (robots listed under `robots` carry their own)."""
    robots: dict[str, RobotEntry] = Field(default_factory=dict)
    """Robot name -> its token and secret, so an address can name a robot without holding its token."""
    msgtype: Literal["markdown", "text"] = "markdown"
    timeout: float = 10.0
    cost_per_message: float = 0.0


@dataclass(frozen=True)
class RobotTarget:
    """The robot a send goes to; `label` names it in reasons without revealing its token."""

    token: str
    secret: str | None
    label: str


def robot_base_url(options: RobotOptions, default: str, provider: str) -> str:
    """The base URL to post to; fail fast on options no robot could be reached with (never a secret)."""
    base = options.base_url or default
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"{provider} base_url {base!r} is not an http(s) URL")
    if options.timeout <= 0:
        raise ValueError(f"{provider} timeout must be positive, got {options.timeout}")
    for name, entry in options.robots.items():
        if not _ROBOT_ID.match(entry.token.get_secret_value()):
            raise ValueError(f"{provider} robot {name!r}: token is not a robot webhook token")
    return base.rstrip("/")


def resolve_robot(options: RobotOptions, address: str, provider: str) -> RobotTarget:
    """The configured robot named `address`, or the robot whose token `address` is."""
    entry = options.robots.get(address)
    if entry is not None:
        secret = entry.secret or options.secret
        return RobotTarget(entry.token.get_secret_value(),
                           secret.get_secret_value() if secret else None, f"robot {address!r}")
    if not _ROBOT_ID.match(address):
        raise InvalidAddressError(f"{provider}: {mask(address)!r} is neither a configured robot name "
                                  "nor a robot webhook token")
    default = options.secret.get_secret_value() if options.secret else None
    return RobotTarget(address, default, f"robot {mask(address)}")


def mask(token: str) -> str:
    """Enough of a robot token to tell robots apart in a reason, not enough to post with."""
    return f"{token[:4]}…" if len(token) > 4 else "…"


def _text_of(message: RenderedMessage) -> str:
    text = message.text or message.body
    if not text.strip():
        raise PermanentSendError(f"template {message.template!r} rendered no robot text")
    return text


def robot_markdown(message: RenderedMessage) -> tuple[str, str]:
    """Title and markdown body of a robot message: the title as heading, the text, then the link."""
    title = message.title or message.subject or message.template
    text = _text_of(message)
    lines = [f"### {title}", "", text]
    if message.link.startswith(("https://", "http://")):
        lines += ["", f"[查看详情 Details]({message.link})"]
    return title, "\n".join(lines).strip()


def robot_text(message: RenderedMessage) -> str:
    """The plain-text form: title, text and link on their own lines."""
    title = message.title or message.subject
    parts = [title, _text_of(message)]
    if message.link.startswith(("https://", "http://")):
        parts.append(message.link)
    return "\n".join(p for p in parts if p)


async def post_robot(
    http: httpx.AsyncClient, url: str, payload: dict[str, Any], *, params: dict[str, str] | None,
    seconds: float, what: str,
) -> dict[str, Any]:
    """POST a robot message and return the JSON object answered; transport failures are retryable."""
    try:
        response = await http.post(url, params=params, json=payload, timeout=seconds)
    except httpx.TimeoutException as exc:
        raise RetryableSendError(f"{what}: timed out ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        # Neither formatted nor chained: its text may carry the URL, and the URL the robot's token.
        raise RetryableSendError(f"{what}: connection failed ({type(exc).__name__})") from None
    if response.status_code == 429:
        raise ThrottledError(f"{what}: HTTP 429", retry_after=60.0)
    if response.status_code >= 500:
        raise RetryableSendError(f"{what}: HTTP {response.status_code}")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise (PermanentSendError if response.status_code >= 400 else RetryableSendError)(
            f"{what}: HTTP {response.status_code} with an answer that is not a JSON object"
        )
    return answer


def classify(
    code: int, message: str, what: str, *, invalid: Collection[int], throttled: Collection[int],
    credentials: Collection[int], retry_after: float,
) -> SendError:
    """The send error for a robot API's error code, its reason naming the code and the API's words."""
    reason = f"{what}: code {code} {message}".strip()
    if code in invalid:
        return InvalidAddressError(reason)
    if code in throttled:
        return ThrottledError(reason, retry_after=retry_after)
    if code in credentials:
        return CredentialsError(reason)
    if code == -1:
        return RetryableSendError(reason)
    return PermanentSendError(reason)


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """DingTalk's robot signature: base64 HMAC-SHA256 of "{timestamp}\\n{secret}" keyed by the secret."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class DingTalkRobot(Channel):
    """DingTalk custom group robots (自定义机器人), signed (加签) when a secret is configured."""

    channel = "robot"
    provider = "dingtalk"
    options_model: ClassVar[type[ProviderOptions]] = RobotOptions

    # 310000 covers every security setting refused: signature, timestamp, keywords, IP allowlist.
    _INVALID = frozenset({300001, 300005, 400013, 400101, 400102, 400106})
    _THROTTLED = frozenset({130101, 410100})
    _CREDENTIALS = frozenset({310000})

    def __init__(
        self, http: httpx.AsyncClient, options: RobotOptions, clock: Callable[[], float] = time.time
    ) -> None:
        self._url = robot_base_url(options, "https://oapi.dingtalk.com", self.provider) + "/robot/send"
        self._http = http
        self._options = options
        self._clock = clock

    @classmethod
    def from_options(cls, options: ProviderOptions, deps: ChannelDeps) -> DingTalkRobot:
        return cls(deps.http, cls.own_options(options, RobotOptions))

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        robot = resolve_robot(self._options, address, self.provider)
        params = {"access_token": robot.token}
        if robot.secret:
            timestamp = str(int(self._clock() * 1000))
            params |= {"timestamp": timestamp, "sign": dingtalk_sign(robot.secret, timestamp)}
        if self._options.msgtype == "markdown":
            title, text = robot_markdown(message)
            payload: dict[str, Any] = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
        else:
            payload = {"msgtype": "text", "text": {"content": robot_text(message)}}
        what = f"{self.provider} {robot.label}"
        answer = await post_robot(self._http, self._url, payload, params=params,
                                  seconds=self._options.timeout, what=what)
        code = int(answer.get("errcode", -1))
        if code != 0:
            raise classify(code, str(answer.get("errmsg", "")), what, invalid=self._INVALID,
                           throttled=self._THROTTLED, credentials=self._CREDENTIALS,
                           retry_after=60.0)  # DingTalk allows 20 messages a minute per robot
        return SendResult(status="sent", provider_message_id=dispatch.message_id,
                          cost=self._options.cost_per_message)

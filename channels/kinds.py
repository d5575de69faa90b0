"""Provider kinds: the name used in the providers file, mapped to its adapter class, imported lazily.

Lazy so that loading the providers file imports only the adapters it uses (FCM pulls in JWT signing,
APNs HTTP/2), and a kind whose module is missing is reported as such rather than breaking every import.
"""

from __future__ import annotations

import importlib

from channels.base import Channel

KINDS: dict[str, str] = {
    "aliyun": "channels.sms_aliyun:AliyunSms",
    "tencent": "channels.sms_tencent:TencentSms",
    "http-sms": "channels.sms_gateway:HttpSmsGateway",
    "fcm": "channels.push_fcm:FcmPush",
    "apns": "channels.push_apns:ApnsPush",
    "jpush": "channels.push_jpush:JPush",
    "wechat-oa": "channels.wechat_oa:WechatOfficialAccount",
    "wechat-mp": "channels.wechat_mp:WechatMiniProgram",
    "dingtalk": "channels.robot_dingtalk:DingTalkRobot",
    "wecom": "channels.robot_wecom:WeComRobot",
    "feishu": "channels.robot_feishu:FeishuRobot",
}
"""Kind -> "module:Class". Email, inbox and webhook are built from the settings, not from this map."""


class KindUnavailable(LookupError):
    """A kind that is unknown, or whose adapter module cannot be imported."""


def adapter_for(kind: str) -> type[Channel]:
    """The adapter class of `kind`; raise KindUnavailable saying why it cannot be had."""
    target = KINDS.get(kind)
    if target is None:
        raise KindUnavailable(f"unknown provider kind {kind!r}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # the adapter exists but one of its own imports is missing: a real bug, show it
        raise KindUnavailable(f"provider kind {kind!r} is not installed (no module {module_name})") from None
    adapter = getattr(module, class_name, None)
    if not (isinstance(adapter, type) and issubclass(adapter, Channel)):
        raise KindUnavailable(f"provider kind {kind!r}: {target} is not a Channel class")
    return adapter

"""Provider callbacks through the API: the real Aliyun adapter verifies them, receipts come out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from channels.inbox import InboxChannel
from channels.sms_aliyun import AliyunSms, AliyunSmsOptions
from state.inbox import Inbox
from tests.integration.test_api_support import Api, dispatch, running_api

TOKEN = "cb-7f3a9c2e51d04b8e"


def report(
    biz_id: str, success: bool, code: str = "DELIVERED", message: str = "用户接收成功"
) -> dict[str, object]:
    """One entry of Aliyun's SmsReport push, as documented."""
    return {
        "phone_number": "13800138000", "send_time": "2026-11-22 11:12:13",
        "report_time": "2026-11-22 11:12:16", "success": success, "err_code": code, "err_msg": message,
        "sms_size": "1", "biz_id": biz_id, "out_id": "m-1",
    }


FIRST, SECOND = "932702304080415357^0", "932702304080415358^0"



@pytest.fixture
async def api(redis: Redis) -> AsyncIterator[Api]:
    options = AliyunSmsOptions(
        access_key_id="LTAI5tTestAccessKey", access_key_secret=SecretStr("aliyun-test-secret"),
        sign_name="示例大学", callback_token=SecretStr(TOKEN),
    )
    async with httpx.AsyncClient() as http:
        providers = {"aliyun-main": AliyunSms(options, http), "inbox": InboxChannel(Inbox(redis))}
        async with running_api(redis, providers) as running:
            await running.sent.remember("aliyun-main", FIRST, dispatch("sms", message_id="m-1"))
            await running.sent.remember("aliyun-main", SECOND, dispatch("sms", message_id="m-2"))
            yield running


async def test_a_verified_report_becomes_receipts_named_like_the_send(api: Api) -> None:
    body = [
        report(FIRST, True),
        report(SECOND, False, "MOBILE_NOT_ON_SERVICE", "停机"),
        report("999999999999999999^0", True),  # not ours, or older than the memory of sends
    ]
    answer = await api.client.post(f"/v1/callbacks/aliyun-main?token={TOKEN}", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"code": 0, "msg": "成功"}  # what Aliyun expects back
    got = {r.message_id: r for r in api.publisher.receipts}
    assert (got["m-1"].status, got["m-1"].reason, got["m-1"].provider) == ("delivered", "", "aliyun-main")
    assert (got["m-2"].status, got["m-2"].reason) == ("failed", "MOBILE_NOT_ON_SERVICE: 停机")
    assert (got["m-1"].channel, got["m-1"].rule_id, got["m-1"].variant, got["m-1"].campaign) == (
        "sms", "campus-notices", "A", "open-day",
    )
    assert len(api.publisher.receipts) == 2


@pytest.mark.parametrize(
    ("path", "body", "code", "detail"),
    [
        ("/v1/callbacks/aliyun-main?token=wrong", b"[]", 403, "refused: aliyun callback token is missing"),
        ("/v1/callbacks/aliyun-main", b"[]", 403, "callback refused"),
        (f"/v1/callbacks/aliyun-main?token={TOKEN}", b"{not json", 403, "not JSON"),
        (f"/v1/callbacks/aliyun-main?token={TOKEN}", b'[{"biz_id": "1"}]', 403, "entry 0"),
        ("/v1/callbacks/inbox", b"{}", 403, "sends no delivery callbacks"),
        ("/v1/callbacks/tencent-main", b"[]", 404, "'tencent-main' (known: aliyun-main, inbox)"),
        ("/v1/callbacks/bad%20name", b"[]", 422, "provider_name"),
    ],
)
async def test_forged_or_unknown_callbacks_are_refused_with_a_reason(
    api: Api, path: str, body: bytes, code: int, detail: str
) -> None:
    answer = await api.client.post(path, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == code
    assert detail in answer.text
    assert api.publisher.receipts == []


async def test_a_huge_body_is_refused_before_parsing(api: Api) -> None:
    huge = b"[" + b" " * (2 << 20) + b"]"
    answer = await api.client.post(f"/v1/callbacks/aliyun-main?token={TOKEN}", content=huge)
    assert answer.status_code == 413


async def test_broker_down_answers_503_so_the_provider_retries(api: Api) -> None:
    api.publisher.down = True
    body = json.dumps([report(FIRST, True)])
    answer = await api.client.post(f"/v1/callbacks/aliyun-main?token={TOKEN}", content=body)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    api.publisher.down = False
    retried = await api.client.post(f"/v1/callbacks/aliyun-main?token={TOKEN}", content=body)
    assert retried.status_code == 200
    assert [r.message_id for r in api.publisher.receipts] == ["m-1"]


async def test_refusals_never_echo_a_token(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    answer = await api.client.post("/v1/callbacks/aliyun-main?token=guess-0042", content=b"[]")
    assert answer.status_code == 403
    assert "guess-0042" not in answer.text and TOKEN not in answer.text
    assert "guess-0042" not in caplog.text and TOKEN not in caplog.text

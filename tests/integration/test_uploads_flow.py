"""Uploaded lists through the whole flow in real processes: broker → worker → the local SMS gateway peer
and SMTP server → analytics service → ClickHouse. Each cleaned address is sent to once (a known
person's number as that person), and an email list longer than a page goes through a broadcast job."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from analytics.connection import open_reader
from api.upload_reader import import_file
from localparts import LocalSmtpServer
from localparts.peers.server import PeerServer
from localparts.peers.sms_gateway import STATE, create_app
from localparts.switchboard_process import SwitchboardProcess
from records.topics import address_user_id
from settings import Settings
from state.apps import AppRegistry
from state.uploads import UploadStore
from state.users import User, UserDirectory
from tests.integration.test_flow import produce, wait_caught_up

SECRET = "uploads-gateway-secret"
RULES = """\
ruleset: uploads-flow
rules:
  - id: texts
    when: {type: [list.sms]}
    then: {first_of: [sms]}
  - id: mails
    when: {type: [list.email]}
    then: {first_of: [email]}
"""
PHONES = "手机号\n13800138000\n139 0013 9000\n+86 139-0013-9000\n13700137000\n12345\n"
EMAILS = "邮箱\n" + "".join(f"p{n}@uni.example\n" for n in range(5)) + "P0@uni.example\nbroken@\n"


def providers(url: str) -> str:
    return (
        "sms:\n  - name: gateway\n    kind: http-sms\n"
        f"    options: {{url: '{url}/sms', secret: '${{UPLOADS_SMS_SECRET}}', sender: CAMPUS}}\n"
    )


def event(event_id: str, kind: str, upload_id: str) -> bytes:
    return json.dumps({
        "event_id": event_id, "app": "lms", "type": f"list.{kind}", "template": "course_reminder",
        "category": "notice", "audience": {"upload": upload_id},
        "data": {"course": "Linear Algebra", "starts_at": "10:00", "room": "B201"},
    }).encode()


async def stored(redis: Redis, path: Path, text: str) -> str:
    await asyncio.to_thread(path.write_text, text, encoding="utf-8")
    upload = await import_file(UploadStore(redis), path, app="lms", kind=None, ttl_hours=1,
                               filename=path.name, created_by="test", max_errors_kept=100)
    return upload.upload_id


async def test_an_uploaded_list_is_sent_once_per_cleaned_address_and_every_send_is_in_clickhouse(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPLOADS_SMS_SECRET", SECRET)
    await UserDirectory(redis).upsert([User(user_id="s1", name="Wang", bindings={"sms": "+8613800138000"})])
    await AppRegistry(redis).register("lms", {"sms", "email"})
    phones = await stored(redis, tmp_path / "phones.csv", PHONES)
    emails = await stored(redis, tmp_path / "emails.csv", EMAILS)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    peer = create_app(SECRET)
    async with PeerServer(peer) as server:
        path = tmp_path / "providers.yaml"
        path.write_text(providers(server.url))
        flow = settings.model_copy(update={
            "clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}", "rules": rules, "providers": path,
            "webhook_secret": SecretStr("uploads-webhook-secret"), "broadcast_page": 2,
        })
        with (
            SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
            SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
        ):
            await produce(flow, [event("texts-1", "sms", phones), event("mails-1", "email", emails)])
            await wait_caught_up(redis, 2, worker, service)
            assert worker.stop() == 0, worker.log_tail()
            client = open_reader(flow)
            try:
                rows = client.query(
                    "SELECT event_id, user_id FROM message_events FINAL "
                    "WHERE event_id IN ('texts-1', 'mails-1') AND status = 'sent' ORDER BY user_id"
                ).result_rows
            finally:
                client.close()
        texts = Counter(message["to"] for message in peer[STATE].received)

    assert texts == {"+8613800138000": 1, "+8613900139000": 1, "+8613700137000": 1}
    mails = Counter(rcpt for message in smtp.messages for rcpt in message.rcpt_tos)
    assert mails == {f"p{n}@uni.example": 1 for n in range(5)}
    sent = Counter((event_id, user_id) for event_id, user_id in rows)
    assert sent == {
        ("texts-1", "s1"): 1,  # the known person's number reached them as themselves
        ("texts-1", address_user_id("sms", "+8613900139000")): 1,
        ("texts-1", address_user_id("sms", "+8613700137000")): 1,
        **{("mails-1", address_user_id("email", f"p{n}@uni.example")): 1 for n in range(5)},
    }

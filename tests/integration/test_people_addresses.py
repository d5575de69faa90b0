"""Several addresses per channel, end to end: through a real worker to the local FCM peer and SMTP
server, `all` reaches every device and mailbox, `latest` only the device used last, `primary` only the
primary mailbox; and a redelivered dispatch of an `all` send sends nothing twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from redis.asyncio import Redis

from channels.base import RetryPolicy
from channels.email_smtp import SmtpEmail
from channels.links import LinkSigner
from channels.templates import TemplateCatalog
from localparts import LocalSmtpServer
from localparts.peers.fcm import STATE, create_app
from localparts.peers.server import PeerServer
from localparts.switchboard_process import SwitchboardProcess
from processors.decide import Decide
from processors.send import Send
from records.topics import Delivery, EventCore, message_id_for
from rules.engine import AsyncRuleEngine
from rules.loader import load_ruleset
from settings import ROOT, Settings
from state.apps import AppRegistry
from state.idempotency import SendLedger
from state.schedule import DeliverySchedule
from state.users import User, UserDirectory
from tests.integration.test_flow import produce, wait_caught_up

PROJECT, CLIENT_EMAIL = "campus-app-4711", "push@campus-app-4711.iam.gserviceaccount.com"
RULES = """\
ruleset: people-addresses
rules:
  - id: reminders
    when: {type: [course.reminder]}
    then: {channels: [push, email]}
"""
NOW = datetime.now(UTC)


def token(name: str) -> str:
    return f"fcm:{name}-device-token-0123456789"


def person(
    user_id: str, devices: list[tuple[str, datetime]], emails: list[str], **choice: str
) -> User:
    return User.model_validate({
        "user_id": user_id,
        "addresses": {
            "push": [{"address": token(name), "last_active": seen} for name, seen in devices],
            "email": [{"address": a, "primary": n == 1} for n, a in enumerate(emails)],
        } if devices else {"email": [{"address": a} for a in emails]},
        "address_choice": choice,
    })


PEOPLE = [
    # Every device and every mailbox.
    person("p-all", [("a-phone", NOW - timedelta(days=2)), ("a-tablet", NOW - timedelta(days=9))],
           ["all1@uni.example", "all2@uni.example"], push="all", email="all"),
    # Push: only the device used last (the default); email: only the primary (the default).
    person("p-default", [("d-old", NOW - timedelta(days=30)), ("d-new", NOW - timedelta(hours=1))],
           ["first@uni.example", "primary@uni.example"]),
]


def event(event_id: str, user_ids: list[str]) -> dict[str, object]:
    return {
        "event_id": event_id, "app": "lms", "type": "course.reminder", "template": "course_reminder",
        "category": "transactional", "audience": {"user_ids": user_ids},
        "data": {"course": "Optics", "starts_at": "10:00", "room": "B201"},
    }


def providers(url: str) -> str:
    return (
        "push:\n  - name: fcm\n    kind: fcm\n    options:\n"
        f"      project_id: {PROJECT}\n      client_email: {CLIENT_EMAIL}\n"
        "      private_key: ${PEOPLE_FCM_KEY}\n"
        f"      token_uri: {url}/token\n      endpoint: {url}\n"
    )


async def test_all_reaches_every_device_and_mailbox_latest_and_primary_one(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    monkeypatch.setenv("PEOPLE_FCM_KEY", private)  # the worker inherits it; the file names it only
    await UserDirectory(redis).upsert(PEOPLE)
    await AppRegistry(redis).register("lms", {"push", "email"})
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    peer = create_app(project_id=PROJECT, client_email=CLIENT_EMAIL, public_key_pem=public)
    async with PeerServer(peer) as server:
        path = tmp_path / "providers.yaml"
        path.write_text(providers(server.url))
        flow = settings.model_copy(update={"rules": rules, "providers": path})
        with SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker:
            await produce(flow, [json.dumps(event("optics-1", ["p-all", "p-default"])).encode()])
            await wait_caught_up(redis, 1, worker)
            assert worker.stop() == 0, worker.log_tail()
        pushed = sorted(r["json"]["message"]["token"] for r in peer[STATE].received)

    reached = (token("a-phone"), token("a-tablet"), token("d-new"))
    assert pushed == sorted(t.removeprefix("fcm:") for t in reached)
    mailed = sorted(r for mail in smtp.messages for r in mail.rcpt_tos)
    assert mailed == ["all1@uni.example", "all2@uni.example", "primary@uni.example"]


async def test_a_redelivered_dispatch_to_every_address_sends_to_each_once(
    redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    everyone = person("p-mail", [], ["m1@uni.example", "m2@uni.example", "m3@uni.example"], email="all")
    await UserDirectory(redis).upsert([everyone])
    await AppRegistry(redis).register("lms", {"email"})
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("[push, email]", "[email]"))
    signer = LinkSigner(SecretStr("people-test-link-secret-0123456789"), "https://notify.uni.example")
    channels = {"email": SmtpEmail(smtp.host, smtp.port, "noreply@uni.example", timeout=5.0, links=signer)}
    engine = AsyncRuleEngine(load_ruleset(rules))
    try:
        decide = Decide(
            UserDirectory(redis), AppRegistry(redis), engine, DeliverySchedule(redis), frozenset(channels)
        )
        send = Send(channels, TemplateCatalog(ROOT / "templates"), UserDirectory(redis),
                    SendLedger(redis, ttl_seconds=3600), RetryPolicy(max_attempts=1))
        core = EventCore.model_validate({k: v for k, v in event("optics-2", []).items() if k != "audience"})
        message_id = message_id_for("lms", "optics-2", "p-mail")
        delivery = Delivery(message_id=message_id, user_id="p-mail", event=core)
        decided = await decide.handle([delivery])
    finally:
        engine.close()
    dispatches = decided.dispatches
    assert sorted(d.address for d in dispatches) == ["m1@uni.example", "m2@uni.example", "m3@uni.example"]
    assert all(d.every_address for d in dispatches)
    # One `decided` row for the channel, not one per address.
    assert [r.status for r in decided.receipts] == ["decided"]

    first = await send.handle(dispatches)
    assert [r.status for r in first.receipts].count("sent") == 3
    # The same three again (a redelivery), and one twice within the batch: nothing goes out twice.
    again = await send.handle([*dispatches, dispatches[0]])
    assert again.already_sent == 4
    assert sorted(r for mail in smtp.messages for r in mail.rcpt_tos) == [
        "m1@uni.example", "m2@uni.example", "m3@uni.example"
    ]

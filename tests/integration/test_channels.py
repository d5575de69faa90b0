"""Channels against real local peers: aiosmtpd, redis-server and an aiohttp webhook receiver."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import ssl
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from redis.asyncio import Redis

from channels.base import RetryPolicy, deliver
from channels.email_smtp import MESSAGE_ID_HEADER, SmtpEmail
from channels.inbox import InboxChannel
from channels.links import LinkSigner, track_links
from channels.registry import build_channels
from channels.templates import RenderedMessage, TemplateCatalog
from channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, Webhook, verify
from localparts import LocalSmtpServer, free_port
from records.topics import Dispatch, EventCore
from settings import ROOT, Settings
from state.idempotency import SendLedger
from state.inbox import Inbox
from state.users import User

pytestmark = pytest.mark.integration

SECRET = "integration-hook-secret"
SENDER = "Academic Affairs <noreply@uni.example.edu>"
SIGNER = LinkSigner(SecretStr("integration-link-secret-0123456789"), "https://notify.uni.example.edu")
CATALOG = TemplateCatalog(ROOT / "templates")
LI_WEI = User(user_id="s2024001", name="Li Wei")
COURSE = {"course": "Linear Algebra", "starts_at": "08:00", "room": "A-101"}
FEE = {"amount": "¥5,000", "due_date": "2026-09-01", "term": "Autumn 2026"}


async def no_sleep(seconds: float) -> None:
    return None


def dispatch(
    channel: str, address: str, message_id: str = "m-1", template: str = "course_reminder"
) -> Dispatch:
    return Dispatch.model_validate({
        "message_id": message_id, "user_id": LI_WEI.user_id, "channel": channel, "address": address,
        "event": EventCore(event_id="e-1", app="academic", type="reminder", template=template,
                           category="notice", campaign="week-1"),
        "rule_id": "default", "rule_version": "3",
    })


def email_to(smtp_host: str, port: int, connections: int = 2) -> SmtpEmail:
    return SmtpEmail(smtp_host, port, SENDER, timeout=5.0, connections=connections, links=SIGNER)


# --- email -------------------------------------------------------------------------------------

async def test_email_reaches_the_smtp_server_as_multipart(smtp: LocalSmtpServer) -> None:
    channel = email_to(smtp.host, smtp.port)
    message = CATALOG.render("course_reminder", "email", COURSE, LI_WEI)
    try:
        outcome = await deliver(channel, message, "li.wei@uni.example.edu",
                                dispatch("email", "li.wei@uni.example.edu"), RetryPolicy())
    finally:
        await channel.close()
    assert (outcome.status, outcome.attempts, outcome.provider) == ("sent", 1, "smtp")
    [mail] = await asyncio.to_thread(smtp.wait_for, 1)
    assert mail.rcpt_tos == ("li.wei@uni.example.edu",)
    assert mail.message["Message-ID"] == outcome.provider_message_id == "<m-1.0@uni.example.edu>"
    assert mail.message[MESSAGE_ID_HEADER] == "m-1"
    assert mail.message["Subject"] == "Reminder: Linear Algebra starts at 08:00 | 课程提醒"
    html = mail.message.get_body(("html",))
    text = mail.message.get_body(("plain",))
    assert html is not None and "<strong>A-101</strong>" in html.get_content()
    assert text is not None and "请准时到场" in text.get_content()


async def test_a_resent_email_carries_the_same_message_id_for_receivers_to_dedup(
    smtp: LocalSmtpServer,
) -> None:
    channel = email_to(smtp.host, smtp.port)
    subject = "提醒 🎓 " + ("Linear Algebra moved to room A-101 " * 4).strip()
    text = "李伟同学：\n" + "x" * 1200 + "\n=end"
    message = RenderedMessage(
        template="t", channel="email", subject=subject, text=text, html=f"<p>{text}</p>"
    )
    sent = dispatch("email", "li.wei@uni.example.edu", "m-resent")
    try:
        first = await channel.send(message, "li.wei@uni.example.edu", sent)
        again = await channel.send(message, "li.wei@uni.example.edu", sent)  # a redelivered dispatch
    finally:
        await channel.close()
    mails = await asyncio.to_thread(smtp.wait_for, 2)
    assert first.provider_message_id == again.provider_message_id == "<m-resent.0@uni.example.edu>"
    assert [m.message["Message-ID"] for m in mails] == ["<m-resent.0@uni.example.edu>"] * 2
    for mail in mails:
        assert mail.mail_from == "noreply@uni.example.edu"
        assert mail.message["Subject"] == subject
        body = mail.message.get_body(("plain",))
        assert body is not None and body.get_content().replace("\r\n", "\n") == text + "\n"


async def test_many_concurrent_emails_share_a_few_connections(smtp: LocalSmtpServer) -> None:
    channel = email_to(smtp.host, smtp.port, connections=3)
    message = CATALOG.render("campus_notice", "email", {"headline": "Library hours", "body": "8-22"}, None)
    try:
        outcomes = await asyncio.gather(*(
            deliver(channel, message, f"s{n}@uni.example.edu", dispatch("email", "", f"m-{n}"), RetryPolicy())
            for n in range(40)
        ))
    finally:
        await channel.close()
    assert {o.status for o in outcomes} == {"sent"}
    mails = await asyncio.to_thread(smtp.wait_for, 40)
    assert sorted(m.rcpt_tos[0] for m in mails) == sorted(f"s{n}@uni.example.edu" for n in range(40))


class _Refusing:
    """Refuses `nobody@` permanently (550) and `busy@` temporarily (451); accepts the rest."""

    def __init__(self) -> None:
        self.accepted: list[str] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 <nobody@uni.example.edu>: Recipient address rejected: User unknown"
        if address.startswith("busy@"):
            return "451 4.2.0 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.accepted.extend(envelope.rcpt_tos)
        return "250 Message accepted"


@pytest.fixture
def refusing_smtp() -> Iterator[tuple[Controller, _Refusing]]:
    handler = _Refusing()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


async def test_unknown_recipient_550_is_permanent_and_the_connection_stays_usable(
    refusing_smtp: tuple[Controller, _Refusing],
) -> None:
    controller, handler = refusing_smtp
    channel = email_to(controller.hostname, controller.port, connections=1)
    message = CATALOG.render("campus_notice", "email", {"headline": "h", "body": "b"}, None)
    try:
        refused = await deliver(channel, message, "nobody@uni.example.edu",
                                dispatch("email", "", "m-bad"), RetryPolicy(), sleep=no_sleep)
        accepted = await deliver(channel, message, "li.wei@uni.example.edu",
                                 dispatch("email", "", "m-good"), RetryPolicy(), sleep=no_sleep)
    finally:
        await channel.close()
    assert (refused.status, refused.attempts, refused.retryable) == ("failed", 1, False)
    assert refused.reason.startswith("recipient refused: 550 5.1.1")
    assert accepted.status == "sent"
    assert handler.accepted == ["li.wei@uni.example.edu"]


async def test_temporary_refusal_451_is_retried_then_handed_back(
    refusing_smtp: tuple[Controller, _Refusing],
) -> None:
    controller, handler = refusing_smtp
    channel = email_to(controller.hostname, controller.port)
    message = CATALOG.render("campus_notice", "email", {"headline": "h", "body": "b"}, None)
    try:
        outcome = await deliver(channel, message, "busy@uni.example.edu", dispatch("email", ""),
                                RetryPolicy(max_attempts=3), sleep=no_sleep)
    finally:
        await channel.close()
    assert (outcome.status, outcome.attempts, outcome.retryable) == ("failed", 3, True)
    assert "451 4.2.0" in outcome.reason
    assert handler.accepted == []


class _Guarded:
    """aiosmtpd handler of a relay that insists on STARTTLS and AUTH, keeping what it accepts."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(envelope.content)
        return "250 OK"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as a private CA's relay would present."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "relay.pem", folder / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return cert_path, key_path


@pytest.fixture
def guarded_relay(tmp_path: Path) -> Iterator[tuple[Controller, _Guarded, ssl.SSLContext]]:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"relay-user", b"relay-pass")
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 itself

    handler = _Guarded()
    controller = Controller(
        handler, hostname="127.0.0.1", port=free_port(), tls_context=server_tls, require_starttls=True,
        authenticator=authenticate, auth_require_tls=True,
    )
    controller.start()
    try:
        yield controller, handler, ssl.create_default_context(cafile=str(cert))
    finally:
        controller.stop()


@pytest.mark.parametrize(
    ("starttls", "password", "outcome"),
    [
        (True, "relay-pass", "sent"),
        (True, "wrong-pass", "SMTP login as 'relay-user' refused: 535"),
        (False, "relay-pass", "does not offer AUTH"),  # the relay offers AUTH only after STARTTLS
    ],
)
async def test_email_over_starttls_with_auth(
    guarded_relay: tuple[Controller, _Guarded, ssl.SSLContext],
    starttls: bool,
    password: str,
    outcome: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    controller, handler, client_tls = guarded_relay
    channel = SmtpEmail(
        "127.0.0.1", controller.port, SENDER, username="relay-user", password=SecretStr(password),
        starttls=starttls, tls_context=client_tls, timeout=5.0, links=SIGNER,
    )
    try:
        notice = CATALOG.render("campus_notice", "email", {"headline": "h", "body": "b"}, None)
        result = await deliver(channel, notice, "li.wei@uni.example.edu", dispatch("email", ""),
                               RetryPolicy(max_attempts=1))
    finally:
        await channel.close()
    if outcome == "sent":
        assert result.status == "sent" and len(handler.received) == 1
    else:
        assert result.status == "failed" and outcome in result.reason and handler.received == []
    assert password not in result.reason and password not in caplog.text


async def test_tracked_email_arrives_with_one_click_unsubscribe_and_pixel(smtp: LocalSmtpServer) -> None:
    signer = LinkSigner(SecretStr("integration-link-secret-0123456789"), "https://notify.uni.example.edu")
    channel = SmtpEmail(
        smtp.host, smtp.port, SENDER, links=signer, unsubscribe_mailto="unsub@uni.example.edu"
    )
    sent = dispatch("email", "li.wei@uni.example.edu")
    message = track_links(CATALOG.render("fee_due", "email", FEE, LI_WEI), sent, signer)
    try:
        assert (await deliver(channel, message, "li.wei@uni.example.edu", sent, RetryPolicy())).ok
    finally:
        await channel.close()
    [mail] = await asyncio.to_thread(smtp.wait_for, 1)
    https, mailto = (t.strip().strip("<>") for t in str(mail.message["List-Unsubscribe"]).split(","))
    assert signer.verify("unsubscribe", https.rsplit("/", 1)[1]).category == "notice"
    assert mailto.startswith("mailto:unsub@uni.example.edu?subject=unsubscribe%20")
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = mail.message.get_body(("html",))
    assert html is not None and '<img src="https://notify.uni.example.edu/t/o/' in html.get_content()


# --- inbox and the send ledger ---------------------------------------------------------------

async def test_inbox_delivery_is_stored_once_even_when_redelivered(redis: Redis) -> None:
    inbox = Inbox(redis)
    channel = InboxChannel(inbox)
    message = CATALOG.render("fee_due", "inbox", FEE, LI_WEI)
    to_inbox = dispatch("inbox", LI_WEI.user_id, template="fee_due")
    first = await deliver(channel, message, LI_WEI.user_id, to_inbox, RetryPolicy())
    again = await deliver(channel, message, LI_WEI.user_id, to_inbox, RetryPolicy())
    assert (first.status, again.status) == ("delivered", "delivered")
    [stored] = await inbox.list(LI_WEI.user_id)
    assert (stored.message_id, stored.title, stored.link) == (
        "m-1", "Fee due: ¥5,000 by 2026-09-01", "/portal/finance"
    )
    assert (stored.app, stored.template, stored.campaign, stored.rule_version) == (
        "academic", "fee_due", "week-1", "3"
    )
    assert await inbox.unread_count(LI_WEI.user_id) == 1


async def test_ledger_claim_is_exclusive_under_concurrency(redis: Redis) -> None:
    ledgers = [SendLedger(redis, ttl_seconds=3600) for _ in range(50)]
    claims = await asyncio.gather(*(ledger.claim("m-1", "email", 0) for ledger in ledgers))
    assert sum(claims) == 1
    assert await ledgers[0].outcome("m-1", "email", 0) == "claimed"
    assert not await ledgers[0].claim("m-1", "email", 0)
    assert await ledgers[0].claim("m-1", "email", 1)  # another fallback step is another send
    assert await ledgers[0].claim("m-1", "sms", 0)


async def test_ledger_release_lets_a_redelivery_try_but_done_sends_stay(redis: Redis) -> None:
    ledger = SendLedger(redis, ttl_seconds=7 * 24 * 3600, claim_ttl_seconds=60)
    assert await ledger.claim("m-2", "webhook", 0)
    assert 0 < await redis.ttl("sb:sent:m-2:webhook:0") <= 60
    assert await ledger.release("m-2", "webhook", 0)
    assert await ledger.outcome("m-2", "webhook", 0) is None
    assert await ledger.claim("m-2", "webhook", 0)
    await ledger.mark_done("m-2", "webhook", 0, "delivered")
    assert await ledger.outcome("m-2", "webhook", 0) == "delivered"
    assert await redis.ttl("sb:sent:m-2:webhook:0") > 6 * 24 * 3600
    assert not await ledger.release("m-2", "webhook", 0)
    assert not await ledger.claim("m-2", "webhook", 0)
    with pytest.raises(ValueError, match="outcome"):
        await ledger.mark_done("m-2", "webhook", 0, "claimed")


# --- webhook ----------------------------------------------------------------------------------

class Receiver:
    """An aiohttp app on loopback that checks signatures; answers from a script, then 200."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.rejected = 0
        self.script: list[web.Response] = []
        self.idempotency_keys: list[str | None] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.idempotency_keys.append(request.headers.get("Idempotency-Key"))
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not verify(SECRET, request.headers.get(TIMESTAMP_HEADER, ""), body, signature):
            self.rejected += 1
            return web.Response(status=401, text="bad signature")
        if self.script:
            return self.script.pop(0)
        self.bodies.append(json.loads(body))
        return web.Response(status=200, headers={"X-Request-Id": f"rq-{len(self.bodies)}"})


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    state = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/switchboard", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield state, f"http://127.0.0.1:{port}/hooks/switchboard"
    finally:
        await runner.cleanup()


async def test_webhook_is_signed_and_retried_on_503(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.script = [web.Response(status=503, headers={"Retry-After": "1"})]
    message = CATALOG.render("fee_due", "webhook", FEE, LI_WEI)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with httpx.AsyncClient() as client:
        channel = Webhook(client, SecretStr(SECRET), ["127.0.0.1/32"], timeout=5.0)
        outcome = await deliver(channel, message, url, dispatch("webhook", url, template="fee_due"),
                                RetryPolicy(), sleep=sleep, rng=random.Random(1))
    assert (outcome.status, outcome.attempts, outcome.provider_message_id) == ("delivered", 2, "rq-1")
    assert sleeps and sleeps[0] >= 1.0
    assert state.rejected == 0
    assert state.idempotency_keys == ['"m-1.0"', '"m-1.0"']  # the retry repeats the key
    assert state.bodies == [{"type": "fee_due", "user_id": "s2024001", "amount": "¥5,000",
                             "due_date": "2026-09-01", "term": "Autumn 2026"}]


async def test_webhook_with_the_wrong_secret_is_refused_permanently(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    message = CATALOG.render("security_alert", "webhook", {"headline": "h", "action": "a"}, LI_WEI)
    async with httpx.AsyncClient() as client:
        channel = Webhook(client, SecretStr("not-the-secret"), ["127.0.0.1/32"])
        outcome = await deliver(channel, message, url, dispatch("webhook", url), RetryPolicy())
    assert (outcome.status, outcome.attempts, outcome.retryable) == ("failed", 1, False)
    assert "HTTP 401" in outcome.reason
    assert state.rejected == 1 and state.bodies == []


# --- registry -------------------------------------------------------------------------------

async def test_registry_builds_working_channels(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer
) -> None:
    async with httpx.AsyncClient() as client:
        unsigned = build_channels(settings, redis, client)
        assert sorted(unsigned) == ["email", "inbox"]
        with_secret = settings.model_copy(update={"webhook_secret": SecretStr(SECRET)})
        signed = build_channels(with_secret, redis, client)
        assert sorted(signed) == ["email", "inbox", "webhook"]
        message = RenderedMessage(template="t", channel="email", subject="Hello", text="Hi")
        result = await signed["email"].send(message, "li.wei@uni.example.edu", dispatch("email", ""))
        await signed["email"].close()
    assert result.status == "sent"
    [mail] = await asyncio.to_thread(smtp.wait_for, 1)
    assert mail.message["Subject"] == "Hello"

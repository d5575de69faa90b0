"""Consent and the blacklist follow an address whoever it is sent for, in decide and in send (real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from channels.base import Channel, RetryPolicy, SendResult
from channels.templates import RenderedMessage, TemplateCatalog
from processors.decide import Decide
from processors.send import Send
from records.topics import Delivery, Dispatch, EventCore, address_user_id, message_id_for
from rules.engine import AsyncRuleEngine
from rules.loader import load_ruleset
from state.apps import AppRegistry
from state.consent import ConsentStore
from state.idempotency import SendLedger
from state.schedule import DeliverySchedule
from state.users import OWNERS_KEY, User, UserDirectory
from state.users_import import import_users

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC)
NOTICE = EventCore(
    event_id="n1", app="campus", type="campus.notice", template="campus_notice", category="notice",
    data={"headline": "Library hours", "body": "Open until midnight."},
)
RULES = "ruleset: t\nrules:\n  - id: all\n    then: {channels: [email, sms]}\n"


class CountingEmail(Channel):
    """An email provider that accepts everything and remembers where it sent."""

    channel = "email"
    provider = "counting"

    def __init__(self) -> None:
        self.sent_to: list[str] = []

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        self.sent_to.append(address)
        return SendResult(status="sent", provider_message_id=f"mail-{len(self.sent_to)}")


def raw(address: str, channel: str = "email", event: EventCore = NOTICE) -> Delivery:
    """A delivery of `event` to a raw address, as ingest makes it."""
    user_id = address_user_id(channel, address)  # type: ignore[arg-type]
    return Delivery.model_validate({
        "message_id": message_id_for(event.app, event.event_id, user_id), "user_id": user_id,
        "event": event, "addresses": {channel: address},
    })


def to_address(address: str, user_id: str = "") -> Dispatch:
    """A dispatch to an email address, for a raw address (no user id) or for a known user."""
    user_id = user_id or address_user_id("email", address)
    return Dispatch.model_validate({
        "message_id": message_id_for(NOTICE.app, NOTICE.event_id, user_id), "user_id": user_id,
        "channel": "email", "address": address, "event": NOTICE, "rule_id": "all", "rule_version": "1",
    })


@pytest.fixture
async def people(redis: Redis, tmp_path: Path) -> UserDirectory:
    """Alice and Bo, imported with the real importer; they share a family phone."""
    csv = tmp_path / "people.csv"
    csv.write_text(
        "user_id,name,email,phone\n"
        "alice,Alice,Alice@Uni.example,13800000001\n"
        "bo,Bo,bo@uni.example,13800000001\n",
        encoding="utf-8",
    )
    directory = UserDirectory(redis)
    report = await import_users(csv, directory)
    assert (report.imported, report.rejected) == (2, 0)
    await AppRegistry(redis).register("campus", {"email", "sms"})
    return directory


@pytest.fixture
async def decide(redis: Redis, people: UserDirectory, tmp_path: Path) -> AsyncIterator[Decide]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    engine = AsyncRuleEngine(load_ruleset(rules))
    yield Decide(
        people, AppRegistry(redis), engine, DeliverySchedule(redis), frozenset({"email", "sms"}),
        consent=ConsentStore(redis, opt_in=()),
    )
    engine.close()


@pytest.fixture
def email() -> CountingEmail:
    return CountingEmail()


@pytest.fixture
def send(redis: Redis, people: UserDirectory, email: CountingEmail) -> Send:
    return Send(
        {"email": email}, TemplateCatalog(ROOT / "templates"), people,
        SendLedger(redis, ttl_seconds=3600, claim_ttl_seconds=60), RetryPolicy(max_attempts=1),
        consent=ConsentStore(redis, opt_in=()),
    )


async def test_a_raw_address_of_a_person_who_unsubscribed_from_everything_reaches_nobody(
    redis: Redis, decide: Decide, send: Send, email: CountingEmail
) -> None:
    await ConsentStore(redis).unsubscribe("alice", source="preference centre")
    # Written differently from her binding: the address is still hers.
    decided = await decide.handle([raw("alice@uni.example ")], now=NOW)
    assert decided.dispatches == []
    [receipt] = decided.receipts
    assert receipt.status == "suppressed"
    assert "unsubscribed from every category on every channel" in receipt.reason
    assert "the address belongs to alice" in receipt.reason
    # A dispatch already on its way (scheduled, or a fallback step) is stopped at send too.
    result = await send.handle([to_address("alice@uni.example")], now=NOW)
    assert [r.status for r in result.receipts] == ["suppressed"] and email.sent_to == []


async def test_a_shared_number_takes_the_consent_of_everyone_it_is_bound_to(
    redis: Redis, decide: Decide
) -> None:
    await ConsentStore(redis).unsubscribe("bo", category="notice", channel="sms", source="reply STOP")
    decided = await decide.handle([raw("138 0000 0001", channel="sms")], now=NOW)
    assert decided.dispatches == [] and "belongs to bo" in decided.receipts[0].reason
    # Alice's own notice still comes by email; the family phone is refused through Bo.
    alice = Delivery(message_id="m-alice", user_id="alice", event=NOTICE)
    decided = await decide.handle([alice], now=NOW)
    assert [(d.channel, d.address) for d in decided.dispatches] == [("email", "Alice@Uni.example")]
    assert "on sms" in decided.receipts[0].reason


async def test_an_address_unsubscribed_on_its_own_or_blacklisted_person_is_refused_for_anyone(
    redis: Redis, send: Send, email: CountingEmail
) -> None:
    consent = ConsentStore(redis, opt_in=())
    await consent.unsubscribe_address("email", "Guest@Partner.example", category="notice", source="link")
    await consent.blacklist("bo", reason="bounced for a year")
    # The guest address is refused as a raw address and as the address a known person gave.
    guest, for_dan = to_address("guest@partner.example"), to_address("guest@partner.example", "dan")
    result = await send.handle(
        [guest, for_dan, to_address("bo@uni.example"), to_address("carol@uni.example")], now=NOW
    )
    reasons = {r.user_id: (r.status, r.reason) for r in result.receipts}
    unsubscribed = "consent: unsubscribed from notice on every channel (link, "
    assert reasons[guest.user_id][0] == "suppressed" and reasons[guest.user_id][1].startswith(unsubscribed)
    assert reasons["dan"][0] == "suppressed" and reasons["dan"][1].endswith(") (this address)")
    assert reasons[address_user_id("email", "bo@uni.example")] == (
        "suppressed", "consent: blacklisted (the address belongs to bo): bounced for a year",
    )
    assert email.sent_to == ["carol@uni.example"]


async def test_the_index_follows_changed_bindings_and_can_be_rebuilt(
    redis: Redis, people: UserDirectory, send: Send, email: CountingEmail
) -> None:
    await ConsentStore(redis).unsubscribe("alice", source="preference centre")
    await people.upsert([User(user_id="alice", bindings={"email": "alice@new.example"})])
    assert await people.owners("email", "alice@uni.example") == []
    assert await people.owners("email", "ALICE@new.example") == ["alice"]
    assert await people.owners("sms", "+8613800000001") == ["bo"]  # alice's phone went with the update
    result = await send.handle([to_address("alice@uni.example"), to_address("alice@new.example")], now=NOW)
    assert sorted((r.user_id, r.status) for r in result.receipts) == sorted(
        [(address_user_id("email", "alice@uni.example"), "sent"),
         (address_user_id("email", "alice@new.example"), "suppressed")]
    )
    assert email.sent_to == ["alice@uni.example"]  # no longer hers: someone else's now

    await redis.delete(OWNERS_KEY.format(address_user_id("email", "alice@new.example")))
    assert await people.index_addresses() == 2
    assert await people.owners("email", "alice@new.example") == ["alice"]

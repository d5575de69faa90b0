"""A person's Redis state, every store filled through its own code: exported whole, then erased with
nothing left naming them (a scan of every key and value), their refusals still honoured under their
addresses' hashes, and another person's state untouched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from records.plan import CapLimit, DeliveryPlan, FallbackStep, FrequencyCap
from records.topics import Delivery, Dispatch, EventCore, address_user_id
from state.caps import FrequencyCaps
from state.connection import is_cluster
from state.consent import CONSENT_KEY, Consent, ConsentQuery, ConsentStore
from state.data_rights import KEPT_REASON, OPT_IN_KEYS, WHITELIST_KEY, PersonState
from state.engagement import EngagementHistory
from state.fallback import FallbackSchedule
from state.idempotency import SendLedger, SendRecord
from state.inbox import Inbox, InboxMessage
from state.offline import OfflineKeep
from state.provider_messages import ProviderMessages
from state.schedule import DeliverySchedule, ParkedDispatches
from state.users import SEGMENT_INDEX, SEGMENT_KEY, User, UserDirectory
from state.whitelist import Whitelist
from tests.integration.rights_support import redis_mentions

ALICE_EMAIL, ALICE_PHONE = "alice@uni.example", "+8613800000001"
ALICE = User(
    user_id="alice",
    name="Alice Li",
    tags=("undergraduate", "chess"),
    bindings={"email": ALICE_EMAIL, "sms": ALICE_PHONE, "inbox": "alice"},
)
BO = User(
    user_id="bo", name="Bo Wang", tags=("undergraduate",), bindings={"email": "bo@uni.example", "inbox": "bo"}
)
ALICE_NEEDLES = ["alice", ALICE_EMAIL, ALICE_PHONE, "Alice Li"]
CAP = FrequencyCap(id="daily", scope=("user",), limits=(CapLimit(count=5, window=timedelta(days=1)),))
FALLBACK = FallbackStep(step=1, after=timedelta(hours=1), condition="not_read", channels=("sms",))


def event(event_id: str) -> EventCore:
    return EventCore(
        event_id=event_id, app="bursar", type="fee.statement", template="fee_due", category="transactional"
    )


def dispatch(user: User, channel: str, message_id: str, plan: DeliveryPlan | None = None) -> Dispatch:
    return Dispatch(
        message_id=message_id,
        user_id=user.user_id,
        channel=channel,  # type: ignore[arg-type]
        address=user.bindings[channel],  # type: ignore[index]
        event=event("fee-1"),
        rule_id="fees",
        rule_version="v1",
        plan=plan or DeliveryPlan(),
    )


async def fill(redis: Redis, user: User, now: datetime) -> None:
    """Every store of the person's, through the code the flow writes it with."""
    uid = user.user_id
    inbox = Inbox(redis)
    for n in range(2):
        await inbox.add(
            uid,
            InboxMessage(
                message_id=f"{uid}-in-{n}",
                title=f"Fee due for {user.name}",
                body="¥5,000",
                app="bursar",
                event_id="fee-1",
                template="fee_due",
                category="transactional",
                created_at=now - timedelta(minutes=n),
            ),
        )
    await inbox.mark_read(uid, f"{uid}-in-0")
    await EngagementHistory(redis).record_many(
        [(uid, "read", now), (uid, "opened", now - timedelta(hours=1))]
    )
    consent = ConsentStore(redis)
    await consent.unsubscribe(uid, category="marketing", source="preference centre")
    email_id = address_user_id("email", user.bindings["email"])  # type: ignore[index]
    for subject in (uid, email_id):
        await consent.opt_in(subject, category="marketing", source="signup form", evidence=f"form of {uid}")
    whitelist = Whitelist(redis)
    await whitelist.add(uid, "staff")
    await whitelist.add(user.bindings["email"], "x")  # type: ignore[index]
    await FrequencyCaps(redis).check(dispatch(user, "email", f"{uid}-cap", DeliveryPlan(caps=(CAP,))), now)
    await DeliverySchedule(redis).add(
        Delivery(message_id=f"{uid}-later", user_id=uid, event=event("fee-2")), now + timedelta(hours=1)
    )
    await ParkedDispatches(redis).add(dispatch(user, "email", f"{uid}-parked"), now + timedelta(hours=1))
    await FallbackSchedule(redis).arm(
        dispatch(user, "email", f"{uid}-chain", DeliveryPlan(fallback=(FALLBACK,))), None, now
    )
    await OfflineKeep(redis).keep(
        Delivery(message_id=f"{uid}-kept", user_id=uid, event=event("fee-3")), {}, now + timedelta(days=1)
    )
    await ProviderMessages(redis).remember("aliyun", f"pm-{uid}", dispatch(user, "email", f"{uid}-sms"))
    # A send ledger record whose failure reason quotes the address, as a provider's refusal does.
    record = SendRecord(
        outcome="failed", provider="smtp", reason=f"550 mailbox {user.bindings['email']} unknown"
    )
    await SendLedger(redis, ttl_seconds=3600).record(f"{uid}-bounced", "email", 0, record)


@pytest.mark.redis_cluster_too
async def test_a_person_is_exported_whole_and_erased_without_a_trace(redis: Redis) -> None:
    now = datetime.now(UTC)
    users = UserDirectory(redis)
    await users.upsert([ALICE, BO])
    if is_cluster(redis):  # save_segment's transaction spans two slots there (a limit of its own)
        await redis.sadd(SEGMENT_KEY.format("chess-club"), "alice", "bo")
        await redis.zadd(SEGMENT_INDEX.format("chess-club"), {"alice": 0, "bo": 0})
    else:
        await users.save_segment("chess-club", ["alice", "bo"])
    await fill(redis, ALICE, now)
    await fill(redis, BO, now)
    consent = ConsentStore(redis)
    await consent.blacklist(ALICE_PHONE, "complained to the help desk")
    people = PersonState(redis)
    bo_before = await people.export("bo")

    exported = await people.export("alice")
    assert exported["profile"]["name"] == "Alice Li"
    assert exported["tags"] == ["chess", "undergraduate"] and exported["segments"] == ["chess-club"]
    assert {b["address"] for b in exported["bindings"]} == {ALICE_EMAIL, ALICE_PHONE}
    assert [u["category"] for u in exported["consent"]["own"]["unsubscriptions"]] == ["marketing"]
    phone = next(a for a in exported["consent"]["addresses"] if a["channel"] == "sms")
    assert phone["blacklisted"]["reason"] == "complained to the help desk"
    assert exported["inbox"]["total"] == 2 and exported["inbox"]["unread"] == 1
    assert {m["message_id"] for m in exported["inbox"]["messages"]} == {"alice-in-0", "alice-in-1"}
    assert [e["status"] for e in exported["engagement"]["history"]] == ["opened", "read"]
    assert exported["engagement"]["last_active"] is not None
    assert [(c["cap"], c["counted_sends"]) for c in exported["caps"]] == [("daily:user=alice", 1)]
    assert [h["item"]["message_id"] for h in exported["scheduled"]] == ["alice-later"]
    assert [h["item"]["message_id"] for h in exported["parked"]] == ["alice-parked"]
    assert [c["message_id"] for c in exported["fallback_chains"]] == ["alice-chain"]
    assert [k["message_id"] for k in exported["offline"]] == ["alice-kept"]
    assert [p["message_id"] for p in exported["provider_messages"]] == ["alice-sms"]

    # The scan that must come back empty finds her everywhere first.
    named = {key for keys in (await redis_mentions(redis, ALICE_NEEDLES)).values() for key in keys}
    families = {key.split(":")[1] for key in named}
    assert families >= {"optin", "optin-log", "whitelist"}
    assert families >= {
        "user",
        "users",
        "tag",
        "segment",
        "ix",
        "owners",
        "inbox",
        "engaged",
        "active",
        "consent",
        "blacklist",
        "cap",
        "schedule",
        "parked",
        "fb",
        "offline",
        "pmsg",
        "sent",
    }

    outcome = await people.erase("alice")

    assert outcome["unknown"] == []
    assert outcome["removed"]["scheduled"] == 1 and outcome["removed"]["parked"] == 1
    assert outcome["removed"]["fallback_chains"] == 1 and outcome["removed"]["ledger_reasons"] == 1
    # Nothing in Redis names her any more: every key, every value, every type.
    assert await redis_mentions(redis, ALICE_NEEDLES) == {}
    # Her refusals stand, under her addresses' hashes, for whoever the address is sent for next.
    email, sms = address_user_id("email", ALICE_EMAIL), address_user_id("sms", ALICE_PHONE)
    assert (await consent.blacklisted(sms)) is not None
    assert (await consent.blacklisted(sms)).reason == KEPT_REASON  # type: ignore[union-attr]
    refusals = await consent.refusals(
        [
            ConsentQuery("newcomer", "sms", "notice", ALICE_PHONE),
            ConsentQuery("newcomer", "email", "marketing", ALICE_EMAIL),
            ConsentQuery("newcomer", "email", "notice", ALICE_EMAIL),
        ]
    )
    assert refusals[0] is not None and refusals[0].startswith("blacklisted")
    assert refusals[1] is not None and "unsubscribed from marketing" in refusals[1]
    assert refusals[2] is None
    assert [u.category for u in (await consent.consent(email)).unsubscriptions] == ["marketing"]
    # Her opt-ins went with her, those under her address's hash too: a permission is not a refusal.
    assert not await redis.exists(*(key.format(email) for key in OPT_IN_KEYS))
    assert (
        await redis.exists(
            *(
                key.format(s)
                for key in OPT_IN_KEYS
                for s in ("bo", address_user_id("email", "bo@uni.example"))
            )
        )
        == 4
    )
    assert await redis.hexists(WHITELIST_KEY, "bo")
    # Bo's state is exactly as it was.
    assert await people.export("bo") == bo_before
    assert await users.segment_members("chess-club") == ["bo"]

    again = await people.erase("alice")
    assert again == {"removed": {}, "kept": 0, "unknown": []}
    assert await people.export("alice") == {
        **{key: [] for key in ("tags", "segments", "bindings", "caps", "scheduled", "parked")},
        **{key: [] for key in ("fallback_chains", "offline", "provider_messages")},
        "profile": None,
        "consent": {
            "own": Consent(user_id="alice", unsubscriptions=[], blacklisted=None).model_dump(mode="json"),
            "addresses": [],
        },
        "inbox": {"total": 0, "unread": 0, "messages": []},
        "engagement": {"history": [], "last_active": None},
    }


async def test_a_key_named_by_the_person_that_no_eraser_knows_is_reported_not_missed(redis: Redis) -> None:
    await UserDirectory(redis).upsert([ALICE])
    await redis.set("sb:somebody-new:{alice}:thing", "1")  # a store added after the inventory
    outcome = await PersonState(redis).erase("alice")
    assert outcome["unknown"] == ["sb:somebody-new:{alice}:thing"]


async def test_only_refusals_are_kept_under_the_address_not_other_consent_fields(redis: Redis) -> None:
    await UserDirectory(redis).upsert([ALICE])
    consent = ConsentStore(redis)
    await consent.unsubscribe("alice", channel="sms", source="reply STOP")
    # A field of another kind beside the refusals (an opt-in, as a later version may keep there).
    await redis.hset(CONSENT_KEY.format("alice"), "opt-in:marketing", '{"source": "signup form"}')
    outcome = await PersonState(redis).erase("alice")
    assert outcome["kept"] == 2  # the sms refusal under each of her two addresses' hashes
    for channel, address in (("email", ALICE_EMAIL), ("sms", ALICE_PHONE)):
        kept = await redis.hgetall(CONSENT_KEY.format(address_user_id(channel, address)))  # type: ignore[arg-type]
        assert list(kept) == [b"*|sms"]

"""Opt-ins, the whitelist and test mode in ConsentStore, against real Redis (and a Redis Cluster)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from records.topics import address_user_id
from state.consent import ConsentQuery, ConsentStore, ConsentVerdict
from state.users import User, UserDirectory
from tests.integration.moments import now

pytestmark = pytest.mark.redis_cluster_too  # both read paths: the script and the cluster's pipelines

NOW = now()
NO_OPT_IN = ConsentVerdict("no opt-in for marketing", "opt_in")
TESTING = ConsentVerdict("test mode: not whitelisted", "test_mode")


@pytest.fixture
def consent(redis: Redis) -> ConsentStore:
    return ConsentStore(redis, clock=lambda: NOW)


async def test_marketing_reaches_only_a_standing_opt_in_for_its_channel(consent: ConsentStore) -> None:
    await consent.opt_in("everywhere", category="marketing", source="signup form v3", evidence="box ticked")
    await consent.opt_in("email-only", category="marketing", channel="email", source="preference centre")
    queries = [
        ConsentQuery("everywhere", "sms", "marketing"),
        ConsentQuery("email-only", "email", "marketing"),
        ConsentQuery("email-only", "sms", "marketing"),
        ConsentQuery("nobody", "email", "marketing"),
        ConsentQuery("nobody", "email", "notice"),  # a notice needs no opt-in
    ]
    assert await consent.verdicts(queries) == [
        ConsentVerdict(), ConsentVerdict(), NO_OPT_IN, NO_OPT_IN, ConsentVerdict(),
    ]
    assert NO_OPT_IN.reason == "consent: no opt-in for marketing"


async def test_a_withdrawal_ends_the_opt_in_and_keeps_its_source_and_time(consent: ConsentStore) -> None:
    await consent.opt_in("u1", category="marketing", source="signup form v3", evidence="IP 10.0.0.7")
    withdrawn = await consent.withdraw("u1", category="marketing", by="user u1")
    assert [(w.source, w.withdrawn_at, w.withdrawn_by) for w in withdrawn] == [
        ("signup form v3", NOW, "user u1")
    ]
    assert await consent.refusals([ConsentQuery("u1", "email", "marketing")]) == ["no opt-in for marketing"]
    await consent.opt_in("u1", category="marketing", channel="inbox", source="operator alice")
    standing = await consent.consent("u1")
    assert [(o.channel, o.source) for o in standing.opt_ins] == [("inbox", "operator alice")]
    assert [(o.source, o.evidence, o.withdrawn_at) for o in standing.opt_in_history] == [
        ("signup form v3", "IP 10.0.0.7", NOW),
        ("operator alice", "", None),
    ]


async def test_withdrawing_one_channel_leaves_a_broader_opt_in(consent: ConsentStore) -> None:
    await consent.opt_in("u1", category="marketing", source="signup")
    assert await consent.withdraw("u1", category="marketing", channel="sms", by="user u1") == []
    assert await consent.refusals([ConsentQuery("u1", "sms", "marketing")]) == [None]


async def test_an_unsubscription_still_wins_over_an_opt_in(consent: ConsentStore) -> None:
    await consent.opt_in("u1", category="marketing", source="signup")
    await consent.unsubscribe("u1", category="marketing", source="one-click link")
    [verdict] = await consent.verdicts([ConsentQuery("u1", "email", "marketing")])
    assert verdict.kind == "unsubscribed"


async def test_a_raw_address_takes_the_opt_in_of_the_person_it_belongs_to(
    redis: Redis, consent: ConsentStore
) -> None:
    await UserDirectory(redis).upsert([User(user_id="bo", bindings={"email": "bo@example.org"})])
    await consent.opt_in("bo", category="marketing", source="signup")
    own = address_user_id("email", "bo@example.org")
    stranger = address_user_id("email", "zed@example.org")
    answers = await consent.refusals(
        [
            ConsentQuery(own, "email", "marketing", "bo@example.org"),
            ConsentQuery(stranger, "email", "marketing", "zed@example.org"),
        ]
    )
    assert answers == [None, "no opt-in for marketing"]


async def test_opt_in_categories_are_configurable(redis: Redis) -> None:
    store = ConsentStore(redis, opt_in=["notice"])
    assert await store.refusals(
        [ConsentQuery("u1", "email", "marketing"), ConsentQuery("u1", "email", "notice")]
    ) == [None, "no opt-in for notice"]
    with pytest.raises(ValueError, match="'marketting'"):
        ConsentStore(redis, opt_in=["marketting"])


async def test_test_mode_lets_only_the_whitelisted_through(consent: ConsentStore) -> None:
    await consent.whitelist.add("tester", "QA team")
    await consent.whitelist.add("qa@example.org", "QA mailbox")
    await consent.whitelist.set_test_mode("lms", True, by="operator alice")
    answers = await consent.verdicts(
        [
            ConsentQuery("tester", "inbox", "notice", "", "lms"),
            ConsentQuery("u9", "email", "notice", "qa@example.org", "lms"),
            ConsentQuery("u9", "sms", "notice", "+8613800138000", "lms"),
            ConsentQuery("u9", "sms", "notice", "+8613800138000", "portal"),  # another app: not in test mode
        ]
    )
    assert answers == [
        ConsentVerdict(whitelisted=True), ConsentVerdict(whitelisted=True), TESTING, ConsentVerdict(),
    ]
    assert TESTING.reason == "test mode: not whitelisted"
    assert [m.app for m in await consent.whitelist.test_mode_apps()] == ["lms"]
    await consent.whitelist.set_test_mode("lms", False, by="operator alice")
    assert await consent.refusals([ConsentQuery("u9", "sms", "notice", "", "lms")]) == [None]


async def test_global_test_mode_and_whitelisted_people_still_keep_their_consent(redis: Redis) -> None:
    store = ConsentStore(redis, test_mode=True)
    await store.whitelist.add("tester", "QA team")
    await store.blacklist("tester", "asked never again")
    answers = await store.verdicts(
        [ConsentQuery("tester", "email", "notice", "", "lms"), ConsentQuery("u2", "email", "notice")]
    )
    assert answers == [ConsentVerdict("blacklisted: asked never again", "blacklist", True), TESTING]


async def test_the_whitelist_lists_and_removes_entries(consent: ConsentStore) -> None:
    await consent.whitelist.add("b-user", "VIP")
    await consent.whitelist.add("a-user", "tester")
    assert [(e.subject, e.reason) for e in await consent.whitelist.entries()] == [
        ("a-user", "tester"), ("b-user", "VIP"),
    ]
    assert (await consent.consent("a-user")).whitelisted is not None
    assert await consent.whitelist.remove("a-user") is True
    assert await consent.whitelist.remove("a-user") is False
    assert (await consent.consent("a-user")).whitelisted is None

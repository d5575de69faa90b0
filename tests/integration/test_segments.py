"""Segments on real Redis: definitions stored, evaluated page by page over the narrowest index with
engagement and consent read alongside, counted and sampled, and expanded by ingest; saved sets keep
working and a name that is neither is still a dead letter.

Engagement is recorded at times relative to the real clock (yesterday, 40 days ago), as receipts
would record it, so the tests hold on any date.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from channels.templates import TemplateCatalog
from processors.approvals import ApprovalGate
from processors.ingest import Ingest
from records.topics import Audience
from settings import ROOT
from state.approval_policies import PolicyStore
from state.approvals import ApprovalStore
from state.apps import AppRegistry
from state.broadcasts import BroadcastJobs
from state.consent import ConsentStore
from state.dedup import EventDedup
from state.engagement import EngagementHistory
from state.segment_definitions import parse_definition
from state.segments import SegmentStore, count_segment, from_snapshot
from state.users import User, UserDirectory

DORMANT_2020 = {
    "all": [
        {"tags": {"all": ["undergraduate", "class-2020"]}},
        {"not": {"engaged": {"status": "read", "within": "30 days"}}},
    ]
}


def cohort(prefix: str, n: int, tags: tuple[str, ...]) -> list[User]:
    return [
        User(user_id=f"{prefix}{i:03d}", name=f"{prefix.upper()} {i}", tags=tags,
             bindings={"inbox": f"{prefix}{i:03d}"})
        for i in range(n)
    ]


ALUMNI = ("undergraduate", "class-2020")
DORMANT = cohort("d", 12, ALUMNI)  # never read, or read 40 days ago
READERS = cohort("r", 5, ALUMNI)  # read yesterday
YOUNGER = cohort("y", 30, ("undergraduate", "class-2021"))
STAFF = cohort("s", 8, ("staff", "class-2020"))


async def populate(redis: Redis) -> SegmentStore:
    await UserDirectory(redis).upsert(DORMANT + READERS + YOUNGER + STAFF)
    now = datetime.now(UTC)
    history = EngagementHistory(redis)
    await history.record_many([(u.user_id, "read", now - timedelta(days=1)) for u in READERS])
    await history.record_many([(u.user_id, "read", now - timedelta(days=40)) for u in DORMANT[:4]])
    await history.record_many([(u.user_id, "clicked", now - timedelta(hours=2)) for u in DORMANT[4:6]])
    store = SegmentStore(redis)
    await store.put("dormant-2020", "*", "not reading", parse_definition(DORMANT_2020), "wang")
    return store


def event(**overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "event_id": "e1", "app": "campus", "type": "campus.notice", "template": "campus_notice",
        "category": "notice", "audience": {"segment": "dormant-2020"},
        "data": {"headline": "Reunion", "body": "Come back to campus."},
    }
    return json.dumps(body | overrides).encode()


@pytest.mark.redis_cluster_too  # a page's reads lie in many slots
async def test_a_segment_counts_exactly_its_members_walking_the_narrowest_tag(redis: Redis) -> None:
    store = await populate(redis)
    audience = await store.audience("dormant-2020")
    assert audience is not None
    # class-2020 (25) is smaller than undergraduate (47): the walk reads the smaller tag only.
    assert audience.index.sets == ("sb:tag:class-2020",)
    preview = await store.evaluator.preview(audience, sample=3, page=5)
    assert preview.count == len(DORMANT)
    assert preview.scanned == len(DORMANT + READERS + STAFF)
    assert preview.sample == [("d000", "D 0"), ("d001", "D 1"), ("d002", "D 2")]
    assert await count_segment(redis, "dormant-2020") == len(DORMANT)


async def test_count_segment_tells_saved_sets_and_unknown_names_apart(redis: Redis) -> None:
    directory = UserDirectory(redis)
    await directory.upsert(STAFF)
    await directory.save_segment("chess-club", ["s001", "s003"])
    assert await count_segment(redis, "chess-club") == 2
    assert await count_segment(redis, "nobody") is None
    assert await SegmentStore(redis).has_segment("chess-club")
    assert not await SegmentStore(redis).has_segment("nobody")


@pytest.mark.redis_cluster_too
async def test_consent_conditions_read_the_consent_store(redis: Redis) -> None:
    await UserDirectory(redis).upsert(STAFF)
    consent = ConsentStore(redis)
    await consent.unsubscribe("s000", category="marketing", source="test")
    await consent.unsubscribe("s001", source="test")  # everything
    await consent.unsubscribe("s002", category="marketing", channel="sms", source="test")
    await consent.opt_in("s003", category="marketing", source="test")
    store = SegmentStore(redis)
    reachable = parse_definition(
        {"all": [{"tags": {"all": ["staff"]}}, {"consent": {"category": "marketing", "channel": "email"}}]}
    ).root
    ids = [u.user_id for u in STAFF]
    assert await store.evaluator.members(reachable, ids) == [u for u in ids if u not in ("s000", "s001")]
    opted = parse_definition({"consent": {"category": "marketing", "opted_in": True}}).root
    assert await store.evaluator.members(opted, ids) == ["s003"]


async def test_ingest_expands_a_defined_segment_to_exactly_its_members(redis: Redis) -> None:
    store = await populate(redis)
    await AppRegistry(redis).register("campus", {"inbox"})
    directory = UserDirectory(redis)
    await directory.save_segment("chess-club", ["s001", "y004"])
    ingest = Ingest(directory, AppRegistry(redis), TemplateCatalog(ROOT / "templates"),
                    EventDedup(redis, 60), page=4, segments=store)

    defined = await ingest.handle(event(), "events:0:1")
    assert defined.dead_letter is None
    assert [d.user_id for d in defined.deliveries] == [u.user_id for u in DORMANT]

    saved = await ingest.handle(event(event_id="e2", audience={"segment": "chess-club"}), "events:0:2")
    assert [d.user_id for d in saved.deliveries] == ["s001", "y004"]

    unknown = await ingest.handle(event(event_id="e3", audience={"segment": "nobody"}), "events:0:3")
    assert unknown.dead_letter is not None and "unknown segment 'nobody'" in unknown.dead_letter.reason


async def test_a_large_segment_becomes_a_broadcast_job_holding_its_definition(redis: Redis) -> None:
    store = await populate(redis)
    await AppRegistry(redis).register("campus", {"inbox"})
    jobs = BroadcastJobs(redis)
    ingest = Ingest(UserDirectory(redis), AppRegistry(redis), TemplateCatalog(ROOT / "templates"),
                    EventDedup(redis, 60), jobs=jobs, page=10, segments=store)
    result = await ingest.handle(event(), "events:0:1")
    assert result.broadcast and result.deliveries == []
    job = await jobs.get("campus/e1")
    assert job is not None
    held = from_snapshot(job.segment, job.audience)
    assert held is not None and held.name == "dormant-2020"
    # The job filters by the definition as it stood: a later edit does not change a running send.
    await store.put("dormant-2020", "*", "", parse_definition({"tags": {"all": ["staff"]}}), "wang")
    members, cursor = [], ""
    while (page := await store.evaluator.page(held, cursor, 7)).last:
        members.extend(page.members)
        cursor = page.last
    assert members == [u.user_id for u in DORMANT]


@pytest.mark.parametrize("segment", ["dormant-2020", "chess-club"])
async def test_approvals_size_a_segment_by_counting_it(redis: Redis, segment: str) -> None:
    store = await populate(redis)
    directory = UserDirectory(redis)
    await directory.save_segment("chess-club", ["s001", "y004"])
    gate = ApprovalGate(PolicyStore(redis), ApprovalStore(redis), directory, segments=store)
    size = await gate.audience_size(Audience(segment=segment))
    assert size == {"dormant-2020": len(DORMANT), "chess-club": 2}[segment]

"""Ingest against real Redis: every bad event becomes a dead letter with a reason, nothing raises."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis

from channels.templates import TemplateCatalog
from processors.ingest import Ingest
from settings import ROOT
from state.apps import AppRegistry
from state.dedup import EventDedup
from state.users import User, UserDirectory

PEOPLE = [
    User(user_id="s1", tags=("student", "undergraduate"), bindings={"inbox": "s1"}),
    User(user_id="s2", tags=("student",), bindings={"inbox": "s2"}),
    User(user_id="t1", tags=("staff",), bindings={"email": "t1@uni.example"}),
]


def event(**overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "event_id": "e1",
        "app": "campus",
        "type": "campus.notice",
        "template": "campus_notice",
        "category": "notice",
        "audience": {"tags": ["student"]},
        "data": {"headline": "Snow day", "body": "Classes are cancelled."},
    }
    body.update(overrides)
    return json.dumps(body).encode()


@pytest.fixture
async def ingest(redis: Redis) -> Ingest:
    directory = UserDirectory(redis)
    await directory.upsert(PEOPLE)
    await AppRegistry(redis).register("campus", {"inbox", "email"})
    return Ingest(directory, AppRegistry(redis), TemplateCatalog(ROOT / "templates"), EventDedup(redis, 60))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{oops", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        (event(category="gossip"), "category: Input should be"),
        (json.dumps({"app": "campus"}).encode(), "event_id: Field required"),
        (event(audience={"tags": ["a"], "all": True}), "exactly one non-empty selector"),
        (event(app="unknown-app"), "unknown app 'unknown-app'"),
        (event(channels=["sms"]), "not authorised for channels sms"),
        (event(template="nope"), "unknown template 'nope'"),
        (event(data={"headline": "only"}), "needs variable(s) body"),
        (event(audience={"segment": "nobody"}), "unknown segment 'nobody'"),
    ],
)
async def test_bad_events_become_dead_letters(ingest: Ingest, raw: bytes, reason: str) -> None:
    result = await ingest.handle(raw, "events:0:1")
    assert result.dead_letter is not None
    assert reason in result.dead_letter.reason
    assert result.deliveries == []
    assert [r.status for r in result.receipts] == ["dead_lettered"]
    # The payload is kept byte for byte, even when it is not text.
    letter = result.dead_letter
    kept = letter.payload.encode() if letter.payload_encoding == "utf-8" else None
    assert kept == raw or letter.payload_encoding == "base64"


async def test_audiences_expand_to_one_delivery_per_recipient(ingest: Ingest) -> None:
    by_tag = await ingest.handle(event(event_id="t"), "events:0:1")
    assert sorted(d.user_id for d in by_tag.deliveries) == ["s1", "s2"]
    everyone = await ingest.handle(event(event_id="a", audience={"all": True}), "events:0:2")
    assert sorted(d.user_id for d in everyone.deliveries) == ["s1", "s2", "t1"]
    named = await ingest.handle(
        event(event_id="u", audience={"user_ids": ["t1", "ghost", "t1"]}), "events:0:3"
    )
    assert [d.user_id for d in named.deliveries] == ["t1"]
    assert [(r.user_id, r.status, r.reason) for r in named.receipts] == [
        ("ghost", "suppressed", "unknown user")
    ]
    raw = await ingest.handle(
        event(event_id="r", audience={"addresses": [{"channel": "email", "address": "x@ext.example"}]}),
        "events:0:4",
    )
    assert [d.addresses for d in raw.deliveries] == [{"email": "x@ext.example"}]
    assert len({d.message_id for d in by_tag.deliveries + everyone.deliveries}) == 5  # ids differ per event


async def test_duplicates_are_dropped_but_a_redelivered_record_is_not(ingest: Ingest) -> None:
    first = await ingest.handle(event(), "events:0:7")
    redelivered = await ingest.handle(event(), "events:0:7")  # same record after a crash
    duplicate = await ingest.handle(event(), "events:1:9")  # same (app, event_id), another record
    assert [d.message_id for d in redelivered.deliveries] == [d.message_id for d in first.deliveries]
    assert duplicate.duplicate and duplicate.deliveries == []
    assert duplicate.receipts[0].reason == "duplicate event_id for this app"


async def test_an_event_over_max_event_bytes_is_dead_lettered_naming_the_limit(redis: Redis) -> None:
    ingest = Ingest(
        UserDirectory(redis),
        AppRegistry(redis),
        TemplateCatalog(ROOT / "templates"),
        EventDedup(redis, 60),
        max_event_bytes=1000,
    )
    raw = event(data={"headline": "Snow day", "body": "x" * 2000})
    result = await ingest.handle(raw, "events:0:1")
    assert result.dead_letter is not None and result.deliveries == []
    assert f"event is {len(raw)} bytes, over the limit of 1000" in result.dead_letter.reason
    assert "SWITCHBOARD_MAX_EVENT_BYTES" in result.dead_letter.reason
    assert (result.dead_letter.app, result.dead_letter.event_id) == ("campus", "e1")


async def test_a_worker_sees_an_app_disabled_elsewhere_once_its_short_cache_lapses(redis: Redis) -> None:
    operators = AppRegistry(redis)  # the CLI or the API, another process
    await operators.register("lms", {"inbox"})
    worker = AppRegistry(redis, cache_seconds=0.3)
    ingest = Ingest(UserDirectory(redis), worker, TemplateCatalog(ROOT / "templates"), EventDedup(redis, 60))
    assert (await ingest.handle(event(app="lms", event_id="a"), "events:0:1")).dead_letter is None
    await operators.set_enabled("lms", False)
    # Within the cache's seconds the worker still takes it: the price of one Redis read less per event.
    assert (await ingest.handle(event(app="lms", event_id="b"), "events:0:2")).dead_letter is None
    await asyncio.sleep(0.35)
    refused = await ingest.handle(event(app="lms", event_id="c"), "events:0:3")
    assert refused.dead_letter is not None and refused.dead_letter.reason == "app 'lms' is disabled"
    # Its own writes are seen at once, and an unknown name is never cached.
    await worker.set_enabled("lms", True)
    app = await worker.get("lms")
    assert app is not None and app.enabled
    assert await worker.get("newcomer") is None
    await operators.register("newcomer", {"inbox"})
    assert await worker.get("newcomer") is not None
    with pytest.raises(ValueError, match="cache_seconds must not be negative"):
        AppRegistry(redis, cache_seconds=-1)


async def test_a_batch_of_concurrent_events_is_deduplicated_and_its_users_found_as_one_by_one(
    ingest: Ingest, redis: Redis
) -> None:
    raws = [event(event_id=f"c{i % 5}", audience={"user_ids": ["s1", "t1", "nobody"]}) for i in range(10)]
    results = await asyncio.gather(*(ingest.handle(raw, f"events:0:{i}") for i, raw in enumerate(raws)))
    # Exactly one record of each event id wins and the other is a duplicate. Which one wins is whichever
    # reaches Redis first: the records run concurrently, so it is not always the lower offset.
    winners = [r for r in results if not r.duplicate]
    for i in range(5):
        assert [r.duplicate for r in (results[i], results[i + 5])].count(False) == 1, f"event c{i}"
    assert all(not r.deliveries for r in results if r.duplicate)
    assert [sorted(d.user_id for d in r.deliveries) for r in winners] == [["s1", "t1"]] * 5
    assert [r.receipts[0].reason for r in winners] == ["unknown user"] * 5
    directory = UserDirectory(redis)
    found = await asyncio.gather(*(directory.get_many(ids) for ids in (["s1", "s2"], ["t1"], [])))
    assert [sorted(f) for f in found] == [["s1", "s2"], ["t1"], []]

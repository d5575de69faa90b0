"""Producers on the `events` topic are authenticated: ingest (signatures required) takes a record only
when its `switchboard-signature` header is its app's HMAC of the value; everything else is dead-lettered
with the reason, and no record stops the stage."""

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis

from channels.templates import TemplateCatalog
from processors.ingest import Ingest
from records.signing import events_signing_key, signature
from settings import ROOT
from state.apps import AppRegistry
from state.dedup import EventDedup
from state.users import User, UserDirectory

from .test_ingest import event


@pytest.fixture
async def ingest(redis: Redis) -> Ingest:
    directory = UserDirectory(redis)
    await directory.upsert([User(user_id="s1", tags=("student",), bindings={"inbox": "s1"})])
    return Ingest(
        directory,
        AppRegistry(redis),
        TemplateCatalog(ROOT / "templates"),
        EventDedup(redis, 60),
        signatures=True,
    )


async def test_a_record_signed_by_its_app_is_taken(ingest: Ingest, redis: Redis) -> None:
    key = await AppRegistry(redis).register("campus", {"inbox"})
    raw = event()
    result = await ingest.handle(raw, "events:0:1", signature(raw, events_signing_key(key)))
    assert result.dead_letter is None and [d.user_id for d in result.deliveries] == ["s1"]


async def test_unsigned_forged_and_stale_records_are_dead_lettered(ingest: Ingest, redis: Redis) -> None:
    apps = AppRegistry(redis)
    campus = await apps.register("campus", {"inbox"})
    other = await apps.register("other", {"inbox"})
    raw = event()
    tampered = event(data={"headline": "Free money", "body": "Click here."})
    cases = [
        (None, "unsigned: the record has no switchboard-signature header (app 'campus')"),
        ("v1=" + "0" * 64, "bad signature for app 'campus'"),
        (signature(raw, events_signing_key(other)), "bad signature for app 'campus'"),  # another app's key
        (signature(raw, events_signing_key(campus)), ""),
    ]
    for offset, (signed, reason) in enumerate(cases):
        result = await ingest.handle(
            event(event_id=f"e{offset}") if signed is None else raw, f"events:0:{offset}", signed
        )
        if reason:
            assert result.dead_letter is not None and result.dead_letter.reason == reason
            assert result.deliveries == []
        else:
            assert result.dead_letter is None
    # A signature over other content does not carry over (the value is what is signed).
    forged = await ingest.handle(tampered, "events:0:9", signature(raw, events_signing_key(campus)))
    assert forged.dead_letter is not None and forged.dead_letter.reason == "bad signature for app 'campus'"
    # Rotating the key ends the old signing key too.
    new = await apps.rotate_key("campus")
    stale = await ingest.handle(
        event(event_id="late"), "events:0:10", signature(event(event_id="late"), events_signing_key(campus))
    )
    assert stale.dead_letter is not None and stale.dead_letter.reason == "bad signature for app 'campus'"
    fresh = event(event_id="fresh")
    assert (
        await ingest.handle(fresh, "events:0:11", signature(fresh, events_signing_key(new)))
    ).dead_letter is None


async def test_an_app_registered_before_signing_is_told_to_rotate(ingest: Ingest, redis: Redis) -> None:
    apps = AppRegistry(redis)
    await apps.register("campus", {"inbox"})
    record = json.loads(await redis.get("sb:{apps}:app:campus") or b"{}")
    del record["signing_key"]  # as an app registered by an earlier release is kept
    await redis.set("sb:{apps}:app:campus", json.dumps(record))
    raw = event()
    result = await ingest.handle(raw, "events:0:1", signature(raw, "any"))
    assert result.dead_letter is not None
    assert result.dead_letter.reason == (
        "app 'campus' has no events signing key (registered before events were signed): rotate its key"
    )
    unknown = await ingest.handle(event(app="ghost"), "events:0:2", "v1=00")
    assert unknown.dead_letter is not None and unknown.dead_letter.reason == "unknown app 'ghost'"

"""Uploaded lists on real Redis: stored deduplicated with known people told from raw addresses, held
for their time (Redis TTL), and expanded by ingest for their own app only, page by page past one page."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from api.upload_reader import import_file
from channels.templates import TemplateCatalog
from processors.approvals import ApprovalGate
from processors.broadcast import BroadcastExpander
from processors.ingest import Ingest
from records.topics import Audience, Delivery, Lane, address_user_id
from settings import ROOT
from state.approval_policies import PolicyStore
from state.approvals import ApprovalStore
from state.apps import AppRegistry
from state.broadcasts import BroadcastJobs
from state.dedup import EventDedup
from state.flow_counters import FlowCounters
from state.uploads import INDEX_KEY, META_KEY, UploadStore, upload_size
from state.users import User, UserDirectory

KNOWN = User(user_id="s1", bindings={"sms": "+8613800138000", "email": "wang@uni.example"})
PHONES = "手机号\n13800138000\n139 0013 9000\n+86 139-0013-9000\nnot a phone\n13700137000\n\n"


def event(upload_id: str, app: str = "campus", event_id: str = "e1") -> bytes:
    return json.dumps({
        "event_id": event_id, "app": app, "type": "campus.notice", "template": "campus_notice",
        "category": "notice", "audience": {"upload": upload_id},
        "data": {"headline": "Snow day", "body": "Classes are cancelled."},
    }).encode()


@pytest.fixture
async def setup(redis: Redis) -> tuple[UploadStore, Ingest]:
    directory = UserDirectory(redis)
    await directory.upsert([KNOWN])
    apps = AppRegistry(redis)
    await apps.register("campus", {"sms", "email"})
    await apps.register("bursar", {"sms", "email"})
    store = UploadStore(redis)
    catalog = TemplateCatalog(ROOT / "templates")
    ingest = Ingest(directory, apps, catalog, EventDedup(redis, 60), uploads=store)
    return store, ingest


async def upload_of(store: UploadStore, tmp_path: Path, text: str, **options: Any) -> str:
    path = tmp_path / "list.csv"
    path.write_text(text, encoding="utf-8")
    fields: dict[str, Any] = {"app": "campus", "kind": None, "ttl_hours": 72.0, "filename": "list.csv",
                              "created_by": "wang", "max_errors_kept": 100} | options
    return (await import_file(store, path, **fields)).upload_id


@pytest.mark.redis_cluster_too
async def test_a_phone_list_is_stored_once_per_recipient_with_its_counts_and_expiry(
    redis: Redis, setup: tuple[UploadStore, Ingest], tmp_path: Path
) -> None:
    store, _ = setup
    upload_id = await upload_of(store, tmp_path, PHONES, batch=2)  # batches split duplicates apart
    upload = await store.get(upload_id)
    assert upload is not None
    counts = upload.as_dict()
    names = ("rows", "valid", "invalid", "duplicates", "known_people", "raw_addresses")
    assert {k: counts[k] for k in names} == {
        "rows": 5, "valid": 4, "invalid": 1, "duplicates": 1, "known_people": 1, "raw_addresses": 2,
    }
    assert await upload_size(redis, upload_id) == 3 == upload.recipients
    [error] = await store.errors(upload_id)
    assert (error.row, error.column, error.value) == (5, "手机号", "not****hone")
    ttl = await redis.ttl(INDEX_KEY.format(upload_id))
    assert 72 * 3600 - 60 < ttl <= 72 * 3600 + 1
    assert 72 * 3600 - 60 < await redis.ttl(META_KEY.format(upload_id)) <= 72 * 3600 + 1
    assert [u.upload_id for u in await store.live(["campus"])] == [upload_id]


@pytest.mark.redis_cluster_too
async def test_ingest_delivers_to_the_known_person_and_to_raw_addresses_once_each(
    setup: tuple[UploadStore, Ingest], tmp_path: Path
) -> None:
    store, ingest = setup
    upload_id = await upload_of(store, tmp_path, PHONES)
    result = await ingest.handle(event(upload_id), "events:0:1")
    assert result.dead_letter is None
    by_user = {d.user_id: d.addresses for d in result.deliveries}
    assert by_user == {
        "s1": None,  # a known person: their own bindings, consent and preferences
        address_user_id("sms", "+8613900139000"): {"sms": "+8613900139000"},
        address_user_id("sms", "+8613700137000"): {"sms": "+8613700137000"},
    }


async def test_another_apps_upload_an_expired_one_and_a_removed_one_are_dead_lettered_by_name(
    setup: tuple[UploadStore, Ingest], tmp_path: Path
) -> None:
    store, ingest = setup
    upload_id = await upload_of(store, tmp_path, PHONES)
    foreign = await ingest.handle(event(upload_id, app="bursar"), "events:0:1")
    assert foreign.dead_letter is not None and not foreign.deliveries
    assert foreign.dead_letter.reason == f"upload {upload_id} belongs to app 'campus', not 'bursar'"

    short = await upload_of(store, tmp_path, PHONES, ttl_hours=1 / 3600)  # a second, in Redis' clock
    await asyncio.sleep(2.2)
    assert await store.get(short) is None
    assert [u.upload_id for u in await store.live(["campus"])] == [upload_id]
    expired = await ingest.handle(event(short, event_id="e2"), "events:0:2")
    assert expired.dead_letter is not None
    assert expired.dead_letter.reason == f"upload {short} expired or unknown"

    await store.remove(upload_id, "wang")
    removed = await ingest.handle(event(upload_id, event_id="e3"), "events:0:3")
    assert removed.dead_letter is not None
    assert removed.dead_letter.reason == f"upload {upload_id} was removed by wang"
    assert await store.live(["campus"]) == []


async def test_a_list_past_one_page_becomes_a_broadcast_job_expanded_with_its_addresses(
    redis: Redis, setup: tuple[UploadStore, Ingest], tmp_path: Path
) -> None:
    store, _ = setup
    emails = "email\n" + "".join(f"p{n}@uni.example\n" for n in range(7)) + "WANG@uni.example\n"
    upload_id = await upload_of(store, tmp_path, emails)
    jobs = BroadcastJobs(redis)
    directory = UserDirectory(redis)
    ingest = Ingest(directory, AppRegistry(redis), TemplateCatalog(ROOT / "templates"), EventDedup(redis, 60),
                    jobs=jobs, page=3, uploads=store)
    result = await ingest.handle(event(upload_id), "events:0:1")
    assert result.broadcast and not result.deliveries
    emitted: list[Delivery] = []

    async def emit(lane: Lane, deliveries: Any, source: str) -> int:
        emitted.extend(deliveries)
        return len(deliveries)

    expander = BroadcastExpander(jobs, directory.walk, FlowCounters(redis), "w1", page=3, backlog=10**6,
                                 lease_seconds=5)
    while await jobs.active():
        await expander.expand(emit)
    addresses = sorted(next(iter(d.addresses.values())) for d in emitted if d.addresses)
    assert addresses == [f"p{n}@uni.example" for n in range(7)]
    # Addresses are told apart case-blind (`address_user_id`), so WANG@ is the person bound to wang@.
    assert [d.user_id for d in emitted if d.addresses is None] == ["s1"]
    assert len(emitted) == len({d.message_id for d in emitted}) == 8


async def test_approvals_count_an_uploads_recipients(
    redis: Redis, setup: tuple[UploadStore, Ingest], tmp_path: Path
) -> None:
    store, _ = setup
    upload_id = await upload_of(store, tmp_path, PHONES)
    gate = ApprovalGate(PolicyStore(redis), ApprovalStore(redis), UserDirectory(redis), uploads=store)
    assert await gate.audience_size(Audience(upload=upload_id)) == 3
    assert await gate.audience_size(Audience(upload="up-missing")) == 0


@pytest.mark.redis_cluster_too
async def test_raw_addresses_spelled_differently_are_one_recipient_across_batches(
    setup: tuple[UploadStore, Ingest], tmp_path: Path
) -> None:
    store, ingest = setup
    emails = "email\nli@uni.example\nzhao@uni.example\nLI@uni.example\nLi@Uni.Example\n"
    upload_id = await upload_of(store, tmp_path, emails, batch=1)
    upload = await store.get(upload_id)
    assert upload is not None
    assert (upload.counts.raw_addresses, upload.counts.duplicates, upload.counts.valid) == (2, 2, 4)
    result = await ingest.handle(event(upload_id), "events:0:1")
    assert sorted(a["email"] for d in result.deliveries if (a := d.addresses)) == [
        "li@uni.example", "zhao@uni.example",
    ]

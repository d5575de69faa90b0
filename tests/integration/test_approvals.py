"""Approvals on real Redis, in process: ingest holds through the gate, the desk follows up, operators
decide through the API (their own tokens), and the released event is expanded exactly once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from redis.asyncio import Redis

from api import ApiDeps, create_api
from api.access import Access
from api.approval_service import Approvals
from channels.templates import TemplateCatalog
from processors.approvals import ApprovalDesk, ApprovalGate, Effects, OperatorApprovers
from processors.ingest import Ingest
from records.audit import AuditRecord
from records.conversions import Conversion
from records.signing import signature
from records.topics import Event, Receipt
from settings import ROOT
from state.approval_policies import ApprovalPolicy, PolicyStore
from state.approvals import ApprovalItem, ApprovalStore
from state.apps import AppRegistry
from state.dedup import EventDedup
from state.inbox import Inbox
from state.operators import OperatorStore
from state.users import UserDirectory
from tests.integration.approvals_support import CUSTOMERS, FAST_HASHER, TWO_LEVELS, bearer, promotion, seed

BASE = "http://switchboard.test"


@dataclass
class Recording:
    """A publisher that keeps what it was given: events, receipts and audit records."""

    events: list[tuple[bytes, str]] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    audits: list[AuditRecord] = field(default_factory=list)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def check(self) -> None:
        return None

    async def publish_event(self, key: str, value: bytes, lane: str = "bulk", signature: str = "") -> None:
        self.events.append((value, signature))

    async def publish_receipt(self, receipt: Receipt) -> None:
        self.receipts.append(receipt)

    async def publish_conversion(self, conversion: Conversion) -> None:
        raise AssertionError("no conversions here")

    async def publish_audit(self, record: AuditRecord) -> None:
        self.audits.append(record)


@dataclass
class Flow:
    """What the worker would do, in process: effects recorded instead of produced."""

    emitted: list[Event] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)
    rows: list[Receipt] = field(default_factory=list)

    async def emit(self, event: Event, value: bytes, signature: str) -> None:
        assert Event.model_validate_json(value) == event
        self.emitted.append(event)
        self.values.append(value)
        self.signatures.append(signature)

    async def record(self, rows: Sequence[Receipt]) -> None:
        self.rows.extend(rows)

    def effects(self) -> Effects:
        return Effects(emit=self.emit, record=self.record)


@dataclass
class Setup:
    client: httpx.AsyncClient
    publisher: Recording
    tokens: dict[str, str]
    ingest: Ingest
    desk: ApprovalDesk
    store: ApprovalStore
    flow: Flow
    apps: AppRegistry

    async def sign(self, raw: bytes, app: str = "shop") -> str:
        """The signature the app's producer would put on `raw` (it derives the key from its app key)."""
        key = await self.apps.signing_key(app)
        assert key is not None
        return signature(raw, key)


@asynccontextmanager
async def approvals_setup(
    redis: Redis, policies: list[ApprovalPolicy] | None = None
) -> AsyncIterator[Setup]:
    tokens = await seed(redis, policies)
    catalog = TemplateCatalog(ROOT / "templates")
    apps, directory, store = AppRegistry(redis), UserDirectory(redis), ApprovalStore(redis)
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    publisher = Recording()
    deps = ApiDeps(
        apps=apps, inbox=Inbox(redis), publisher=publisher, redis=redis, templates=catalog,
        segments=directory, access=Access(apps, operators),
        approvals=Approvals(store, PolicyStore(redis), previews=catalog, roles=operators.roles),
    )
    gate = ApprovalGate(PolicyStore(redis), store, directory, cache_seconds=0)
    ingest = Ingest(directory, apps, catalog, EventDedup(redis, 3600), approvals=gate, signatures=True)
    desk = ApprovalDesk(store, OperatorApprovers(operators), signing=apps)
    api = create_api(deps)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url=BASE) as client,
    ):
        yield Setup(client, publisher, tokens, ingest, desk, store, Flow(), apps)


@pytest.mark.redis_cluster_too  # the approval scripts keep their keys in one slot
async def test_a_held_message_flows_once_after_two_distinct_approvers(redis: Redis) -> None:
    async with approvals_setup(redis) as s:
        answer = await s.client.post("/v1/events", json=promotion("sale-1"), headers=bearer(s.tokens["sam"]))
        assert answer.status_code == 202, answer.text
        [(record, signed)] = s.publisher.events
        assert json.loads(record)["submitted_by"] == "operator:sam"  # set by the API, not the body

        held = await s.ingest.handle(record, "events:0:1", signed)
        assert held.held and not held.deliveries
        [pending] = held.receipts
        assert pending.status == "pending_approval" and "marketing-review" in pending.reason
        assert (await s.ingest.handle(record, "events:0:2", signed)).duplicate  # a resend while it waits

        # Level 1's approvers are told, except sam, who sent it.
        await s.desk.follow_up(s.flow.effects())
        [notice] = s.flow.emitted
        assert notice.app == "switchboard" and notice.template == "approval_request"
        assert notice.audience.user_ids == ["op-ann"]
        assert s.flow.signatures[0] == await s.sign(s.flow.values[0], "switchboard")  # ingest takes it

        listed = await s.client.get("/v1/approvals", headers=bearer(s.tokens["ann"]))
        [item] = listed.json()["items"]
        approval = item["approval_id"]
        assert (item["level"], item["waiting_for"], item["audience_size"]) == (1, "approver", 3)
        for other in ("bo", "sam"):  # bo's role is level 2's; sam submitted it
            mine = await s.client.get("/v1/approvals", headers=bearer(s.tokens[other]))
            assert mine.json()["items"] == []
        shown = (await s.client.get(f"/v1/approvals/{approval}", headers=bearer(s.tokens["ann"]))).json()
        assert "Winter sale" in shown["preview"]["inbox"]["title"] + shown["preview"]["inbox"]["body"]

        async def decide(who: str, verdict: str = "approve", comment: str = "") -> httpx.Response:
            return await s.client.post(f"/v1/approvals/{approval}/{verdict}", json={"comment": comment},
                                       headers=bearer(s.tokens[who]))

        refused = await decide("sam")
        assert refused.status_code == 409 and "submitted this message" in refused.json()["detail"]
        first = await decide("ann", comment="fine by me")
        assert first.status_code == 200 and first.json()["waiting_for"] == "administrator"
        again = await decide("ann")  # ann holds level 2's role too, but approved level 1
        assert again.status_code == 409 and "already decided level 1" in again.json()["detail"]

        await s.desk.follow_up(s.flow.effects())
        assert s.flow.emitted[-1].audience.user_ids == ["op-bo"]  # level 2: not ann again
        assert (await decide("bo")).json()["state"] == "approved"
        assert (await decide("bo")).status_code == 409  # already approved

        await s.desk.follow_up(s.flow.effects())
        released = s.flow.emitted[-1]
        assert released.approval == approval and released.event_id == "sale-1"
        [approved] = s.flow.rows
        assert approved.status == "approved"
        assert "by ann (approver), bo (administrator)" in approved.reason
        assert approved.message_id == pending.message_id

        raw, stamp = s.flow.values[-1], s.flow.signatures[-1]  # signed by the worker as its app
        expanded = await s.ingest.handle(raw, "events:0:3", stamp)
        assert sorted(d.user_id for d in expanded.deliveries) == CUSTOMERS
        assert (await s.ingest.handle(raw, "events:0:4", stamp)).duplicate  # released twice: expanded once
        tampered = released.model_copy(update={"data": {"headline": "Free money", "body": "!"}})
        altered = tampered.model_dump_json().encode()
        unsigned = await s.ingest.handle(altered, "events:0:5", stamp)
        assert unsigned.dead_letter is not None and "bad signature" in unsigned.dead_letter.reason
        # Even the app, signing with its own key, cannot pass other content off under the approval.
        forged = await s.ingest.handle(altered, "events:0:6", await s.sign(altered))
        assert forged.dead_letter is not None and "differs" in forged.dead_letter.reason

        await s.desk.follow_up(s.flow.effects())
        assert len(s.flow.emitted) == 3 and len(s.flow.rows) == 1  # nothing more to do
        audits = [(a.action, a.actor, a.outcome) for a in s.publisher.audits]
        assert audits == [
            ("approval.approve", "sam", "denied"),
            ("approval.approve", "ann", "ok"),
            ("approval.approve", "ann", "denied"),
            ("approval.approve", "bo", "ok"),
            ("approval.approve", "bo", "denied"),
        ]
        assert s.publisher.audits[1].reason == "fine by me" and s.publisher.audits[1].app == "shop"


async def test_a_rejected_message_is_recorded_with_the_comment_and_never_released(redis: Redis) -> None:
    async with approvals_setup(redis) as s:
        raw = json.dumps(promotion("sale-2")).encode()
        held = await s.ingest.handle(raw, "events:0:1", await s.sign(raw))
        [pending] = held.receipts
        [item] = await s.store.listing("pending")
        answer = await s.client.post(f"/v1/approvals/{item.approval_id}/reject",
                                     json={"comment": "not during exams"}, headers=bearer(s.tokens["ann"]))
        assert answer.status_code == 200 and answer.json()["state"] == "rejected"
        await s.desk.follow_up(s.flow.effects())
        assert [e.app for e in s.flow.emitted] == []  # decided before anyone was told: no notice, no release
        [rejected] = s.flow.rows
        assert rejected.status == "rejected" and rejected.message_id == pending.message_id
        assert rejected.reason == "rejected by ann at level 1 (approver): not during exams"
        assert s.publisher.audits[-1].action == "approval.reject"


async def test_a_message_nobody_decides_on_expires_with_the_reason(redis: Redis) -> None:
    quick = ApprovalPolicy(name="surveys", apps=["survey"], levels=["approver"], expires_after="1s")
    async with approvals_setup(redis, [quick]) as s:
        event = promotion("poll-1", app="survey", category="notice", campaign="")
        raw = json.dumps(event).encode()
        assert (await s.ingest.handle(raw, "events:0:1", await s.sign(raw, "survey"))).held
        [item] = await s.store.listing("pending")
        await asyncio.sleep(1.2)
        late = await s.client.post(f"/v1/approvals/{item.approval_id}/approve", json={},
                                   headers=bearer(s.tokens["ann"]))
        assert late.status_code == 409 and "expired" in late.json()["detail"]
        await s.desk.follow_up(s.flow.effects())
        [expired] = s.flow.rows
        assert expired.status == "expired" and expired.app == "survey"
        assert "not approved within 1s under policy 'surveys'" in expired.reason
        assert (await s.store.listing("expired"))[0].approval_id == item.approval_id
        assert await s.store.listing("pending") == []


async def test_policies_are_managed_per_app_and_audited(redis: Redis) -> None:
    async with approvals_setup(redis, []) as s:
        body = {"apps": ["shop"], "categories": ["marketing"], "levels": ["approver"], "expires_after": "48h"}
        owners = await s.client.put("/v1/approval-policies/x", json={**body, "levels": ["app_owner"]},
                                    headers=bearer(s.tokens["bo"]))
        assert owners.status_code == 422 and "does not carry approvals:decide" in owners.text
        path = "/v1/approval-policies/shop-marketing"
        denied = await s.client.put(path, json=body, headers=bearer(s.tokens["sam"]))  # no approvals:manage
        assert denied.status_code == 403
        created = await s.client.put(path, json=body, headers=bearer(s.tokens["bo"]))
        assert created.status_code == 201, created.text
        changed = await s.client.put(path, json={**body, "levels": ["approver", "administrator"]},
                                     headers=bearer(s.tokens["bo"]))
        assert changed.status_code == 200
        everywhere = await s.client.put("/v1/approval-policies/all-apps", json={**body, "apps": []},
                                        headers=bearer(s.tokens["bo"]))
        assert everywhere.status_code == 403 and "every app" in everywhere.json()["detail"]
        bad = await s.client.put(path, json={**body, "levels": [], "expires_after": "3 days"},
                                 headers=bearer(s.tokens["bo"]))
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:2] == ["body", "levels"]
        listed = await s.client.get("/v1/approval-policies", headers=bearer(s.tokens["bo"]))
        assert [p["levels"] for p in listed.json()["policies"]] == [["approver", "administrator"]]
        assert (await s.client.delete(path, headers=bearer(s.tokens["bo"]))).status_code == 204
        assert (await s.client.delete(path, headers=bearer(s.tokens["bo"]))).status_code == 404
        audits = [(a.action, a.outcome) for a in s.publisher.audits]
        assert audits == [("approval_policy.put", "ok")] * 2 + [("approval_policy.remove", "ok")]
        assert s.publisher.audits[1].before["levels"] == ["approver"]  # type: ignore[index,call-overload]
        assert s.publisher.audits[1].after["levels"] == ["approver", "administrator"]  # type: ignore[index,call-overload]


async def test_only_switchboard_stamps_an_approval(redis: Redis) -> None:
    async with approvals_setup(redis) as s:
        stamped = {**promotion("sale-3"), "approval": "ap_0000"}
        answer = await s.client.post("/v1/events", json=stamped, headers=bearer(s.tokens["sam"]))
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "approval"]
        # On the topic, a stamp naming no approved item is a dead letter, not a way around the policy.
        raw = json.dumps(stamped).encode()
        forged = await s.ingest.handle(raw, "events:0:1", await s.sign(raw))
        assert forged.dead_letter is not None and "names no held message" in forged.dead_letter.reason
        assert s.publisher.events == []
        assert TWO_LEVELS.name in {p.name for p in await PolicyStore(redis).all()}


async def test_an_item_that_cannot_be_followed_up_does_not_stop_the_others(redis: Redis) -> None:
    async with approvals_setup(redis) as s:
        now = datetime.now(UTC)
        broken = ApprovalItem(
            approval_id="ap_broken", kind="message", subject="shop:gone", app="shop", policy="p",
            levels=("approver",), state="approved", created_at=now, expires_at=now + timedelta(hours=1),
            payload={"not": "an event"},
        )
        await s.store.hold(broken)
        raw = json.dumps(promotion("sale-4")).encode()
        assert (await s.ingest.handle(raw, "events:0:1", await s.sign(raw))).held
        assert await s.desk.follow_up(s.flow.effects()) == 2
        assert [e.template for e in s.flow.emitted] == ["approval_request"]  # the good one went on
        assert await s.store.due(now + timedelta(seconds=30)) == []  # the broken one waits a minute
        assert await s.store.due(now + timedelta(seconds=90)) == ["ap_broken"]

"""Stored templates end to end, in real processes: saved and checked through the API, previewed (SMS
segments and cost), published under an approval policy, approved by another operator, then rendered by
a running worker to a local SMTP peer with the version in ClickHouse; a rejected version never renders,
and a file template keeps rendering as version 0."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from redis.asyncio import Redis

from analytics.connection import open_reader, service_listening
from api import create_api
from api.server import build_deps
from channels.template_versions import Pricing
from localparts import LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.approval_policies import ApprovalPolicy
from state.approvals import ApprovalStore
from state.operators import OperatorStore
from state.template_store import TemplateStore
from state.users import User, UserDirectory
from tests.integration.approvals_support import FAST_HASHER, PASSWORD, bearer, seed

DEADLINE = 120.0
URL = "/v1/templates/shop_notice"
RULES = """
ruleset: templates-flow
rules:
  - id: email-now
    description: Everything by email at once, without quiet hours, so the test passes at any hour.
    then: {channels: [email]}
"""
REVIEW = ApprovalPolicy(name="template-review", apps=["shop"], templates=True, levels=["approver"])
LONG_SMS = "【示例商城】" + "冬季促销开始了，全场商品五折，欢迎光临。" * 4  # 86 characters: two segments


def draft(subject: str, comment: str) -> dict[str, object]:
    return {
        "app": "shop",
        "description": "A notice to shop customers",
        "comment": comment,
        "variables": [{"name": "headline", "type": "string", "sample": "Winter sale"},
                      {"name": "until", "type": "date", "required": False, "sample": "2026-12-31"}],
        "email": {"subject": subject, "text": "{{ headline }}{% if until %} until {{ until }}{% endif %}"},
        "sms": {"text": LONG_SMS + "{{ headline }}"},
    }


def sent_rows(settings: Settings, event_id: str) -> list[tuple[str, int]]:
    """(status, template_version) of the event's rows, through the analytics service."""
    if not service_listening(settings.analytics_host, settings.analytics_port, 0.5):
        return []
    client = open_reader(settings)
    try:
        found = client.query(
            "SELECT status, template_version FROM message_events FINAL "
            "WHERE app = 'shop' AND event_id = {e:String} AND status = 'sent'",
            parameters={"e": event_id},
        ).result_rows
    finally:
        client.close()
    return [(status, int(version)) for status, version in found]


async def eventually(what: str, check: Callable[[], Awaitable[bool]], worker: SwitchboardProcess) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert worker.running, f"worker exited:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, f"{what} did not happen in {DEADLINE}s\n{worker.log_tail()}"
        await asyncio.sleep(0.3)


async def test_a_version_goes_live_when_approved_and_the_worker_renders_it(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    flow = settings.model_copy(update={"clickhouse": f"chdb://{tmp_path / 'clickhouse'}", "rules": rules})
    tokens = await seed(redis, [REVIEW])
    # tia writes and publishes templates, and holds the approver role too: only the rule that an
    # author does not approve their own version stops her.
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    await operators.create("tia", PASSWORD, grants=["template_editor@shop", "approver@shop", "sender@shop"])
    tokens["tia"] = await operators.issue_token("tia")
    await UserDirectory(redis).upsert([User(user_id="xi", bindings={"email": "xi@shop.example"})])
    store, approvals = TemplateStore(redis), ApprovalStore(redis)
    deps = build_deps(flow, redis)
    assert deps.template_versions is not None
    # An SMS price per segment, as a Tencent-style provider states it.
    deps = dataclasses.replace(deps, template_versions=dataclasses.replace(
        deps.template_versions, prices={"sms": Pricing(0.045, per_segment=True)}))
    api = create_api(deps)
    tia, ann = bearer(tokens["tia"]), bearer(tokens["ann"])
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api.test") as client,
    ):
        saved = await client.post(f"{URL}/versions", json=draft("v1: {{ headline }}", "first"), headers=tia)
        assert saved.status_code == 201, saved.text
        assert saved.json()["version"]["number"] == 1 and saved.json()["version"]["author"] == "tia"
        broken = await client.post("/v1/templates/shop_notice/versions",
                                   json=draft("v?: {{ headline }", "broken"), headers=tia)
        assert broken.status_code == 422
        assert "email.subject: line 1" in broken.json()["detail"][0]["msg"]
        undeclared = await client.post("/v1/templates/shop_notice/versions",
                                       json=draft("{{ coupon }}", "undeclared"), headers=tia)
        assert "email.subject uses undeclared variable(s) coupon" in undeclared.json()["detail"][0]["msg"]
        taken = await client.post("/v1/templates/campus_notice/versions", json=draft("x", "x"), headers=tia)
        assert taken.status_code == 409 and "template file" in taken.json()["detail"]
        second = await client.post(f"{URL}/versions", json=draft("v2: {{ headline }}", "v2"), headers=tia)
        assert second.json()["version"]["number"] == 2  # the refused saves took no number

        shown = (await client.post(f"{URL}/versions/1/preview", json={}, headers=ann)).json()
        assert shown["channels"]["email"]["fields"]["subject"] == "v1: Winter sale"
        assert shown["channels"]["email"]["fields"]["text"] == "Winter sale until 2026-12-31"
        sms = shown["channels"]["sms"]
        assert sms["sms"]["carrier_segments"] == 2 and sms["estimated_cost"] == 0.09
        wrong = await client.post("/v1/templates/shop_notice/versions/1/preview",
                                  json={"data": {"headline": "x", "until": "someday"}}, headers=ann)
        assert "until: 'someday' is not a date" in wrong.json()["channels"]["email"]["problems"][0]
        changed = (await client.get("/v1/templates/shop_notice/diff?from=1&to=2", headers=ann)).json()["diff"]
        assert "-subject: 'v1: {{ headline }}'" in changed["email"]
        assert "+subject: 'v2: {{ headline }}'" in changed["email"] and "sms" not in changed

        with (
            SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
            SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
        ):
            held = await client.post("/v1/templates/shop_notice/versions/1/publish", headers=tia)
            assert held.status_code == 202 and held.json()["state"] == "pending_approval", held.text
            approval = held.json()["approval_id"]
            item = await approvals.get(approval)
            assert item is not None and item.kind == "template_version" and item.subject == "shop_notice@1"
            own = await client.post(f"/v1/approvals/{approval}/approve", json={"comment": "mine"},
                                    headers=tia)
            assert own.status_code == 409  # the author cannot approve their own version
            assert await store.live_number("shop_notice") is None
            approved = await client.post(f"/v1/approvals/{approval}/approve", json={"comment": "ok"},
                                         headers=ann)
            assert approved.status_code == 200, approved.text

            async def v1_live() -> bool:
                return await store.live_number("shop_notice") == 1

            await eventually("version 1 live after its approval", v1_live, worker)
            held_2 = (await client.post("/v1/templates/shop_notice/versions/2/publish", headers=tia)).json()
            rejected = await client.post(f"/v1/approvals/{held_2['approval_id']}/reject",
                                         json={"comment": "wrong week"}, headers=ann)
            assert rejected.status_code == 200

            async def v2_rejected() -> bool:
                publication = await store.publication("shop_notice", 2)
                return publication is not None and publication.state == "rejected"

            await eventually("version 2 rejected", v2_rejected, worker)

            async def api_knows_it() -> bool:  # the API follows the live versions every 2 s
                return "shop_notice" in deps.templates

            await eventually("the API's catalog serving shop_notice", api_knows_it, worker)
            for event_id, template in (("n1", "shop_notice"), ("n2", "campus_notice")):
                event = {"event_id": event_id, "app": "shop", "type": "shop.notice", "template": template,
                         "category": "notice", "audience": {"user_ids": ["xi"]},
                         "data": {"headline": "Winter sale", "body": "Half price"}}
                answer = await client.post("/v1/events", json=event, headers=tia)
                assert answer.status_code == 202, answer.text

            async def both_rows() -> bool:
                return bool(sent_rows(flow, "n1")) and bool(sent_rows(flow, "n2"))

            await eventually("the sent rows in ClickHouse", both_rows, worker)
            rows = {event_id: sent_rows(flow, event_id) for event_id in ("n1", "n2")}
            assert worker.stop() == 0, worker.log_tail()
            assert service.stop() == 0, service.log_tail()
    subjects = sorted(str(m.message["Subject"]) for m in smtp.messages)
    assert subjects == ["Campus notice: Winter sale | 校园通知", "v1: Winter sale"]  # never v2's
    assert rows == {"n1": [("sent", 1)], "n2": [("sent", 0)]}
    publication = await store.publication("shop_notice", 2)
    assert publication is not None
    assert publication.reason == "rejected by ann at level 1 (approver): wrong week"

"""Campaigns end to end, in real processes: the API on the broker, a worker, the analytics service and
ClickHouse. A composed campaign reaches every recipient's inbox and its report shows the reach; its
inbox messages are recalled; a paced campaign cancelled mid-way sends no more, its unsent messages
`cancelled`; a scheduled one cancelled before it is due sends nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from analytics.connection import service_listening
from api import create_api
from api.server import build_deps
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.apps import AppRegistry
from state.inbox import Inbox
from state.operators import OperatorStore
from state.users import User, UserDirectory
from tests.integration.approvals_support import FAST_HASHER, PASSWORD, bearer

DEADLINE = 120.0
# Everything to the inbox at once: the default rules' quiet hours would make the outcome depend on the
# hour the test runs.
RULES = """
ruleset: campaigns-flow
rules:
  - id: inbox-now
    description: Everything to the inbox at once.
    then: {channels: [inbox]}
"""
DATA = {"course": "Linear Algebra", "starts_at": "10:00", "room": "B201"}


def composition(tag: str, **changes: Any) -> dict[str, Any]:
    return {
        "app": "lms",
        "name": f"reminder to {tag}",
        "audience": {"tags": [tag]},
        "channels": ["inbox"],
        "category": "notice",
        "type": "course.reminder",
        "template": "course_reminder",
        "data": DATA,
    } | changes


async def seed(redis: Redis, groups: dict[str, int]) -> str:
    """The app, people in tagged groups (`tag` -> how many), an operator who sends; returns their token."""
    await AppRegistry(redis).register("lms", {"inbox"})
    people = [
        User(user_id=f"{tag}-{n}", tags=(tag,), bindings={"inbox": f"{tag}-{n}"})
        for tag, size in groups.items()
        for n in range(size)
    ]
    await UserDirectory(redis).upsert(people)
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    await operators.create("li", PASSWORD, grants=["sender@lms"])
    return await operators.issue_token("li")


async def eventually(what: str, check: Callable[[], Awaitable[bool]], worker: SwitchboardProcess) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert worker.running, f"worker exited:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, f"{what} did not happen in {DEADLINE}s\n{worker.log_tail()}"
        await asyncio.sleep(0.3)


async def inbox_messages(inbox: Inbox, people: list[str]) -> int:
    return sum([await inbox.total(person) for person in people])


async def analytics_up(settings: Settings, worker: SwitchboardProcess) -> None:
    """Reports are read through the analytics service: asked before it listens, the API would open the
    engine's folder itself (`open_reader`) and keep reading that empty copy."""

    async def listening() -> bool:
        host, port = settings.analytics_host, settings.analytics_port
        return await asyncio.to_thread(service_listening, host, port, 0.5)

    await eventually("the analytics service listening", listening, worker)


def flow_settings(settings: Settings, tmp_path: Path) -> Settings:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return settings.model_copy(update={"clickhouse": f"chdb://{tmp_path / 'clickhouse'}", "rules": rules})


async def test_a_campaign_reaches_everyone_reports_its_reach_and_is_recalled(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    flow = flow_settings(settings, tmp_path)
    li = bearer(await seed(redis, {"y2020": 6}))
    people = [f"y2020-{n}" for n in range(6)]
    inbox = Inbox(redis)
    api = create_api(build_deps(flow, redis))
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api.test") as client,
    ):
        estimate = await client.post("/v1/campaigns/estimate", json=composition("y2020"), headers=li)
        assert (estimate.json()["recipients"], estimate.json()["exact"]) == (6, True)
        created = await client.post("/v1/campaigns", json=composition("y2020"), headers=li)
        campaign = created.json()["id"]
        with (
            SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
            SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
        ):
            submitted = await client.post(f"/v1/campaigns/{campaign}/submit", headers=li)
            assert submitted.status_code == 202, submitted.text

            async def everyone_has_it() -> bool:
                return await inbox_messages(inbox, people) == 6

            await eventually("six inbox messages", everyone_has_it, worker)
            await analytics_up(flow, worker)
            report: dict[str, Any] = {}

            async def reach_reported() -> bool:
                nonlocal report
                answer = await client.get(f"/v1/campaigns/{campaign}/report", headers=li)
                assert service.running, service.log_tail()
                report = answer.json() if answer.status_code == 200 else {}
                return report.get("reach") == 6

            await eventually("a reach of 6 in the report", reach_reported, worker)
            assert report["totals"]["sent"] == report["totals"]["delivered"] == 6
            assert [c["channel"] for c in report["channels"]][-1] == "inbox"
            [listed] = (await client.get("/v1/campaigns", headers=li)).json()
            assert listed["state"] == "done"
            assert {k: listed["progress"][k] for k in ("sent", "delivered", "settled")} == dict.fromkeys(
                ("sent", "delivered", "settled"), 6
            )

            recalled = await client.post(f"/v1/campaigns/{campaign}/recall", headers=li)
            assert recalled.json() == {"campaign": campaign, "recalled": 6, "cancelled": False}
            assert await inbox_messages(inbox, people) == 0

            async def recall_reported() -> bool:
                answer = await client.get(f"/v1/campaigns/{campaign}/report", headers=li)
                return answer.json()["totals"].get("recalled") == 6

            await eventually("six recalled rows", recall_reported, worker)


async def test_a_paced_campaign_cancelled_midway_sends_no_more_and_a_scheduled_one_sends_nothing(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    flow = flow_settings(settings, tmp_path)
    li = bearer(await seed(redis, {"y2021": 10, "y2022": 3}))
    paced_people = [f"y2021-{n}" for n in range(10)]
    later_people = [f"y2022-{n}" for n in range(3)]
    inbox = Inbox(redis)
    api = create_api(build_deps(flow, redis))
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api.test") as client,
    ):

        async def submitted(body: dict[str, Any]) -> str:
            campaign = str((await client.post("/v1/campaigns", json=body, headers=li)).json()["id"])
            answer = await client.post(f"/v1/campaigns/{campaign}/submit", headers=li)
            assert answer.status_code == 202, answer.text
            return campaign

        with (
            SwitchboardProcess("analytics", flow, tmp_path / "analytics.log"),
            SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
        ):
            # One a second: ten people take ten seconds, across however many workers.
            paced = await submitted(composition("y2021", pace_per_second=1))
            soon = (datetime.now(UTC) + timedelta(seconds=4)).isoformat()
            later = await submitted(composition("y2022", send_at=soon))
            assert (await client.post(f"/v1/campaigns/{later}/cancel", headers=li)).status_code == 200

            async def some_sent() -> bool:
                return await inbox_messages(inbox, paced_people) >= 2

            await eventually("the first paced messages", some_sent, worker)
            cancelled = await client.post(f"/v1/campaigns/{paced}/cancel", headers=li)
            assert cancelled.status_code == 200, cancelled.text
            sent_at_cancel = await inbox_messages(inbox, paced_people)
            assert sent_at_cancel < 10, "the pace let everything through at once"
            await analytics_up(flow, worker)
            totals: dict[str, dict[str, int]] = {}

            async def all_settled() -> bool:
                for campaign in (paced, later):
                    answer = await client.get(f"/v1/campaigns/{campaign}/report", headers=li)
                    totals[campaign] = answer.json()["totals"] if answer.status_code == 200 else {}
                return (
                    totals[paced].get("sent", 0) + totals[paced].get("cancelled", 0) == 10
                    and totals[later].get("cancelled", 0) == 3
                )

            await eventually("every message sent or cancelled", all_settled, worker)
            sent = await inbox_messages(inbox, paced_people)
            # Only what was in flight at the cancel (a batch past its check) may still have arrived.
            assert totals[paced]["sent"] == sent and sent_at_cancel <= sent <= sent_at_cancel + 2
            assert totals[paced]["cancelled"] == 10 - sent
            assert await inbox_messages(inbox, later_people) == 0 and "sent" not in totals[later]
            await asyncio.sleep(2)
            assert await inbox_messages(inbox, paced_people) == sent

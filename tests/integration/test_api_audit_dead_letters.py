"""The audit log and dead letters through the API, wired as in production (build_deps: the real broker,
Redis, and the analytics service as a process owning ClickHouse), with a worker delivering to the local
SMTP peer. Operators act through their roles: an app owner sees and replays only their app's letters;
only an auditor reads the log; without the permission, 403."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from typer.testing import CliRunner

from api.app import create_api
from api.server import build_deps
from app import cli
from localparts import LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.apps import AppRegistry
from state.flow_counters import FlowCounters
from state.operators import OperatorStore
from state.users import User, UserDirectory
from tests.integration.test_flow import FLOW_TIMEOUT, notice, notices_rule, produce, wait_caught_up

PASSWORD = "a long enough passphrase 2026"


@asynccontextmanager
async def api_client(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    api = create_api(build_deps(settings, redis))
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api.test") as client,
    ):
        yield client


async def operator(redis: Redis, name: str, *grants: str) -> dict[str, str]:
    store = OperatorStore(redis)
    await store.create(name, PASSWORD, grants=list(grants))
    return {"Authorization": f"Bearer {await store.issue_token(name)}"}


async def eventually(ask: Any, done: Any, what: str, service: SwitchboardProcess) -> Any:
    deadline = time.monotonic() + FLOW_TIMEOUT
    while True:
        answer = await ask()
        if done(answer):
            return answer
        assert service.running, service.log_tail()
        assert time.monotonic() < deadline, f"{what}: {answer}"
        await asyncio.sleep(0.3)


async def test_operators_list_inspect_and_replay_their_apps_letters_and_auditors_read_the_log(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(notices_rule("email"))
    flow = settings.model_copy(update={"rules": rules, "clickhouse": f"chdb://{tmp_path / 'service-ch'}"})
    await UserDirectory(redis).upsert([User(user_id="xi", bindings={"email": "xi@uni.example"})])
    apps = AppRegistry(redis)
    campus_key = await apps.register("campus", {"email"})
    await apps.register("bursar", {"email"})
    owner = await operator(redis, "olga", "app_owner@campus")
    admin = await operator(redis, "ada", "administrator")
    auditor = await operator(redis, "aud", "auditor")
    sender = await operator(redis, "sam", "sender")

    bad_campus = {**json.loads(notice("n1", "xi")), "category": "newsletter"}
    bad_bursar = {**json.loads(notice("b1", "xi")), "app": "bursar", "template": ""}
    with (
        SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
        SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
    ):
        await produce(flow, [json.dumps(bad_campus).encode(), json.dumps(bad_bursar).encode()])
        await wait_caught_up(redis, 2, worker, service)
        async with api_client(flow, redis) as client:
            mine = (await client.get("/v1/dead-letters", headers=owner)).json()
            everyone = (await client.get("/v1/dead-letters?stage=ingest", headers=admin)).json()
            [campus] = mine["letters"]
            bursar = next(letter for letter in everyone["letters"] if letter["app"] == "bursar")
            refusals = {
                "no credentials": (await client.get("/v1/dead-letters")).status_code,
                "sender": (await client.get("/v1/dead-letters", headers=sender)).status_code,
                "app key": (
                    await client.get("/v1/dead-letters", headers={"Authorization": f"Bearer {campus_key}"})
                ).status_code,
                "other app's letter": (
                    await client.get(f"/v1/dead-letters/{bursar['id']}", headers=owner)
                ).status_code,
                "other app's filter": (
                    await client.get("/v1/dead-letters?app=bursar", headers=owner)
                ).status_code,
                "other app's replay": (
                    await client.post(f"/v1/dead-letters/{bursar['id']}/replay", headers=owner)
                ).status_code,
                "bad since": (await client.get("/v1/dead-letters?since=soon", headers=owner)).status_code,
            }
            shown = (await client.get(f"/v1/dead-letters/{campus['id']}", headers=owner)).json()

            replay = f"/v1/dead-letters/{campus['id']}/replay"
            as_it_was = await client.post(replay, headers=owner)
            moved = await client.post(
                replay, headers=owner, json={"event": {**bad_campus, "app": "bursar", "category": "notice"}}
            )
            fixed = {**bad_campus, "category": "notice"}
            first = await client.post(replay, headers=owner, json={"event": fixed})
            await wait_caught_up(redis, 3, worker, service)
            await eventually(lambda: asyncio.sleep(0, smtp.messages), bool, "no mail", worker)
            second = await client.post(replay, headers=owner, json={"event": fixed})
            await eventually(
                lambda: FlowCounters(redis).read(), lambda c: c.get("duplicates") == 1, "no duplicate", worker
            )
            selection = await client.post("/v1/dead-letters:replay", headers=admin, json={"app": "bursar"})

            rotated = await asyncio.to_thread(
                CliRunner().invoke, cli, ["apps", "rotate", "campus"], env=flow.to_env()
            )
            new_key = rotated.output.split("(shown once): ")[1].split(";")[0]
            replays = await eventually(
                lambda: client.get("/v1/audit?action=dead_letter.replay&actor=olga", headers=auditor),
                lambda r: r.status_code == 200 and len(r.json()["entries"]) == 4,
                "replays not in the audit log",
                service,
            )
            rotations = await eventually(
                lambda: client.get("/v1/audit?action=app.rotate_key&app=campus&since=1h", headers=auditor),
                lambda r: r.status_code == 200 and len(r.json()["entries"]) == 1,
                "the rotation is not in the audit log",
                service,
            )
            reads = await client.get("/v1/audit?action=dead_letter.read", headers=auditor)
            log_refusals = {
                "sender": (await client.get("/v1/audit", headers=sender)).status_code,
                "app owner": (await client.get("/v1/audit", headers=owner)).status_code,
                "app key": (  # the key the rotation issued: the old one is refused (401) since
                    await client.get("/v1/audit", headers={"Authorization": f"Bearer {new_key}"})
                ).status_code,
                "none": (await client.get("/v1/audit")).status_code,
                "limit": (await client.get("/v1/audit?limit=5000", headers=auditor)).status_code,
            }
            bad_cursor = await client.get("/v1/audit?cursor=abc", headers=auditor)
        assert worker.stop() == 0, worker.log_tail()
        assert service.stop() == 0, service.log_tail()

    assert mine["matched"] == 1 and campus["app"] == "campus" and campus["stage"] == "ingest"
    assert {letter["app"] for letter in everyone["letters"]} >= {"campus", "bursar"}
    assert refusals == {
        "no credentials": 401,
        "sender": 403,
        "app key": 403,
        "other app's letter": 404,
        "other app's filter": 403,
        "other app's replay": 404,
        "bad since": 422,
    }
    assert shown["payload"]["category"] == "newsletter"
    assert as_it_was.status_code == 422 and "category" in as_it_was.text
    assert moved.status_code == 403 and "may not send as 'bursar'" in moved.json()["detail"]
    assert (
        first.status_code == 200 and first.json()["outcome"] == "published" and not first.json()["duplicate"]
    )
    assert second.status_code == 200 and second.json()["duplicate"]
    assert [list(m.rcpt_tos) for m in smtp.messages] == [["xi@uni.example"]]  # once, not twice
    assert selection.status_code == 200
    assert [(r["letter_id"], r["outcome"]) for r in selection.json()["results"]] == [
        (bursar["id"], "invalid")
    ]

    entries = replays.json()["entries"]
    assert [(e["outcome"], e["after"]["outcome"]) for e in entries] == [
        ("ok", "published"),
        ("ok", "published"),
        ("denied", "forbidden"),
        ("failed", "invalid"),
    ]
    assert {(e["actor"], e["actor_kind"], e["source"], e["target"]) for e in entries} == {
        ("olga", "operator", "127.0.0.1", campus["id"])
    }
    [read] = reads.json()["entries"]  # the owner's look at the payload; refused looks show nothing
    assert (read["actor"], read["target"], read["app"]) == ("olga", campus["id"], "campus")
    [rotation] = rotations.json()["entries"]
    assert rotation["source"] == "cli" and rotation["target"] == "campus"
    assert new_key not in rotations.text and campus_key not in rotations.text
    assert log_refusals == {"sender": 403, "app owner": 403, "app key": 403, "none": 401, "limit": 422}
    assert bad_cursor.status_code == 422 and bad_cursor.json()["detail"][0]["loc"] == ["query", "cursor"]

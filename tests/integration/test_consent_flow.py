"""Opt-in, the whitelist and test mode in the whole flow: broker → worker → analytics service →
ClickHouse, on real Redis; what people received (their inboxes) and what ClickHouse says agree."""

from __future__ import annotations

import json
from pathlib import Path

from redis.asyncio import Redis

from analytics.connection import open_reader
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.apps import AppRegistry
from state.consent import ConsentStore
from state.inbox import Inbox
from state.users import User, UserDirectory
from tests.integration.test_flow import produce, wait_caught_up

# `lms` notices are capped at one a day per person, but the whitelist is exempt; its fee statements are
# capped the same, with no exemption: the same whitelisted person exceeds one cap and not the other.
RULES = """
ruleset: consent-flow
caps:
  - id: notices-daily
    match: {app: [lms], category: [notice]}
    limits: ["1/1d"]
    exempt: {whitelist: true}
  - id: fees-daily
    match: {app: [lms], category: [transactional]}
    limits: ["1/1d"]
rules:
  - id: everything-to-the-inbox
    when: {type: [campus.notice]}
    then: {channels: [inbox]}
"""


def event(event_id: str, app: str, category: str, *users: str) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "app": app,
            "type": "campus.notice",
            "template": "campus_notice",
            "category": category,
            "audience": {"user_ids": list(users)},
            "data": {"headline": event_id, "body": "-"},
        }
    ).encode()


def outcomes(settings: Settings) -> dict[tuple[str, str], tuple[str, str]]:
    """(event, user) -> (last status, its reason), read through the analytics service."""
    client = open_reader(settings)
    try:
        rows = client.query(
            "SELECT event_id, user_id, argMax(status, event_time), argMax(reason, event_time) "
            "FROM message_events FINAL WHERE status != 'decided' GROUP BY event_id, user_id"
        ).result_rows
    finally:
        client.close()
    return {(str(e), str(u)): (str(s), str(r)) for e, u, s, r in rows}


async def test_opt_in_test_mode_and_the_whitelist_in_the_flow(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    flow = settings.model_copy(
        update={"clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}", "rules": rules}
    )
    people = ["fan", "shy", "vip", "pat"]
    await UserDirectory(redis).upsert([User(user_id=p, bindings={"inbox": p}) for p in people])
    registry = AppRegistry(redis)
    for app in ("shop", "pilot", "lms"):
        await registry.register(app, {"inbox"})
    consent = ConsentStore(redis)  # marketing needs an opt-in, as by default
    await consent.opt_in("fan", category="marketing", source="signup form v3", evidence="box ticked")
    await consent.whitelist.add("vip", "QA")
    await consent.whitelist.set_test_mode("pilot", True, by="operator alice")
    first = [
        event("promo-1", "shop", "marketing", "fan", "shy"),
        event("pilot-1", "pilot", "notice", "vip", "pat"),
        *(event(f"notice-{n}", "lms", "notice", "vip", "pat") for n in range(3)),
        *(event(f"fee-{n}", "lms", "transactional", "vip") for n in range(3)),
    ]
    with (
        SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
        SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
    ):
        # One at a time: the caps count in the order the sends happen.
        for n, value in enumerate(first, start=1):
            await produce(flow, [value])
            await wait_caught_up(redis, n, worker, service)
        await consent.withdraw("fan", category="marketing", by="user fan")
        await produce(flow, [event("promo-2", "shop", "marketing", "fan")])
        await wait_caught_up(redis, len(first) + 1, worker, service)
        assert worker.stop() == 0, worker.log_tail()
        found = outcomes(flow)
        assert service.stop() == 0, service.log_tail()

    inbox = Inbox(redis)
    received = {p: sorted(m.title for m in await inbox.list(p, limit=50)) for p in people}
    assert received == {
        "fan": ["promo-1"],  # opted in, then withdrew: promo-2 did not reach them
        "shy": [],  # never opted in
        "vip": ["fee-0", "notice-0", "notice-1", "notice-2", "pilot-1"],  # whitelisted: exempt from one cap
        "pat": ["notice-0"],  # capped after the first; not whitelisted, so nothing from the pilot app
    }
    no_opt_in = ("suppressed", "consent: no opt-in for marketing")
    assert found[("promo-1", "shy")] == no_opt_in
    assert found[("promo-2", "fan")] == no_opt_in
    assert found[("pilot-1", "pat")] == ("suppressed", "test mode: not whitelisted")
    assert found[("pilot-1", "vip")][0] == "delivered"
    assert [found[(f"notice-{n}", "vip")][0] for n in range(3)] == ["delivered"] * 3
    assert [found[(f"notice-{n}", "pat")][0] for n in range(3)] == ["delivered", "capped", "capped"]
    assert [found[(f"fee-{n}", "vip")][0] for n in range(3)] == ["delivered", "capped", "capped"]
    assert "cap fees-daily: 1 per 1d reached" in found[("fee-1", "vip")][1]

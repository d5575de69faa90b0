"""The named strategies over the API: listed for the composer from the rule files the API has loaded, and
an event naming one they do not define refused (422) before it is published."""

from __future__ import annotations

import re

import pytest
from redis.asyncio import Redis

from rules.watch import RulesWatcher
from settings import ROOT
from tests.integration.test_api_support import running_api

CAMPUS_NOTICE = {
    "event_id": "notice-1", "app": "portal", "type": "campus.notice", "template": "campus_notice",
    "category": "notice", "data": {"headline": "Library hours", "body": "Open until midnight."},
    "audience": {"user_ids": ["s1"]},
}


async def test_the_composer_lists_the_loaded_strategies_with_their_steps_and_place(redis: Redis) -> None:
    watcher = RulesWatcher(ROOT / "rules")
    async with running_api(redis, rules=watcher) as api:
        editor = await api.operator("editor", "template_editor")
        # The API starts before its first poll: it says so rather than listing nothing.
        early = await api.client.get("/v1/strategies", headers=editor)
        assert early.status_code == 503 and "not loaded yet" in early.json()["detail"]
        assert watcher.poll() is not None
        listed = await api.client.get("/v1/strategies", headers=editor)
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert watcher.ruleset is not None and body["rules_version"] == watcher.ruleset.version
        by_name = {s["name"]: s for s in body["strategies"]}
        assert set(by_name) == {"push_then_sms", "inbox_then_email", "everywhere_at_once"}
        push = by_name["push_then_sms"]
        assert push["first_of"] == ["push", "inbox"] and push["channels"] is None
        assert push["steps"] == [
            {"step": 1, "after": "5m", "condition": "not_read", "first_of": ["wechat_oa"], "template": None},
            {"step": 2, "after": "15m", "condition": "not_read", "first_of": ["sms"], "template": None},
        ]
        assert re.fullmatch(r".*/rules/default\.yaml:\d+", push["origin"]), push["origin"]
        assert by_name["everywhere_at_once"]["steps"] == []
        analyst = await api.operator("analyst", "analyst")
        refused = await api.client.get("/v1/strategies", headers=analyst)
        assert refused.status_code == 403 and "events:send or templates:read" in refused.json()["detail"]


async def test_an_event_naming_an_unknown_strategy_is_refused_naming_it(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    watcher = RulesWatcher(ROOT / "rules")
    watcher.poll()
    published: list[str] = []

    async def publish_event(key: str, value: bytes, lane: str = "bulk", signature: str = "") -> None:
        published.append(key)

    async with running_api(redis, rules=watcher) as api:
        monkeypatch.setattr(api.publisher, "publish_event", publish_event)
        headers = {"Authorization": f"Bearer {api.key}"}
        typo = await api.client.post("/v1/events", json={**CAMPUS_NOTICE, "strategy": "push_than_sms"},
                                     headers=headers)
        assert typo.status_code == 422, typo.text
        [problem] = typo.json()["detail"]
        assert problem["loc"] == ["body", "strategy"]
        assert problem["msg"] == "unknown strategy 'push_than_sms' (did you mean 'push_then_sms'?)"
        assert problem["type"] == "unknown_strategy"
        assert published == []
        known = await api.client.post("/v1/events", json={**CAMPUS_NOTICE, "strategy": "push_then_sms"},
                                      headers=headers)
        assert known.status_code == 202, known.text
        assert published == ["portal:notice-1"]

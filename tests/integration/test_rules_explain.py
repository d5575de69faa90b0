"""`rules explain --user ID` reads the user, the app's channels and last activity from real Redis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from rules.cli import rules_cli
from settings import ROOT
from state.apps import AppRegistry
from state.connection import open_redis
from state.engagement import EngagementHistory
from state.users import User, UserDirectory

EVENT = '{"app": "lms", "type": "course.reminder", "category": "notice", "template": "course_reminder"}'


async def seed(redis_url: str, active_at: datetime) -> None:
    redis = open_redis(redis_url)
    try:
        await redis.flushdb()
        await UserDirectory(redis).upsert(
            [
                User(
                    user_id="s1",
                    channel_pref="email",
                    bindings={"push": "tok", "inbox": "s1", "email": "s1@x"},
                )
            ]
        )
        await AppRegistry(redis).register("lms", {"inbox", "email"})
        await EngagementHistory(redis).record_many([("s1", "read", active_at)])
    finally:
        await redis.aclose()


def test_explain_reads_user_app_and_activity_from_redis(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(seed(redis_url, datetime.now(UTC) - timedelta(days=1)))
    monkeypatch.setenv("SWITCHBOARD_REDIS", redis_url)
    monkeypatch.setenv("SWITCHBOARD_RULES", str(ROOT / "rules" / "default.yaml"))
    result = CliRunner().invoke(rules_cli, ["explain", "--event", EVENT, "--user", "s1"])
    assert result.exit_code == 0, result.output
    # Active yesterday: the push rule wins, but the app may not use push, so the preferred email goes.
    assert "=> course-reminders-active" in result.output
    assert "allowed  app may use [email, inbox]" in result.output
    assert "push: app lms is not allowed to use it" in result.output
    assert "send on  email (s1@x)" in result.output
    missing = CliRunner().invoke(rules_cli, ["explain", "--event", EVENT, "--user", "nobody"])
    assert missing.exit_code == 2
    assert "--user 'nobody': no such file, and no such user in Redis" in missing.output

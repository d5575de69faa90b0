"""`switchboard templates` against real Redis and the broker, acting as operators by their tokens: save
from a file, list, preview, diff, publish (at once without a policy; rollback by publishing an older
version), every mistake one line, every change an audit record."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from settings import Settings
from state.connection import open_redis
from state.template_store import TemplateStore
from tests.integration.approvals_support import seed
from tests.integration.test_approvals_cli import audit_actions, run

VERSION_1 = """\
name: exam_notice
app: shop
description: Exam timetable notices
comment: first draft
variables:
  - {name: course, type: string, sample: Algebra}
  - {name: day, type: date, sample: "2026-06-20"}
inbox:
  title: "Exam: {{ course }}"
  body: "{{ course }} is on {{ day }}."
sms:
  text: "【示例大学】{{ course }} exam on {{ day }}"
"""


async def tokens_of(settings: Settings) -> dict[str, str]:
    redis = open_redis(settings.redis)
    try:
        await redis.flushdb()
        return await seed(redis, [])
    finally:
        await redis.aclose()


async def live_of(settings: Settings, name: str) -> int | None:
    redis = open_redis(settings.redis)
    try:
        return await TemplateStore(redis).live_number(name)
    finally:
        await redis.aclose()


def test_operators_save_preview_diff_and_publish_from_the_command_line(
    settings: Settings, tmp_path: Path
) -> None:
    tokens = asyncio.run(tokens_of(settings))
    env = {**settings.to_env(), "SWITCHBOARD_OPERATOR_TOKEN": tokens["bo"]}  # administrator of shop
    source = tmp_path / "exam_notice.yaml"
    source.write_text(VERSION_1)

    assert run(["templates", "save", str(source), "--operator", "bo"], env) == [
        "exam_notice version 1 saved (a new template of app shop)"
    ]
    source.write_text(VERSION_1.replace("is on {{ day }}", "is on {{ day }}, bring your card"))
    assert run(["templates", "save", str(source), "--operator", "bo"], env) == [
        "exam_notice version 2 saved (not live until published)"
    ]
    source.write_text(VERSION_1.replace("{{ course }} is on", "{{ room }} is on"))
    [undeclared] = run(["templates", "save", str(source), "--operator", "bo"], env, status=1)
    assert undeclared == ("error: template 'exam_notice' version (new): inbox.body uses undeclared "
                          "variable(s) room (declare them under variables or optional)")
    source.write_text(VERSION_1.replace("app: shop", "app: shop\ncolour: red"))
    [unknown] = run(["templates", "save", str(source), "--operator", "bo"], env, status=1)
    assert unknown == f"error: {source}: colour: Extra inputs are not permitted"

    shown = run(["templates", "preview", "exam_notice", "1", "--operator", "bo"], env)
    preview = json.loads("\n".join(shown))
    assert preview["inbox"]["fields"] == {"title": "Exam: Algebra", "body": "Algebra is on 2026-06-20."}
    assert preview["sms"]["sms"]["segments"] == 1 and preview["sms"]["problems"] == []
    changes = run(["templates", "diff", "exam_notice", "1", "2", "--operator", "bo"], env)
    assert "-body: '{{ course }} is on {{ day }}.'" in changes
    assert "+body: '{{ course }} is on {{ day }}, bring your card.'" in changes

    assert run(["templates", "publish", "exam_notice", "2", "--operator", "bo"], env) == [
        "exam_notice version 2 is live (was -); workers take it within seconds"
    ]
    assert run(["templates", "publish", "exam_notice", "1", "--operator", "bo"], env) == [
        "exam_notice version 1 is live (was 2); workers take it within seconds"  # a rollback
    ]
    assert asyncio.run(live_of(settings, "exam_notice")) == 1
    listed = run(["templates", "list", "--operator", "bo"], env)
    assert listed[0].split()[:6] == ["exam_notice", "app", "shop", "live", "1", "latest"]
    assert "campus_notice" in listed[-1]

    sam = {**env, "SWITCHBOARD_OPERATOR_TOKEN": tokens["sam"]}  # a sender: reads, does not publish
    [refused] = run(["templates", "publish", "exam_notice", "2", "--operator", "sam"], sam, status=1)
    assert refused == "error: operator 'sam' lacks permission templates:publish on app 'shop'"
    [missing] = run(["templates", "show", "campus_notice", "--operator", "bo"], env, status=1)
    assert "a template file: edited in git" in missing

    actions = asyncio.run(audit_actions(settings, 4))
    assert [a for a in actions if a[0].startswith("template.")] == [
        ("template.save", "bo", "ok"), ("template.save", "bo", "ok"),
        ("template.publish", "bo", "ok"), ("template.publish", "bo", "ok"),
    ]

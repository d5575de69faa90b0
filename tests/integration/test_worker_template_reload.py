"""A running worker takes a rule naming a new template together with that template, and sends with it."""

from __future__ import annotations

import shutil
from pathlib import Path

from redis.asyncio import Redis

from localparts import LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from settings import ROOT, Settings
from state.apps import AppRegistry
from state.users import User, UserDirectory
from tests.integration.test_flow import notice, notices_rule, produce, wait_caught_up, wait_for_log

LIBRARY_NOTICE = """\
description: A notice from the library, added while the worker runs.
variables: [headline, body]
email:
  subject: "Library: {{ headline }}"
  text: "{{ body }}"
"""


def with_template(template: str) -> str:
    return notices_rule("email").replace(
        "then: {channels: [email]}", f"then: {{channels: [email], template: {template}}}"
    )


async def test_a_rule_and_its_new_template_go_live_together(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    rules = tmp_path / "rules.yaml"
    rules.write_text(notices_rule("email"))
    flow = settings.model_copy(
        update={"rules": rules, "templates": templates, "clickhouse": f"chdb://{tmp_path / 'worker-ch'}"}
    )
    await UserDirectory(redis).upsert([User(user_id="xi", bindings={"email": "xi@uni.example"})])
    await AppRegistry(redis).register("campus", {"email"})
    with SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker:
        await produce(flow, [notice("n1", "xi")])
        await wait_caught_up(redis, 1, worker)

        (templates / "library_notice.yaml").write_text(LIBRARY_NOTICE)
        rules.write_text(with_template("library_notice"))
        await wait_for_log("rules reloaded", worker)
        await produce(flow, [notice("n2", "xi")])
        await wait_caught_up(redis, 2, worker)

        # A rule naming a template that is not there is refused; the pair above keeps running.
        rules.write_text(with_template("library_notise"))
        await wait_for_log("unknown template 'library_notise'", worker)
        await produce(flow, [notice("n3", "xi")])
        await wait_caught_up(redis, 3, worker)
        assert worker.stop() == 0, worker.log_tail()
    subjects = [str(m.message["Subject"]) for m in smtp.messages]
    assert subjects == [
        "Campus notice: Library hours | 校园通知", "Library: Library hours", "Library: Library hours",
    ]

"""Rules and templates reload together: a rule never goes live naming a template the worker cannot render."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from channels.templates import TemplateCatalog, TemplateError
from rules.loader import load_ruleset
from rules.schema import Ruleset
from rules.watch import RulesWatcher

ROOT = Path(__file__).resolve().parents[2]

RULES = (
    "ruleset: t\nrules:\n  - id: notices\n    when: {type: [campus.notice]}\n    then: {channels: [email]}\n"
)
WITH_TEMPLATE = RULES.replace("then: {channels: [email]}", "then: {channels: [email], template: %s}")
EXAM_CHANGE = """\
description: An exam moved to another room.
variables: [course, room]
email:
  subject: "Exam room changed: {{ course }}"
  text: "The {{ course }} exam is now in {{ room }}."
"""
INBOX_ONLY = """\
description: An exam moved to another room.
variables: [course, room]
inbox:
  title: "Exam room changed: {{ course }}"
  body: "The {{ course }} exam is now in {{ room }}."
"""
DATA = {"course": "CS101", "room": "East 204"}


class Worker:
    """What a worker holds: the catalog every stage renders with, and the rules watcher."""

    def __init__(self, tmp_path: Path) -> None:
        self.templates = tmp_path / "templates"
        shutil.copytree(ROOT / "templates", self.templates)
        self.rules = tmp_path / "rules.yaml"
        self.rules.write_text(RULES)
        self.catalog = TemplateCatalog(self.templates)
        self.running: Ruleset = load_ruleset(self.rules, self.catalog.parts())
        self.watcher = RulesWatcher(self.rules, self.templates, current=self.running, catalog=self.catalog)

    def poll(self) -> Ruleset | None:
        ruleset = self.watcher.poll()
        if ruleset is not None:
            self.running = ruleset
        return ruleset


@pytest.fixture
def worker(tmp_path: Path) -> Worker:
    return Worker(tmp_path)


def test_a_rule_naming_a_new_template_goes_live_with_that_template(worker: Worker) -> None:
    assert worker.poll() is None  # nothing changed since the start
    (worker.templates / "exam_room_change.yaml").write_text(EXAM_CHANGE)
    worker.rules.write_text(WITH_TEMPLATE % "exam_room_change")
    reloaded = worker.poll()
    assert reloaded is not None and reloaded.rules[0].then.template == "exam_room_change"
    rendered = worker.catalog.render("exam_room_change", "email", DATA, None)
    assert rendered.subject == "Exam room changed: CS101"
    assert worker.poll() is None


def test_a_rule_naming_a_missing_template_is_refused_and_the_old_pair_keeps_running(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    before = worker.running
    worker.rules.write_text(WITH_TEMPLATE % "exam_room_change")
    with caplog.at_level(logging.ERROR, logger="rules.watch"):
        assert worker.poll() is None
    assert f"{worker.rules}:5:" in caplog.text and "unknown template 'exam_room_change'" in caplog.text
    assert worker.watcher.ruleset is before and "exam_room_change" not in worker.catalog


def test_a_template_without_a_part_for_a_fallback_channel_is_refused(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    (worker.templates / "exam_room_change.yaml").write_text(EXAM_CHANGE)  # email only
    # The fallback step names no template: it renders the rule's, on the inbox.
    worker.rules.write_text(
        "ruleset: t\nrules:\n  - id: notices\n    when: {type: [campus.notice]}\n    then:\n"
        "      channels: [email]\n      template: exam_room_change\n"
        "      fallback: [{after: 1h, if_not: read, first_of: [inbox]}]\n"
    )
    with caplog.at_level(logging.ERROR, logger="rules.watch"):
        assert worker.poll() is None
    assert "template 'exam_room_change' has no inbox part" in caplog.text
    assert "exam_room_change" not in worker.catalog  # neither the rules nor the templates were taken


def test_a_template_change_that_breaks_the_running_rules_is_refused(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    (worker.templates / "exam_room_change.yaml").write_text(EXAM_CHANGE)
    worker.rules.write_text(WITH_TEMPLATE % "exam_room_change")
    assert worker.poll() is not None
    (worker.templates / "exam_room_change.yaml").write_text(INBOX_ONLY)
    with caplog.at_level(logging.ERROR, logger="rules.watch"):
        assert worker.poll() is None
    assert "has no email part" in caplog.text
    assert worker.catalog.render("exam_room_change", "email", DATA, None).subject.startswith("Exam room")


def test_templates_alone_reload_when_the_rules_accept_them_and_a_broken_template_is_refused(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    (worker.templates / "exam_room_change.yaml").write_text(EXAM_CHANGE)
    assert worker.poll() is None  # the rules did not change: nothing for the engine
    assert "exam_room_change" in worker.catalog
    (worker.templates / "exam_room_change.yaml").write_text(EXAM_CHANGE.replace("{{ room }}", "{{ rooom }}"))
    with caplog.at_level(logging.ERROR, logger="rules.watch"):
        assert worker.poll() is None
    assert "exam_room_change.yaml" in caplog.text and "rooom" in caplog.text
    with pytest.raises(TemplateError, match="needs variable"):
        worker.catalog.render("exam_room_change", "email", {"course": "CS101"}, None)
    assert worker.catalog.render("exam_room_change", "email", DATA, None).text.endswith("East 204.")


async def test_the_api_follows_the_templates_the_worker_takes(worker: Worker) -> None:
    """The API's catalog (api/server.py) moves with the same watcher: an event naming the new template
    is checked against it instead of being refused as unknown."""
    import asyncio

    from api.server import follow_templates

    following = asyncio.create_task(follow_templates(worker.watcher, every=0.05))
    try:
        assert "exam_room_change" not in worker.catalog
        (worker.templates / "exam_room_change.yaml").write_text(EXAM_CHANGE)
        worker.rules.write_text(WITH_TEMPLATE % "exam_room_change")
        for _ in range(100):
            if "exam_room_change" in worker.catalog:
                break
            await asyncio.sleep(0.05)
        assert worker.catalog.check_data("exam_room_change", {"course": "CS101"}) == [
            "template 'exam_room_change' needs variable(s) room"
        ]
    finally:
        following.cancel()

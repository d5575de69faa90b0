"""The demo's sample university and its traffic: realistic mix, deterministic, importable."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from demo.events import COURSE_REMINDERS, DEMO_APPS, VERIFICATION_CODES, demo_events
from demo.organisation import generate_university, write_csv
from records.topics import Event
from state.users import User
from state.users_import import import_users

NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def university() -> list[User]:
    return generate_university()


def share(users: list[User], test: Callable[[User], bool]) -> float:
    return sum(1 for u in users if test(u)) / len(users)


def test_size_and_unique_ids(university: list[User]) -> None:
    assert len(university) == 5000
    assert len({u.user_id for u in university}) == 5000


def test_same_seed_same_people_other_seed_other_people(university: list[User]) -> None:
    assert generate_university() == university
    assert generate_university(seed=7)[:50] != university[:50]


def test_students_and_staff_mix(university: list[User]) -> None:
    tags = Counter(t for u in university for t in u.tags)
    assert 4500 <= tags["student"] <= 4700
    assert 350 <= tags["staff"] <= 450
    assert tags["student"] + tags["staff"] == 5000
    assert tags["undergraduate"] + tags["postgraduate"] == tags["student"]
    assert tags["undergraduate"] > 2 * tags["postgraduate"]
    assert 150 <= tags["international"] <= 400
    assert {"dept-cs", "dept-math", "dorm-east", "year-2026"} <= set(tags)


def test_timezones_mostly_shanghai_international_elsewhere(university: list[User]) -> None:
    assert share(university, lambda u: u.timezone == "Asia/Shanghai") > 0.9
    abroad = [u for u in university if u.timezone != "Asia/Shanghai"]
    assert abroad and all("international" in u.tags for u in abroad)
    assert len({u.timezone for u in abroad}) >= 4


@pytest.mark.parametrize(
    ("channel", "low", "high"),
    [("inbox", 0.97, 1.0), ("email", 0.82, 0.88), ("sms", 0.87, 0.93), ("push", 0.56, 0.64),
     ("wechat_oa", 0.51, 0.59)],
)
def test_binding_shares(university: list[User], channel: str, low: float, high: float) -> None:
    assert low <= share(university, lambda u: channel in u.bindings) <= high


def test_bindings_are_well_formed(university: list[User]) -> None:
    assert all(u.bindings.get("inbox", u.user_id) == u.user_id for u in university)
    assert all("webhook" not in u.bindings for u in university)
    phones = [u.bindings["sms"] for u in university if "sms" in u.bindings]
    assert all(p.startswith("+") and p[1:].isdigit() for p in phones)
    assert share(university, lambda u: u.bindings.get("sms", "").startswith("+86")) > 0.8


def test_preferences_spread_and_only_on_bound_channels(university: list[User]) -> None:
    prefs = Counter(u.channel_pref for u in university)
    assert {"inbox", "email", "push", "wechat_oa", "sms", None} <= set(prefs)
    assert max(prefs.values()) < 0.5 * len(university)
    assert all(u.channel_pref is None or u.channel_pref in u.bindings for u in university)


def test_names_are_chinese_and_english(university: list[User]) -> None:
    assert share(university, lambda u: "\u4e00" <= u.name[0] <= "\u9fff") > 0.85
    assert any(" " in u.name and u.name.isascii() for u in university)


class RecordingDirectory:
    def __init__(self) -> None:
        self.users: list[User] = []

    async def upsert(self, users: Sequence[User]) -> None:
        self.users.extend(users)


async def test_csv_round_trips_through_the_real_importer(university: list[User], tmp_path: Path) -> None:
    path = tmp_path / "university.csv"
    write_csv(university, path)
    directory = RecordingDirectory()
    report = await import_users(path, directory)
    assert (report.imported, report.rejected, report.errors) == (5000, 0, [])
    assert directory.users == university


def test_write_csv_refuses_what_the_columns_cannot_hold(tmp_path: Path) -> None:
    # The CSV's inbox column is yes/no: an inbox bound to another user's id cannot be written.
    odd = User(user_id="r1", bindings={"inbox": "someone-else"})
    with pytest.raises(ValueError, match="r1: binding inbox"):
        write_csv([odd], tmp_path / "x.csv")


def test_demo_events_mix(university: list[User]) -> None:
    events = demo_events(university, NOW)
    parsed = {e.description: e for e in events}
    assert sum(e.description == "login verification code" for e in events) == VERIFICATION_CODES
    assert len(events) == COURSE_REMINDERS + VERIFICATION_CODES + 8
    assert {e.via for e in events} == {"http", "kafka"}
    assert Counter(e.outcome for e in events)["dead_letter"] == 2
    assert all(e.app in DEMO_APPS for e in events)
    valid = {}
    for event in events:
        if event.description == "login verification code":
            continue
        if event.description == "malformed event (not JSON)":
            with pytest.raises(ValidationError):
                Event.model_validate_json(event.body)
            continue
        model = Event.model_validate_json(event.body)
        assert event.key == f"{model.app}:{model.event_id}" and event.app == model.app
        valid[event.description] = model
    assert len({m.event_id for m in valid.values()}) == len(valid)
    fee = valid["fee due to every undergraduate"]
    assert (fee.app, fee.type, fee.template, fee.category, fee.priority) == (
        "bursar", "fee.due", "fee_due", "transactional", "high")
    assert fee.audience.tags == ["undergraduate"] and set(fee.data) == {"amount", "due_date", "term"}
    alert = valid["security alert to all staff"]
    assert (alert.audience.tags, alert.category, alert.priority) == (["staff"], "alert", "urgent")
    assert valid["campus-wide notice to everyone"].audience.all
    raw = valid["notice to two external email addresses"].audience.addresses
    assert raw is not None and [a.channel for a in raw] == ["email", "email"]
    assert valid["event naming an unknown template"].template == "no_such_template"
    assert parsed["event naming an unknown template"].outcome == "dead_letter"
    wechat = valid["fee reminder to postgraduates on WeChat"]
    assert wechat.channels == ["wechat_oa"] and wechat.audience.tags == ["postgraduate"]
    incident = valid["IT incident to the on-call staff"]
    assert (incident.app, incident.type, incident.audience.tags) == ("itops", "it.incident", ["on-call"])
    assert any("on-call" in u.tags and u.bindings.get("robot") == "campus-ops" for u in university)


def test_course_reminders_go_to_single_students(university: list[User]) -> None:
    students = {u.user_id for u in university if "student" in u.tags}
    reminders = [
        Event.model_validate_json(e.body) for e in demo_events(university, NOW) if e.app == "lms"
    ]
    assert len(reminders) == COURSE_REMINDERS
    targets = [r.audience.user_ids for r in reminders]
    assert all(t is not None and len(t) == 1 and t[0] in students for t in targets)
    assert all(set(r.data) == {"course", "starts_at", "room"} for r in reminders)
    kinds = {(r.template, r.category, r.priority) for r in reminders}
    assert kinds == {("course_reminder", "notice", "normal")}


def test_demo_events_are_deterministic_and_need_an_aware_now(university: list[User]) -> None:
    assert demo_events(university, NOW) == demo_events(university, NOW)
    with pytest.raises(ValueError, match="timezone"):
        demo_events(university, datetime(2026, 11, 23))


def test_demo_apps_authorise_what_their_events_need(university: list[User]) -> None:
    for event in demo_events(university, NOW):
        if event.outcome == "dead_letter":
            continue
        model = Event.model_validate_json(event.body)
        assert set(model.channels or ()) <= DEMO_APPS[model.app], event.description
    assert json.dumps(sorted(DEMO_APPS)) == '["bursar", "campus", "itops", "lms", "portal", "security"]'

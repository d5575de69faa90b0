"""The demo's traffic: what a campus's business systems emit in a busy hour, good and bad.

Each `DemoEvent` carries its exact bytes and whether it goes through `POST /v1/events` or straight
onto the events topic, so the demo exercises both doors and the dead-letter path.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from records.topics import ChannelName
from state.users import User

Via = Literal["http", "kafka"]
Outcome = Literal["deliver", "dead_letter"]

DEMO_APPS: dict[str, frozenset[ChannelName]] = {
    "lms": frozenset({"inbox", "email", "push", "sms", "wechat_mp"}),
    "bursar": frozenset({"email", "inbox", "sms", "wechat_oa"}),
    "campus": frozenset({"inbox", "email", "push", "wechat_oa"}),
    "security": frozenset({"inbox", "email", "sms", "webhook"}),
    "portal": frozenset({"sms", "email"}),
    "itops": frozenset({"robot", "sms"}),
}
VERIFICATION_CODES = 40
CAMPUS_TZ = ZoneInfo("Asia/Shanghai")  # class times and due dates are campus time
COURSE_REMINDERS = 300
COURSES = (
    ("Data Structures", "dept-cs"), ("Linear Algebra", "dept-math"), ("Quantum Mechanics", "dept-physics"),
    ("Organic Chemistry", "dept-chem"), ("Cell Biology", "dept-bio"), ("Microeconomics", "dept-econ"),
    ("Contract Law", "dept-law"), ("Human Anatomy", "dept-med"), ("Classical Chinese Poetry", "dept-lit"),
    ("Signals and Systems", "dept-ee"),
)
BUILDINGS = ("Teaching Building A", "Teaching Building B", "Science Hall", "Library Annex")


@dataclass(frozen=True)
class DemoEvent:
    """One event as a business system sends it: its door, its Kafka key, its bytes."""

    description: str
    app: str
    via: Via
    key: str
    body: bytes
    outcome: Outcome = "deliver"


def demo_events(users: list[User], now: datetime, seed: int = 2026) -> list[DemoEvent]:
    """The same events for the same people, time and seed; `now` must carry a timezone."""
    if now.tzinfo is None:
        raise ValueError("now must carry a timezone, e.g. datetime.now(UTC)")
    rng = random.Random(seed)
    stamp = now.strftime("%Y%m%d%H%M%S")
    students = [u for u in users if "student" in u.tags]
    events = [
        _course_reminder(rng, student, now, f"{stamp}-{n:03d}", via="http" if n % 2 else "kafka")
        for n, student in enumerate(rng.sample(students, min(COURSE_REMINDERS, len(students))))
    ]
    term = f"{now.year}-{now.year + 1} autumn"
    events += [
        _event("fee due to every undergraduate", "http", {
            "event_id": f"fee-due-{stamp}", "app": "bursar", "type": "fee.due", "template": "fee_due",
            "audience": {"tags": ["undergraduate"]}, "category": "transactional", "priority": "high",
            "data": {
                "amount": "¥5,500.00", "term": term,
                "due_date": (now + timedelta(days=14)).astimezone(CAMPUS_TZ).date().isoformat(),
            },
        }),
        _event("campus-wide notice to everyone", "kafka", {
            "event_id": f"campus-notice-{stamp}", "app": "campus", "type": "campus.notice",
            "template": "campus_notice", "audience": {"all": True}, "category": "notice",
            "data": {
                "headline": "Library opening hours extended for the exam period",
                "body": "From Monday the main library is open 07:00-24:00. 图书馆考试周延长开放至24点。",
            },
        }),
        _event("security alert to all staff", "http", {
            "event_id": f"security-alert-{stamp}", "app": "security", "type": "security.alert",
            "template": "security_alert", "audience": {"tags": ["staff"]}, "category": "alert",
            "priority": "urgent",
            "data": {
                "headline": "Phishing emails impersonating the IT Service Desk",
                "action": "Do not open links in emails asking for your password; report them to itsec.",
            },
        }),
        _event("notice to two external email addresses", "http", {
            "event_id": f"visitor-notice-{stamp}", "app": "campus", "type": "campus.notice",
            "template": "campus_notice", "category": "notice",
            "audience": {"addresses": [
                {"channel": "email", "address": "visiting.scholar@partner.example.org"},
                {"channel": "email", "address": "admissions.office@alumni.example.net"},
            ]},
            "data": {
                "headline": "Your campus visitor pass is ready",
                "body": "Collect it at the East Gate reception with your passport.",
            },
        }),
        _event("fee reminder to postgraduates on WeChat", "http", {
            "event_id": f"fee-reminder-{stamp}", "app": "bursar", "type": "fee.reminder",
            "template": "fee_due",
            "audience": {"tags": ["postgraduate"]}, "category": "transactional", "channels": ["wechat_oa"],
            "data": {
                "amount": "¥3,200.00", "term": term,
                "due_date": (now + timedelta(days=7)).astimezone(CAMPUS_TZ).date().isoformat(),
            },
        }),
        _event("IT incident to the on-call staff", "kafka", {
            "event_id": f"it-incident-{stamp}", "app": "itops", "type": "it.incident",
            "template": "security_alert", "audience": {"tags": ["on-call"]}, "category": "alert",
            "priority": "urgent",
            "data": {
                "headline": "Campus Wi-Fi authentication servers down in the East district",
                "action": "Join the incident bridge; the runbook is NET-07.",
            },
        }),
        *(
            _event("login verification code", "http", {
                "event_id": f"login-code-{stamp}-{n:02d}", "app": "portal", "type": "login.code",
                "template": "verification_code", "audience": {"user_ids": [user.user_id]},
                "category": "verification", "priority": "urgent",
                "data": {"code": f"{rng.randrange(10**6):06d}", "minutes": 5},
            })
            for n, user in enumerate(rng.sample(users, min(VERIFICATION_CODES, len(users))))
        ),
        DemoEvent(
            description="malformed event (not JSON)", app="campus", via="kafka", key=f"campus:broken-{stamp}",
            body=b'{"event_id": "broken-' + stamp.encode() + b'", "app": "campus", "audience": {"all": tru',
            outcome="dead_letter",
        ),
        _event("event naming an unknown template", "kafka", {
            "event_id": f"unknown-template-{stamp}", "app": "campus", "type": "campus.notice",
            "template": "no_such_template", "audience": {"all": True}, "category": "notice",
            "data": {"headline": "never sent", "body": "the template does not exist"},
        }, outcome="dead_letter"),
    ]
    return events


def _course_reminder(rng: random.Random, student: User, now: datetime, suffix: str, via: Via) -> DemoEvent:
    own = [course for course, dept in COURSES if dept in student.tags]
    course = own[0] if own and rng.random() < 0.7 else rng.choice(COURSES)[0]
    starts_at = (now + timedelta(hours=rng.randint(1, 20))).astimezone(CAMPUS_TZ)
    return _event(f"course reminder for {student.user_id}", via, {
        "event_id": f"course-reminder-{suffix}", "app": "lms", "type": "course.reminder",
        "template": "course_reminder", "audience": {"user_ids": [student.user_id]},
        "category": "notice", "priority": "normal",
        "data": {
            "course": course, "starts_at": f"{starts_at:%Y-%m-%d %H}:{rng.choice(('00', '30'))}",
            "room": f"{rng.choice(BUILDINGS)} {rng.randint(1, 5)}{rng.randint(1, 30):02d}",
        },
    })


def _event(description: str, via: Via, body: dict[str, Any], outcome: Outcome = "deliver") -> DemoEvent:
    return DemoEvent(
        description=description, app=body["app"], via=via, key=f"{body['app']}:{body['event_id']}",
        body=json.dumps(body, ensure_ascii=False).encode(), outcome=outcome,
    )

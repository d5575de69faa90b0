"""Rule files the size of a real organisation, generated for tests and bench/rules_scale.py.

A university with a rule per department (`type: [deptN.notice, deptN.update]`), between a few general
rules, and a shop whose rules list several values of the same fields (apps, categories, tags).
"""

from __future__ import annotations

import random
from pathlib import Path

from records.topics import EventCore
from state.users import User

HEAD = """\
ruleset: {name}
rules:
  - id: security-alerts
    when: {{category: [alert]}}
    then: {{channels: [inbox, email], quiet_hours: false}}
  - id: verification-codes
    when: {{category: [verification]}}
    then: {{first_of: [sms, email]}}
"""
TAIL = """\
  - id: staff-notices
    when: {category: [notice], tags_any: [staff]}
    then: {channels: [email]}
  - id: catch-all
    then: {first_of: [inbox, email]}
"""
CHOICES = ("[inbox, email]", "[email]", "[push, inbox]", "[preferred, inbox]", "[sms, email]")


def department_rules(departments: int) -> str:
    """`departments` rules `type: [deptN.notice, deptN.update]`, some narrowed by app, tag or activity."""
    lines = [HEAD.format(name=f"departments-{departments}")]
    for n in range(departments):
        when = f"type: [dept{n}.notice, dept{n}.update]"
        if n % 7 == 3:
            when += f", tags_any: [dept{n}-staff, staff]"
        if n % 11 == 5:
            when += ", active_within: 7d"
        lines.append(
            f"  - id: dept-{n}\n    when: {{{when}}}\n    then: {{first_of: {CHOICES[n % len(CHOICES)]}}}\n"
        )
    lines.append(TAIL)
    return "".join(lines)


def listing_rules(rules: int) -> str:
    """`rules` rules that each list several values of the same fields: app, category, tags."""
    lines = [HEAD.format(name=f"listing-{rules}")]
    for n in range(rules):
        apps = f"[shop{n}, shop{n + 1}, outlet{n % 13}]"
        categories = ("[notice, marketing]", "[transactional, notice]", "[marketing]")[n % 3]
        lines.append(
            f"  - id: line-{n}\n    when: {{app: {apps}, category: {categories}, "
            f"tags_any: [line{n}, line{n % 5}-fans]}}\n"
            f"    then: {{channels: {CHOICES[n % len(CHOICES)].replace('preferred, ', '')}}}\n"
        )
    lines.append(TAIL)
    return "".join(lines)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def sample_events(departments: int, count: int, seed: int = 11) -> list[EventCore]:
    """Events of the departments' types, other types, alerts and codes, from shops and outlets."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        n = rng.randrange(departments + 3)
        type_ = rng.choice([f"dept{n}.notice", f"dept{n}.update", f"dept{n}.other", "campus.notice"])
        app = rng.choice([f"shop{n}", f"outlet{n % 13}", "lms", f"shop{n + 1}"])
        category = rng.choice(["notice", "notice", "marketing", "transactional", "alert", "verification"])
        events.append(
            EventCore.model_validate(
                {"event_id": f"e{i}", "app": app, "type": type_, "template": "t", "category": category}
            )
        )
    return events


def sample_users(departments: int, count: int, seed: int = 13) -> list[User]:
    """Users with a spread of addresses and tags, some on department and product-line lists."""
    rng = random.Random(seed)
    users = []
    for i in range(count):
        n = rng.randrange(departments + 3)
        pool = ["staff", f"dept{n}-staff", f"line{n}", f"line{n % 5}-fans", "student"]
        tags = tuple(t for t in pool if rng.random() < 0.3)
        channels = [c for c in ("email", "inbox", "sms", "push") if rng.random() < 0.7]
        users.append(
            User(
                user_id=f"u{i}",
                channel_pref=rng.choice([None, "email", "inbox"]),
                tags=tags,
                bindings={c: f"{c}-{i}" for c in channels},
            )
        )
    return users

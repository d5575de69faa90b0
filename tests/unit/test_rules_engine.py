"""Decisions through durable-rules, in process: the default rules and a few focused rule files."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from records.topics import EventCore
from rules.engine import AsyncRuleEngine, DecisionRequest, RuleEngine
from rules.loader import load_ruleset
from rules.schema import Ruleset
from state.users import User

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
DEMO_PROVIDERS = frozenset({"email", "inbox", "webhook"})
EVERY_CHANNEL = frozenset({"sms", "email", "push", "wechat_oa", "wechat_mp", "inbox", "webhook", "robot"})

STUDENT = User(
    user_id="s1",
    channel_pref="sms",
    tags=("student",),
    bindings={"sms": "+8613800000001", "email": "s1@uni.edu", "inbox": "s1"},
)
EMAIL_FAN = User(user_id="s2", channel_pref="email", bindings={"email": "s2@uni.edu", "inbox": "s2"})
OPTED_OUT = User(user_id="s3", tags=("no-marketing",), bindings={"email": "s3@uni.edu", "inbox": "s3"})
EMAIL_ONLY = User(user_id="s4", bindings={"email": "s4@uni.edu"})


def event(app: str, type_: str, category: str, **extra: Any) -> EventCore:
    return EventCore.model_validate(
        {"event_id": "e1", "app": app, "type": type_, "template": "t", "category": category, **extra}
    )


def request(
    ev: EventCore,
    user: User,
    allowed: frozenset[str] = EVERY_CHANNEL,
    available: frozenset[str] = DEMO_PROVIDERS,
    last_active_at: datetime | None = None,
) -> DecisionRequest:
    return DecisionRequest(ev, user, allowed, available, now=NOW, last_active_at=last_active_at)


def write_rules(tmp_path: Path, body: str, name: str = "rules.yaml") -> Ruleset:
    path = tmp_path / name
    path.write_text(body)
    return load_ruleset(path)


@pytest.fixture(scope="module")
def default_engine() -> RuleEngine:
    return RuleEngine(load_ruleset(ROOT / "rules" / "default.yaml"))


ALERT = event("security", "security.incident", "alert", priority="urgent")
REMINDER = event("lms", "course.reminder", "notice")
FEE = event("bursar", "fee.due", "transactional", priority="high")
CAMPUS = event("campus", "campus.notice", "notice")
CODE = event("portal", "login.code", "verification")
PROMO = event("campus", "bookshop.sale", "marketing", priority="low")

ACTIVE_YESTERDAY = NOW - timedelta(days=1)
ALERT_REASON = "fallback step 1 dropped: sms: no provider configured; wechat_oa: user has no address"

CASES: list[tuple[str, DecisionRequest, tuple[tuple[str, str], ...], str, tuple[str, ...]]] = [
    (
        "alert goes to inbox and email, urgent bypasses",
        request(ALERT, STUDENT),
        (("inbox", "s1"), ("email", "s1@uni.edu")),
        "security-alerts",
        ("rule security-alerts matched", "bypasses caps, pacing, quiet_hours", ALERT_REASON),
    ),
    (
        "preferred sms has no provider: next of first_of",
        request(REMINDER, STUDENT),
        (("inbox", "s1"),),
        "course-reminders",
        ("rule course-reminders matched", "sms: no provider configured"),
    ),
    (
        "preferred email is used",
        request(REMINDER, EMAIL_FAN),
        (("email", "s2@uni.edu"),),
        "course-reminders",
        ("rule course-reminders matched",),
    ),
    (
        "recently active student: push has no provider, then preferred",
        request(REMINDER, EMAIL_FAN, last_active_at=ACTIVE_YESTERDAY),
        (("email", "s2@uni.edu"),),
        "course-reminders-active",
        ("rule course-reminders-active matched", "push: user has no address"),
    ),
    (
        "fee notice: inbox now, email fallback",
        request(FEE, STUDENT),
        (("inbox", "s1"),),
        "fee-notices",
        (
            "rule fee-notices matched",
            "fallback step 2 dropped: sms: no provider configured; wechat_oa: user has no address",
        ),
    ),
    (
        "other transactional: email and inbox",
        request(event("bursar", "payment.received", "transactional"), STUDENT),
        (("email", "s1@uni.edu"), ("inbox", "s1")),
        "fees-and-payments",
        ("rule fees-and-payments matched",),
    ),
    (
        "verification falls back from sms to email",
        request(CODE, STUDENT),
        (("email", "s1@uni.edu"),),
        "verification-codes",
        ("rule verification-codes matched", "sms: no provider configured", "bypasses pacing, quiet_hours"),
    ),
    (
        "event override replaces the rule's channels",
        request(event("campus", "campus.notice", "notice", channels=["email", "sms"]), STUDENT),
        (("email", "s1@uni.edu"),),
        "campus-notices",
        (
            "rule campus-notices matched",
            "event overrides channels: email, sms",
            "sms: no provider configured",
        ),
    ),
    (
        "app not allowed to use email",
        request(ALERT, STUDENT, allowed=frozenset({"inbox"})),
        (("inbox", "s1"),),
        "security-alerts",
        (
            "rule security-alerts matched",
            "email: app security is not allowed to use it",
            "bypasses caps, pacing, quiet_hours",
            "fallback step 1 dropped: sms: app security is not allowed to use it; "
            "wechat_oa: user has no address",
        ),
    ),
    (
        "campus notice to someone without an inbox goes by email",
        request(CAMPUS, EMAIL_ONLY),
        (("email", "s4@uni.edu"),),
        "campus-notices",
        ("rule campus-notices matched", "inbox: user has no address"),
    ),
    (
        "user without an address on the only channel",
        request(event("campus", "canteen.special", "marketing"), EMAIL_ONLY),
        (),
        "canteen-specials",
        ("rule canteen-specials matched", "inbox: user has no address", "no channel left to send on"),
    ),
    (
        "tag suppresses marketing, even with an override",
        request(event("campus", "bookshop.sale", "marketing", channels=["email"]), OPTED_OUT),
        (),
        "marketing-opt-out",
        ("rule marketing-opt-out matched", "suppressed: user opted out of marketing"),
    ),
    (
        "marketing without the tag",
        request(PROMO, STUDENT),
        (("inbox", "s1"),),
        "marketing",
        ("rule marketing matched",),
    ),
    (
        "a notice to someone inactive for a month",
        request(event("hr", "pay.slip", "notice"), EMAIL_FAN),
        (("email", "s2@uni.edu"),),
        "dormant-notices",
        ("rule dormant-notices matched", "sms: user has no address"),
    ),
    (
        "catch-all",
        request(event("hr", "pay.slip", "notice"), EMAIL_FAN, last_active_at=ACTIVE_YESTERDAY),
        (("email", "s2@uni.edu"),),
        "catch-all",
        ("rule catch-all matched",),
    ),
]


@pytest.mark.parametrize(("case", "req", "channels", "rule_id", "reasons"), CASES, ids=[c[0] for c in CASES])
def test_default_rules_decide(
    default_engine: RuleEngine,
    case: str,
    req: DecisionRequest,
    channels: tuple[tuple[str, str], ...],
    rule_id: str,
    reasons: tuple[str, ...],
) -> None:
    (decision,) = default_engine.decide([req])
    assert (decision.channels, decision.rule_id, decision.suppressed, decision.reasons) == (
        channels,
        rule_id,
        not channels,
        reasons,
    )
    assert decision.rule_version == default_engine.ruleset.version


def test_a_batch_keeps_request_order_and_duplicates(default_engine: RuleEngine) -> None:
    batch = [request(ev, user) for ev, user in [(ALERT, STUDENT), (CAMPUS, EMAIL_FAN), (ALERT, STUDENT)]]
    decisions = default_engine.decide(batch)
    assert [d.rule_id for d in decisions] == ["security-alerts", "campus-notices", "security-alerts"]
    assert default_engine.decide([]) == []


def test_no_rule_matched(tmp_path: Path) -> None:
    engine = RuleEngine(
        write_rules(tmp_path, "ruleset: t\nrules:\n  - id: alerts\n    when: {category: [alert]}\n"
                    "    then: {channels: [inbox]}\n")
    )
    (decision,) = engine.decide([request(CAMPUS, STUDENT)])
    assert (decision.rule_id, decision.suppressed, decision.reasons) == ("", True, ("no rule matched",))


def test_first_rule_in_file_order_wins(tmp_path: Path) -> None:
    urgent = "  - id: urgent\n    when: {priority: [urgent]}\n    then: {channels: [email]}\n"
    alerts = "  - id: alerts\n    when: {category: [alert]}\n    then: {channels: [inbox]}\n"
    engine = RuleEngine(write_rules(tmp_path, "ruleset: t\nrules:\n" + urgent + alerts))
    normal_alert = event("security", "x", "alert")
    assert [d.rule_id for d in engine.decide([request(ALERT, STUDENT), request(normal_alert, STUDENT)])] == [
        "urgent",
        "alerts",
    ]
    engine.reload(write_rules(tmp_path, "ruleset: t\nrules:\n" + alerts + urgent))
    assert [d.rule_id for d in engine.decide([request(ALERT, STUDENT)])] == ["alerts"]


def test_bound_and_preferred_conditions(tmp_path: Path) -> None:
    engine = RuleEngine(
        write_rules(
            tmp_path,
            "ruleset: t\nrules:\n"
            "  - id: both\n    when: {bound: [sms, email]}\n    then: {channels: [sms, email]}\n"
            "  - id: likes-email\n    when: {channel_pref: [email]}\n    then: {first_of: [preferred]}\n"
            "  - id: rest\n    then: {suppress: none}\n",
        )
    )
    decisions = engine.decide(
        [request(REMINDER, u, available=EVERY_CHANNEL) for u in (STUDENT, EMAIL_FAN, EMAIL_ONLY)]
    )
    assert [(d.rule_id, d.channels) for d in decisions] == [
        ("both", (("sms", "+8613800000001"), ("email", "s1@uni.edu"))),
        ("likes-email", (("email", "s2@uni.edu"),)),
        ("rest", ()),
    ]


def test_five_thousand_distinct_users_decide_in_one_session_twice_over(default_engine: RuleEngine) -> None:
    users = [User(user_id=f"u{i}", bindings={"email": f"u{i}@x.edu", "inbox": f"u{i}"}) for i in range(5000)]
    batch = [request(ALERT if i % 2 else CAMPUS, u) for i, u in enumerate(users)]
    for _ in range(2):
        decisions = default_engine.decide(batch)
        assert len(decisions) == 5000
        assert decisions[4999].channels == (("inbox", "u4999"), ("email", "u4999@x.edu"))
        assert decisions[4998].channels == (("inbox", "u4998"),)
        assert {d.rule_id for d in decisions} == {"security-alerts", "campus-notices"}
        assert decisions[4998].plan.pacing is not None and decisions[4999].plan.pacing is None


def test_reload_switches_version_and_back(tmp_path: Path) -> None:
    rule = "ruleset: t\nrules:\n  - id: {}\n    then: {{channels: [{}]}}\n"
    first = write_rules(tmp_path, rule.format("one", "inbox"), "a.yaml")
    second = write_rules(tmp_path, rule.format("two", "email"), "b.yaml")
    engine = RuleEngine(first)
    assert engine.decide([request(CAMPUS, STUDENT)])[0].rule_id == "one"
    engine.reload(second)
    (decision,) = engine.decide([request(CAMPUS, STUDENT)])
    assert (decision.rule_id, decision.rule_version) == ("two", second.version)
    engine.reload(first)  # already registered in the Host under its versioned name
    assert engine.decide([request(CAMPUS, STUDENT)])[0].rule_id == "one"


@pytest.fixture
def async_engine(tmp_path: Path) -> Iterator[AsyncRuleEngine]:
    engine = AsyncRuleEngine(load_ruleset(ROOT / "rules" / "default.yaml"))
    yield engine
    engine.close()


async def test_async_engine_decides_and_reloads(async_engine: AsyncRuleEngine, tmp_path: Path) -> None:
    (decision,) = await async_engine.decide([request(ALERT, STUDENT)])
    assert decision.rule_id == "security-alerts"
    quiet = write_rules(tmp_path, "ruleset: t\nrules:\n  - id: quiet\n    then: {suppress: exams week}\n")
    await async_engine.reload(quiet)
    (decision,) = await async_engine.decide([request(ALERT, STUDENT)])
    assert (decision.rule_id, decision.suppressed, decision.rule_version) == ("quiet", True, quiet.version)
    assert async_engine.ruleset is quiet

"""Each capability of the language, decided through durable-rules, lands in Decision.plan as written."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from records.plan import CapLimit, FallbackStep, FrequencyCap, Pacing, QuietHours
from records.topics import CHANNELS, EventCore
from rules.apply import pick_variant
from rules.engine import DecisionRequest, RuleEngine
from rules.facts import facts_of, holds
from rules.loader import load_ruleset
from state.users import User

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EVERY = frozenset(CHANNELS)
FULL = User(
    user_id="s1",
    channel_pref="email",
    tags=("student",),
    bindings={"sms": "+861", "email": "s1@uni.example", "inbox": "s1", "push": "tok", "wechat_oa": "oa1"},
)

RULES = """\
ruleset: t
urgent_bypass: [quiet_hours, caps]
quiet_hours:
  - {id: night, start: "22:00", end: "07:00", match: {category: [notice, marketing]}}
  - {id: late-drop, start: "21:00", end: "08:00", action: drop}
caps:
  - id: marketing
    match: {category: [marketing]}
    limits: ["3/1d", "1/1h"]
    exempt: {tags_any: [testers], users: [vip], whitelist: true}
  - id: hourly
    scope: [user, channel]
    limits: [{count: 20, per: 1h}]
    on_exceed: delay
    exempt: {category: [verification]}
rules:
  - id: codes
    when: {category: [verification]}
    then: {first_of: [sms, email], bypass: [pacing]}
  - id: active
    when: {type: [reminder], active_within: 7d}
    then: {first_of: [push, inbox], keep_offline: 3d}
  - id: dormant
    when: {type: [reminder], inactive_for: 7d}
    then: {first_of: [sms, email]}
  - id: fees
    when: {type: [fee.due]}
    then:
      channels: [inbox]
      fallback:
        - {after: 5m, if_not: delivered, first_of: [wechat_oa, sms]}
        - {after: 30m, if_not: clicked, first_of: [preferred], template: fee_short}
        - {after: 1h, if: failed, first_of: [inbox, robot]}
  - id: split
    when: {campaign: [spring]}
    then:
      template: spring_a
      variants:
        - {name: a, weight: 3}
        - {name: b, weight: 1, first_of: [email], template: spring_b}
      channels: [inbox]
      pace: {per_second: 50}
      best_time: {within: 12h}
  - id: canteen
    when: {type: [canteen]}
    then: {channels: [inbox], quiet_hours: late-drop, pace: {per_second: 5, key: rule}}
  - id: marketing
    when: {category: [marketing]}
    then: {channels: [inbox], pace: {per_second: 100, key: app}}
  - id: rest
    then: {channels: [inbox], quiet_hours: false}
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> RuleEngine:
    path = tmp_path_factory.mktemp("plan") / "rules.yaml"
    path.write_text(RULES)
    return RuleEngine(load_ruleset(path))


def event(type_: str = "x", category: str = "notice", **extra: Any) -> EventCore:
    return EventCore.model_validate(
        {"event_id": "e1", "app": "lms", "type": type_, "template": "t", "category": category, **extra}
    )


def decide(engine: RuleEngine, ev: EventCore, user: User = FULL, **extra: Any) -> Any:
    request = DecisionRequest(ev, user, EVERY, extra.pop("available", EVERY), now=NOW, **extra)
    (decision,) = engine.decide([request])
    return decision


def test_fallback_steps_with_conditions_channels_and_templates(engine: RuleEngine) -> None:
    decision = decide(engine, event("fee.due", "transactional"))
    assert decision.channels == (("inbox", "s1"),)
    assert decision.plan.fallback == (
        FallbackStep(
            step=1, after=timedelta(minutes=5), condition="not_delivered", channels=("wechat_oa", "sms")
        ),
        FallbackStep(step=2, after=timedelta(minutes=30), condition="not_clicked", channels=("email",),
                     template="fee_short"),
    )
    # Step 3 names inbox, already used by the first send, and robot, with no address: it is dropped.
    assert decision.reasons[-1] == (
        "fallback step 3 dropped: inbox: already sent on; robot: user has no address"
    )


def test_fallback_steps_keep_their_numbers_when_one_is_dropped(engine: RuleEngine) -> None:
    only_inbox = User(user_id="s2", bindings={"inbox": "s2", "robot": "hook"})
    decision = decide(engine, event("fee.due", "transactional"), only_inbox)
    assert [(s.step, s.channels) for s in decision.plan.fallback] == [(3, ("robot",))]


@pytest.mark.parametrize(
    ("last_active", "rule", "channels", "keep"),
    [
        (NOW - timedelta(days=2), "active", ("push",), timedelta(days=3)),
        (NOW - timedelta(days=7), "active", ("push",), timedelta(days=3)),  # exactly 7d is still active
        (NOW - timedelta(days=7, seconds=1), "dormant", ("sms",), None),
        (None, "dormant", ("sms",), None),  # never active counts as inactive
    ],
)
def test_recent_activity_picks_the_channel(
    engine: RuleEngine,
    last_active: datetime | None,
    rule: str,
    channels: tuple[str, ...],
    keep: timedelta | None,
) -> None:
    decision = decide(engine, event("reminder"), last_active_at=last_active)
    assert (decision.rule_id, tuple(c for c, _ in decision.channels), decision.plan.keep_offline) == (
        rule, channels, keep,
    )


def test_quiet_hours_from_a_matching_window(engine: RuleEngine) -> None:
    decision = decide(engine, event("promo", "marketing"))
    assert decision.plan.quiet_hours == QuietHours(start=time(22), end=time(7), action="defer")


def test_a_rule_names_or_disables_quiet_hours(engine: RuleEngine) -> None:
    canteen = decide(engine, event("canteen", "marketing"))
    assert canteen.plan.quiet_hours == QuietHours(start=time(21), end=time(8), action="drop")
    assert decide(engine, event("other", "notice")).plan.quiet_hours is None  # rule `rest` says false


def test_caps_that_match_and_are_not_exempt(engine: RuleEngine) -> None:
    decision = decide(engine, event("promo", "marketing"))
    assert decision.plan.caps == (
        FrequencyCap(
            id="marketing",
            scope=("user",),
            limits=(
                CapLimit(count=3, window=timedelta(days=1)), CapLimit(count=1, window=timedelta(hours=1))
            ),
            on_exceed="drop",
        ),
        FrequencyCap(
            id="hourly", scope=("user", "channel"), limits=(CapLimit(count=20, window=timedelta(hours=1)),),
            on_exceed="delay",
        ),
    )


@pytest.mark.parametrize(
    ("user", "ev", "caps"),
    [
        (FULL.model_copy(update={"tags": ("testers",)}), event("promo", "marketing"), ["hourly"]),
        (FULL.model_copy(update={"user_id": "vip"}), event("promo", "marketing"), ["hourly"]),
        (FULL, event("code", "verification"), []),
        (FULL, event("promo", "marketing", priority="urgent"), []),  # urgent_bypass: caps
    ],
)
def test_cap_exemptions_and_urgent_bypass(
    engine: RuleEngine, user: User, ev: EventCore, caps: list[str]
) -> None:
    assert [cap.id for cap in decide(engine, ev, user).plan.caps] == caps


def test_a_whitelisted_recipient_is_exempt_only_where_the_cap_says_so(engine: RuleEngine) -> None:
    # `marketing` exempts the whitelist, `hourly` does not.
    promo = event("promo", "marketing")
    assert [c.id for c in decide(engine, promo, whitelisted=True).plan.caps] == ["hourly"]
    assert [c.id for c in decide(engine, promo).plan.caps] == ["marketing", "hourly"]


def test_urgent_bypass_adds_to_the_rules_own_bypass(engine: RuleEngine) -> None:
    normal = decide(engine, event("code", "verification"))
    urgent = decide(engine, event("code", "verification", priority="urgent"))
    assert normal.plan.bypass == frozenset({"pacing"})
    assert urgent.plan.bypass == frozenset({"pacing", "quiet_hours", "caps"})
    assert "bypasses caps, pacing, quiet_hours" in urgent.reasons
    urgent_promo = decide(engine, event("promo", "marketing", priority="urgent"))
    plan = urgent_promo.plan
    assert (plan.quiet_hours, plan.pacing) == (None, Pacing(per_second=100, key="app:lms"))


@pytest.mark.parametrize(
    ("ev", "key"),
    [
        (event("promo", "marketing", campaign="spring"), "campaign:spring"),
        (event("promo", "marketing"), "app:lms"),
        (event("canteen", "marketing"), "rule:canteen"),
    ],
)
def test_pace_keys(engine: RuleEngine, ev: EventCore, key: str) -> None:
    pacing = decide(engine, ev).plan.pacing
    assert pacing is not None and pacing.key == key


def test_pace_by_campaign_without_one_falls_back_to_app_and_type(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("ruleset: t\nrules:\n  - id: all\n    then: {channels: [inbox], pace: {per_second: 9}}\n")
    pacing = decide(RuleEngine(load_ruleset(path)), event("promo", "marketing")).plan.pacing
    assert pacing == Pacing(per_second=9, key="type:lms:promo")


def test_variants_are_stable_and_apply_their_channels_and_template(engine: RuleEngine) -> None:
    seen: dict[str, tuple[str, Any, str | None]] = {}
    for n in range(200):
        user = FULL.model_copy(update={"user_id": f"u{n}"})
        decision = decide(engine, event("promo", "marketing", campaign="spring"), user)
        again = decide(engine, event("promo", "marketing", campaign="spring"), user)
        assert (again.plan.variant, again.channels) == (decision.plan.variant, decision.channels)
        seen[decision.plan.variant] = (decision.plan.variant, decision.channels[0][0], decision.template)
        assert decision.plan.best_time is not None and decision.plan.best_time.within == timedelta(hours=12)
    assert seen == {"a": ("a", "inbox", "spring_a"), "b": ("b", "email", "spring_b")}


def test_variant_split_follows_the_weights() -> None:
    from rules.schema import Variant

    arms = [Variant(name="a", weight=3), Variant(name="b", weight=1)]
    counts = Counter(pick_variant("split", f"user{n}", arms).name for n in range(20_000))
    assert 0.73 < counts["a"] / 20_000 < 0.77
    # Another rule splits the same users independently.
    other = [pick_variant("other", f"user{n}", arms).name for n in range(2000)]
    same = [pick_variant("split", f"user{n}", arms).name for n in range(2000)]
    assert other != same


def test_explicit_event_channels_still_get_the_plan(engine: RuleEngine) -> None:
    decision = decide(engine, event("fee.due", "transactional", channels=["email"]))
    assert decision.channels == (("email", "s1@uni.example"),)
    # Step 2 (preferred: email) would repeat the first send's channel, so it is dropped.
    assert [s.step for s in decision.plan.fallback] == [1, 3]


def test_nobody_reachable_still_carries_keep_offline(engine: RuleEngine) -> None:
    decision = decide(engine, event("reminder"), last_active_at=NOW, available=frozenset({"sms"}))
    assert (decision.suppressed, decision.plan.keep_offline) == (True, timedelta(days=3))
    assert decision.reasons[-1] == "no channel left to send on"


def test_durable_rules_and_python_conditions_agree(engine: RuleEngine) -> None:
    """The winner from durable-rules is the first rule whose `when` holds in Python (explain, caps)."""
    rng = random.Random(3)
    requests = []
    for n in range(600):
        bound = {c: f"{c}-{n}" for c in ("sms", "email", "inbox", "push") if rng.random() < 0.6}
        user = User(user_id=f"r{n}", tags=tuple(t for t in ("testers", "student") if rng.random() < 0.3),
                    bindings=bound)
        ev = event(
            rng.choice(["reminder", "fee.due", "canteen", "promo", "x"]),
            rng.choice(["notice", "marketing", "verification", "transactional"]),
            campaign=rng.choice(["", "spring", "autumn"]),
        )
        idle = rng.choice([None, timedelta(days=1), timedelta(days=7), timedelta(days=30)])
        requests.append(DecisionRequest(ev, user, EVERY, EVERY, now=NOW,
                                        last_active_at=None if idle is None else NOW - idle))
    decisions = engine.decide(requests)
    for request, decision in zip(requests, decisions, strict=True):
        facts = facts_of(request.event, request.user, request.now, request.last_active_at)
        first = next(r.id for r in engine.ruleset.rules if holds(r.when, facts))
        assert decision.rule_id == first

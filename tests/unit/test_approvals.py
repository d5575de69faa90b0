"""Approval policies, the decision rules and the approvers' notice, without services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from api.approval_service import ApprovalRefused, _check_may_decide, _with_verdict, holds_role, waits_for
from channels.templates import TemplateCatalog
from processors.approvals import describe_audience, expire, notice_for, outcome_reason
from processors.ingest import IngestResult
from processors.intake import accepted
from records.topics import Audience, Event, Receipt
from settings import ROOT
from settings.permissions import BUILT_IN_ROLES, Grant, Principal
from state.approval_policies import ApprovalPolicy, expiry_of, strictest
from state.approvals import ApprovalItem, approval_id_for

NOW = datetime.now(UTC)  # the decision rules read the real clock: items are held relative to it


def event(**fields: Any) -> Event:
    base: dict[str, Any] = {
        "event_id": "e1", "app": "shop", "type": "promo", "template": "campus_notice",
        "category": "marketing", "audience": {"tags": ["customers"]}, "data": {"headline": "h", "body": "b"},
    }
    return Event.model_validate({**base, **fields})


def policy(**fields: Any) -> ApprovalPolicy:
    return ApprovalPolicy.model_validate({"name": "p", "levels": ["approver"], **fields})


def operator(name: str, *grants: tuple[str, frozenset[str]]) -> Principal:
    return Principal(kind="operator", name=name,
                     grants=tuple(Grant(role, BUILT_IN_ROLES[role], apps) for role, apps in grants))


def item(**fields: Any) -> ApprovalItem:
    base: dict[str, Any] = {
        "approval_id": approval_id_for("message", "shop:e1"), "kind": "message", "subject": "shop:e1",
        "app": "shop", "policy": "p", "levels": ("approver", "administrator"),
        "submitted_by": "operator:sam", "created_at": NOW, "expires_at": NOW + timedelta(hours=72),
        "payload": event().model_dump(mode="json"),
    }
    return ApprovalItem.model_validate({**base, **fields})


SHOP = frozenset({"shop"})


def test_marketing_or_a_large_audience_is_one_policy() -> None:
    either = policy(categories=["marketing"], audience_over=1000)
    assert either.matches(event(), 3)
    assert either.matches(event(category="notice"), 1001)
    assert not either.matches(event(category="notice"), 1000)  # more than 1,000, not 1,000 itself
    both = policy(categories=["marketing"], audience_over=1000, match="all")
    assert not both.matches(event(), 3) and both.matches(event(), 5000)


def test_conditions_and_scope() -> None:
    assert policy(channels=["sms"]).matches(event(channels=["sms", "email"]), None)
    assert not policy(channels=["sms"]).matches(event(), None)  # no override: the rules choose later
    assert policy(campaign=True).matches(event(campaign="winter"), None)
    assert not policy(campaign=True).matches(event(), None)
    assert policy(apps=["shop"]).matches(event(category="notice"), None)  # apps alone: all of theirs
    assert not policy(apps=["lms"], categories=["marketing"]).matches(event(), None)
    assert not policy(categories=["marketing"], enabled=False).matches(event(), None)


def test_a_policy_over_templates_holds_their_versions_and_no_message() -> None:
    templates_only = policy(apps=["shop"], templates=True)
    assert templates_only.covers_templates("shop") and not templates_only.covers_templates("lms")
    assert not templates_only.matches(event(), None)  # apps and templates only: no message held
    both = policy(apps=["shop"], categories=["marketing"], templates=True)
    assert both.matches(event(), None) and both.covers_templates("shop")
    everywhere = ApprovalPolicy(name="all-templates", templates=True, levels=["approver"])
    assert everywhere.covers_templates("any-app") and not everywhere.matches(event(), None)
    assert not policy(apps=["shop"]).covers_templates("shop")


def test_the_strictest_policy_holds() -> None:
    one = policy(name="a", apps=["shop"])
    two = policy(name="b", apps=["shop"], levels=["approver", "administrator"])
    assert strictest([one, two]) is two and strictest([]) is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "needs apps or at least one condition"),
        ({"apps": ["shop"], "levels": []}, "levels"),
        ({"apps": ["shop"], "levels": ["approver"] * 6}, "levels"),
        ({"apps": ["shop"], "expires_after": "3 days"}, "'3 days' is not a duration"),
        ({"apps": ["shop"], "expires_after": "31d"}, "longer than the longest wait of 30d"),
        ({"apps": ["shop"], "levels": ["Approver!"]}, "levels.0"),
        ({"apps": ["shop"], "categories": ["promo"]}, "categories.0"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as raised:
        ApprovalPolicy.model_validate({"name": "p", "levels": ["approver"], **fields})
    assert problem in str(raised.value)


def test_expiry_durations() -> None:
    assert expiry_of("72h") == timedelta(hours=72) and expiry_of("45s") == timedelta(seconds=45)
    assert expiry_of("2d") == timedelta(days=2)


def test_a_role_counts_only_over_its_apps() -> None:
    ann = operator("ann", ("approver", SHOP))
    assert holds_role(ann, "approver", "shop") and not holds_role(ann, "approver", "lms")
    assert holds_role(operator("root", ("administrator", frozenset({"*"}))), "administrator", "lms")
    assert not holds_role(operator("root", ("administrator", frozenset({"*"}))), "approver", "shop")


def test_what_waits_for_whom() -> None:
    ann, sam = operator("ann", ("approver", SHOP)), operator("sam", ("approver", SHOP))
    assert waits_for(ann, item()) and not waits_for(sam, item())  # sam submitted it
    later = item(level=1, decisions=())
    assert not waits_for(ann, later)  # level 2 is the administrators'
    app_key = Principal(kind="app", name="shop", grants=(Grant("app", BUILT_IN_ROLES["approver"], SHOP),))
    assert not waits_for(app_key, item())


def test_approvers_are_distinct_from_the_submitter_and_each_other() -> None:
    ann = operator("ann", ("approver", SHOP), ("administrator", SHOP))
    with pytest.raises(ApprovalRefused) as own:
        _check_may_decide(operator("sam", ("approver", SHOP)), item())
    assert own.value.status == 409
    first = _with_verdict(item(), ann, "approve", "fine")
    assert (first.state, first.level, first.role) == ("pending", 1, "administrator")
    with pytest.raises(ApprovalRefused) as again:
        _check_may_decide(ann, first)
    assert again.value.status == 409 and "already decided level 1" in again.value.detail
    with pytest.raises(ApprovalRefused) as role:
        _check_may_decide(operator("cy", ("approver", SHOP)), first)
    assert role.value.status == 403 and "role 'administrator'" in role.value.detail
    done = _with_verdict(first, operator("bo", ("administrator", SHOP)), "approve", "")
    assert done.state == "approved" and done.role is None
    assert outcome_reason(done) == "approved under policy 'p' by ann (approver), bo (administrator)"
    with pytest.raises(ApprovalRefused) as decided:
        _check_may_decide(ann, done)
    assert "already approved" in decided.value.detail


def test_an_app_submitted_message_may_be_approved_by_any_operator() -> None:
    ann = operator("ann", ("approver", SHOP))
    _check_may_decide(ann, item(submitted_by="app:shop"))  # no refusal


def test_rejection_and_expiry_say_why() -> None:
    no = _with_verdict(item(), operator("ann", ("approver", SHOP)), "reject", "wrong week")
    assert no.reason == "rejected by ann at level 1 (approver): wrong week"
    late = expire(item())
    assert late.state == "expired"
    assert late.reason == "not approved within 3d under policy 'p': waited at level 1 of 2 (role approver)"
    assert item().expired_by(NOW + timedelta(hours=72)) and not item().expired_by(NOW)


def test_the_notice_renders_with_the_shipped_template() -> None:
    notice = notice_for(item(audience="tags customers", audience_size=3), "approver", ["op-ann"])
    assert notice.event_id == f"approval.{item().approval_id}.1" and notice.app == "switchboard"
    catalog = TemplateCatalog(ROOT / "templates")
    assert catalog.check_data(notice.template, notice.data) == []
    rendered = catalog.render(notice.template, "inbox", notice.data, None)
    assert "shop:e1" in rendered.title and "level 1 of 2" in rendered.title


def test_audiences_in_words() -> None:
    assert describe_audience(Audience(tags=["b", "a", "a"])) == "tags a, b"
    assert describe_audience(Audience(user_ids=["x", "x", "y"])) == "user_ids (2)"
    assert describe_audience(Audience(all=True)) == "everyone"


def test_a_held_event_is_logged_for_simulation_only_when_released() -> None:
    raw = event().model_dump_json().encode()
    held = IngestResult(receipts=[Receipt.of(event(), "", "pending_approval")], held=True)
    assert accepted([(raw, held, "events:0:1")]) == []
    assert len(accepted([(raw, IngestResult(), "events:0:2")])) == 1


def test_the_envelope_does_not_travel_with_deliveries() -> None:
    stamped = event(submitted_by="operator:sam", approval="ap_1")
    assert "submitted_by" not in stamped.core().model_dump() and "approval" not in stamped.core().model_dump()


def test_the_example_policy_file_is_a_valid_policy() -> None:
    example = yaml.safe_load((ROOT / "config" / "approvals.example.yaml").read_text())
    policy = ApprovalPolicy.model_validate(example)
    assert policy.matches(event(app="anything"), 3) and policy.levels == ["approver", "administrator"]

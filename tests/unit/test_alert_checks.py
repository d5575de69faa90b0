"""Alert rules judged on counts: when each kind fires, resolves, or cannot tell."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from processors.alert_checks import Finding, judge
from processors.alert_rules import (
    AlertFile,
    ConsumerLag,
    CredentialsRefused,
    DeadLetters,
    FailureRate,
)
from processors.watch import alert_event
from state.watch import Transition


def rate(**fields: object) -> FailureRate:
    return FailureRate.model_validate({"name": "failing", "kind": "failure_rate", "above": 0.5,
                                       "min_sends": 4, **fields})


def verdicts(findings: list[Finding]) -> dict[str, bool | None]:
    return {f.subject: f.firing for f in findings}


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"sends|sms": 10, "send_failed|sms": 6}, True),
        ({"sends|sms": 10, "send_failed|sms": 5}, False),  # at the threshold: not above it
        ({"sends|sms": 10}, False),
        ({"sends|sms": 3, "send_failed|sms": 3}, None),  # too few to judge: the incident stays
        ({}, None),
        ({"sends|email": 10, "send_failed|email": 10}, None),  # another channel's failures
    ],
)
def test_failure_rate_of_a_channel(counts: dict[str, int], expected: bool | None) -> None:
    assert verdicts(judge(rate(channel="sms"), counts, {})) == {"sms": expected}


def test_failure_rate_of_any_provider_is_one_incident_per_provider() -> None:
    counts = {
        "calls|sms|aliyun-main": 10, "failed|sms|aliyun-main": 9,
        "calls|sms|tencent-backup": 9, "failed|sms|tencent-backup": 1,
        "calls|robot|dingtalk": 2, "failed|robot|dingtalk": 2,
    }
    assert verdicts(judge(rate(provider="any"), counts, {})) == {
        "aliyun-main": True, "tencent-backup": False, "dingtalk": None,
    }
    assert verdicts(judge(rate(provider="tencent-backup"), counts, {})) == {"tencent-backup": False}


def test_a_failure_finding_says_how_many_of_how_many() -> None:
    [finding] = judge(rate(channel="sms", window="2m"), {"sends|sms": 8, "send_failed|sms": 6}, {})
    assert finding.value == 0.75
    assert finding.detail == "sms: 6 of 8 sends failed in the last 2m (75%; alert above 50%)"


def test_consumer_lag_per_stage() -> None:
    lags = {"send": 120, "decide": 3, "ingest": 0}
    any_stage = ConsumerLag(name="lag", kind="consumer_lag", above=100)
    assert verdicts(judge(any_stage, {}, lags)) == {"decide": False, "ingest": False, "send": True}
    send_only = ConsumerLag(name="lag", kind="consumer_lag", stage="send", above=200)
    assert verdicts(judge(send_only, {}, lags)) == {"send": False}
    assert judge(send_only, {}, {}) == []  # no worker reports: nothing to say


def test_dead_letters_over_the_window() -> None:
    rule = DeadLetters(name="dl", kind="dead_letters", above=2)
    assert verdicts(judge(rule, {"dead_letters|all": 3}, {})) == {"all": True}
    assert verdicts(judge(rule, {"dead_letters|all": 2}, {})) == {"all": False}
    assert verdicts(judge(rule, {}, {})) == {"all": False}


def test_refused_credentials_fire_and_resolve_only_once_the_provider_sends_again() -> None:
    rule = CredentialsRefused(name="creds", kind="credentials_refused")
    refusing = {"calls|sms|gw": 3, "failed|sms|gw": 3, "credentials|sms|gw": 3}
    assert verdicts(judge(rule, refusing, {})) == {"gw": True}
    # Taken out of its chain, the provider is not called: silence is no recovery.
    assert verdicts(judge(rule, {"calls|sms|gw": 1, "failed|sms|gw": 1}, {})) == {"gw": None}
    assert verdicts(judge(rule, {}, {})) == {}
    assert verdicts(judge(rule, {"calls|sms|gw": 2, "failed|sms|gw": 0}, {})) == {"gw": False}
    named = CredentialsRefused(name="creds", kind="credentials_refused", provider="other")
    assert judge(named, refusing, {}) == []


def test_the_alert_event_has_one_id_per_incident_and_state() -> None:
    alerts = AlertFile.model_validate({
        "notify": {"app": "ops", "audience": {"tags": ["on-call"]}, "channels": ["robot"]},
        "rules": [{"name": "creds", "kind": "credentials_refused"}],
    })
    rule = alerts.rules[0]
    finding = Finding("creds", "gw", True, 3.0, "sms provider gw refused our credentials")
    since = datetime(2026, 11, 30, 8, 0, tzinfo=UTC).timestamp()
    firing = alert_event(alerts, rule, finding, Transition("firing", 4, since))
    again = alert_event(alerts, rule, finding, Transition("firing", 4, since))
    resolved = alert_event(alerts, rule, finding, Transition("resolved", 4, since + 60))
    assert firing.event_id == again.event_id  # emitted twice, deduplicated by ingest
    assert len({firing.event_id, resolved.event_id}) == 2
    assert (firing.app, firing.category, firing.type) == ("ops", "alert", "switchboard.alert")
    assert firing.channels == ["robot"]
    assert firing.data["state"] == "firing" and firing.data["incident"] == 4
    assert firing.data["since"] == "2026-11-30T08:00:00+00:00"

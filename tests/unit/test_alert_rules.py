"""The alert file: the shipped one loads, and every mistake is named at its line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.alert_rules import (
    ConsumerLag,
    CredentialsRefused,
    FailureRate,
    check_alerts,
    load_alerts,
    seconds,
)
from settings import ROOT

GOOD = """\
every: 15s
notify:
  app: ops
  audience: {addresses: [{channel: robot, address: campus-ops}]}
  channels: [robot]
rules:
  - {name: sms, kind: failure_rate, channel: sms, above: 0.25, window: 2m, min_sends: 5}
  - {name: lag, kind: consumer_lag, stage: send, above: 100}
  - {name: creds, kind: credentials_refused, window: 30s}
"""


def test_the_shipped_alert_file_loads() -> None:
    alerts = load_alerts(ROOT / "config" / "alerts.yaml")
    assert alerts.notify.template == "switchboard_alert"
    assert {rule.kind for rule in alerts.rules} == {
        "failure_rate", "consumer_lag", "dead_letters", "credentials_refused"
    }


def test_a_good_file_becomes_typed_rules(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(GOOD)
    alerts = load_alerts(path)
    assert alerts.every == 15.0
    sms, lag, creds = alerts.rules
    assert isinstance(sms, FailureRate) and (sms.channel, sms.above, sms.window, sms.min_sends) == (
        "sms", 0.25, 120.0, 5
    )
    assert isinstance(lag, ConsumerLag) and (lag.stage, lag.above) == ("send", 100)
    assert isinstance(creds, CredentialsRefused) and (creds.provider, creds.window) == ("any", 30.0)


BAD = [
    ("every: 5x\n" + GOOD.split("\n", 1)[1], "1:8: 'every': '5x' is not a duration"),
    (GOOD.replace("  app: ops", "  ap: ops"), "3:3: unknown field 'ap' (did you mean 'app'?)"),
    (GOOD.replace("  app: ops", "  ap: ops"), "3:3: missing required field 'app'"),
    (GOOD.replace("channel: sms,", "chanel: sms,"),
     "7:37: unknown field 'chanel' (did you mean 'channel'?)"),
    (GOOD.replace("above: 0.25", "above: 25"), "7:58: 'above': Input should be less than 1"),
    (GOOD.replace("window: 2m", "window: 2d"), "7:72: 'window': '2d' is not a duration"),
    (GOOD.replace("window: 30s", "window: 5s"), "'window': '5s' must be from 10s to 60m"),
    (GOOD.replace("kind: consumer_lag", "kind: lag"), "8:23: kind must be one of failure_rate"),
    (GOOD.replace("channel: sms, above", "above"), "names either a channel or a provider"),
    (GOOD.replace("name: lag", "name: sms"), "rule names repeat: sms"),
    (GOOD.replace("channels: [robot]", "channels: [pager]"), "5:14: 'channels[0]': Input should be 'sms'"),
    (GOOD + "notify: {}\n", "10:1: duplicate key 'notify'"),
    ("rules: [\n", "invalid YAML"),
    ("", "the alert file is empty"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_each_mistake_is_located_and_named(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(text)
    errors = [str(error) for error in check_alerts(path)]
    assert any(expected in error for error in errors), errors
    assert all(error.startswith(f"{path}:") for error in errors)


def test_an_unreadable_file_is_one_located_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    [error] = check_alerts(missing)
    assert str(error).startswith(f"{missing}:1:1: cannot read alert file")


@pytest.mark.parametrize(
    ("text", "expected"), [("10s", 10.0), ("5m", 300.0), ("1h", 3600.0), (" 90 s", 90.0)]
)
def test_durations(text: str, expected: float) -> None:
    assert seconds(text) == expected


@pytest.mark.parametrize("text", ["5", "1d", "2h", "0s", "m5", 5])
def test_durations_out_of_range_or_malformed_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match=r"duration|must be from"):
        seconds(text)

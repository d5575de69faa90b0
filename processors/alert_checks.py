"""Alert rules judged against the fleet's watched counts and lag: pure, so each rule is a unit test.

A finding is `firing` True or False, or None when the window holds too little to judge (a provider
nobody sent through): then the incident stays as it is rather than resolve on silence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from processors.alert_rules import AlertRule, ConsumerLag, CredentialsRefused, DeadLetters, FailureRate


@dataclass(frozen=True)
class Finding:
    """What one rule says about one subject (a channel, a provider, a stage) right now."""

    rule: str
    subject: str
    firing: bool | None
    value: float
    detail: str


def judge(rule: AlertRule, counts: Mapping[str, int], lags: Mapping[str, int]) -> list[Finding]:
    """The findings of `rule`, given the counts of its window (state.watch) and the lag per stage."""
    if isinstance(rule, FailureRate):
        return _failure_rate(rule, counts)
    if isinstance(rule, ConsumerLag):
        return _lag(rule, lags)
    if isinstance(rule, DeadLetters):
        n = counts.get("dead_letters|all", 0)
        detail = f"{n} records dead-lettered in the last {_span(rule.window)} (alert above {rule.above})"
        return [Finding(rule.name, "all", n > rule.above, float(n), detail)]
    return _credentials(rule, counts)


def _failure_rate(rule: FailureRate, counts: Mapping[str, int]) -> list[Finding]:
    subjects: list[tuple[str, int, int, str]]
    if rule.channel is not None:
        subjects = [(rule.channel, counts.get(f"sends|{rule.channel}", 0),
                     counts.get(f"send_failed|{rule.channel}", 0), "sends")]
    else:
        subjects = [
            (provider, calls, counts.get(f"failed|{channel}|{provider}", 0), "calls")
            for channel, provider, calls in _providers(counts, "calls")
            if rule.provider in ("any", provider)
        ]
    findings: list[Finding] = []
    for subject, total, failed, what in subjects:
        if total < rule.min_sends:
            firing: bool | None = None
            detail = f"{subject}: {total} {what} in the last {_span(rule.window)}, too few to judge"
            share = 0.0
        else:
            share = failed / total
            firing = share > rule.above
            detail = (f"{subject}: {failed} of {total} {what} failed in the last {_span(rule.window)} "
                      f"({share:.0%}; alert above {rule.above:.0%})")
        findings.append(Finding(rule.name, subject, firing, share, detail))
    return findings


def _lag(rule: ConsumerLag, lags: Mapping[str, int]) -> list[Finding]:
    return [
        Finding(rule.name, stage, lag > rule.above, float(lag),
                f"{lag} records wait for stage {stage} (alert above {rule.above})")
        for stage, lag in sorted(lags.items())
        if rule.stage in ("any", stage)
    ]


def _credentials(rule: CredentialsRefused, counts: Mapping[str, int]) -> list[Finding]:
    findings: list[Finding] = []
    for channel, provider, calls in _providers(counts, "calls"):
        if rule.provider not in ("any", provider):
            continue
        refused = counts.get(f"credentials|{channel}|{provider}", 0)
        ok = calls - counts.get(f"failed|{channel}|{provider}", 0)
        if refused:
            firing: bool | None = True
            detail = (f"{channel} provider {provider} refused our credentials {refused} time(s) in the last "
                      f"{_span(rule.window)} and is taken out of its chain: check its keys")
        elif ok > 0:
            firing, detail = False, f"{channel} provider {provider} accepts our credentials again"
        else:
            firing, detail = None, f"{channel} provider {provider}: no answer yet"
        findings.append(Finding(rule.name, provider, firing, float(refused), detail))
    return findings


def _providers(counts: Mapping[str, int], kind: str) -> Iterable[tuple[str, str, int]]:
    for name, n in sorted(counts.items()):
        parts = name.split("|")
        if len(parts) == 3 and parts[0] == kind:
            yield parts[1], parts[2], n


def _span(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    return f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"

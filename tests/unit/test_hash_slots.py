"""Every multi-key Redis script and transaction of state/ keeps its keys in one cluster slot, and the
data still spreads: a table of each script's keys, built by the functions the code uses, over many
users and messages. A script added to state/ without a row here fails the coverage test."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from records.plan import CapLimit, DeliveryPlan, FrequencyCap
from records.topics import Dispatch, EventCore
from settings import ROOT
from state import (
    approvals,
    apps,
    auth_failures,
    broadcasts,
    budgets,
    campaigns,
    channel_accounts,
    fallback,
    inbox,
    offline,
    operators,
    pacing,
    template_store,
    uploads,
)
from state.caps import cap_key, script_calls
from state.keyspace import SHARD_TAGS, SHARDS, shard_of, share, slot, slots, tag
from state.schedule import schedule_shards

IDS = [f"u{n}" for n in range(200)] + ["s-2024-0001", "addr:email:a@b.c", "x}y", "{odd", "中文"]
MESSAGES = [f"{n:032x}" for n in range(0, 10**6, 4999)]
EVENT = EventCore(event_id="e1", app="shop", type="promo", template="promo", category="marketing")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def dispatch(user_id: str, message_id: str, *caps: FrequencyCap) -> Dispatch:
    return Dispatch.model_validate(
        {
            "message_id": message_id,
            "user_id": user_id,
            "channel": "sms",
            "address": "+8613800000000",
            "event": EVENT,
            "rule_id": "promo",
            "rule_version": "v1",
            "plan": DeliveryPlan(caps=caps),
        }
    )


def _caps_check(user: str, message: str) -> list[list[str]]:
    per_user = FrequencyCap(id="daily", limits=(CapLimit(count=3, window=timedelta(days=1)),))
    per_channel = FrequencyCap(
        id="burst", scope=("user", "channel"), limits=(CapLimit(count=2, window=timedelta(minutes=5)),)
    )
    campus = FrequencyCap(id="campus", scope=("app",), limits=(CapLimit(count=9, window=timedelta(hours=1)),))
    return [call.keys for call in script_calls(dispatch(user, message, per_user, per_channel, campus), NOW)]


def _chain(message: str) -> list[list[str]]:
    shard = fallback.chain_shard(message)
    # arm: the hash and the due set; observe/fire/done reach hashes by the shard's prefix.
    others = [m for m in MESSAGES if fallback.chain_shard(m) == shard]
    return [
        [shard.message(message), shard.due],
        [shard.due, *(shard.message(m) for m in others)],
        [shard.due, shard.inflight, *(shard.message(m) for m in others)],
        [shard.inflight, shard.message(message)],
    ]


def _schedules(message: str) -> list[list[str]]:
    groups = []
    for name in ("sb:schedule", "sb:parked"):
        shard = schedule_shards(name)[shard_of(message)]
        groups += [[shard.due, shard.inflight, shard.bodies], [shard.due, shard.bodies]]
    return groups


def _offline(user: str, message: str) -> list[list[str]]:
    keep = [offline.deadline_key(user, message), offline.kept_key(user), offline.users_key(user)]
    return [[*keep, offline.lease_key(user)], [offline.kept_key(user), offline.lease_key(user)]]


def _budget_count(app: str, message: str) -> list[list[str]]:
    """The counting script's marker and counters, for an app-wide and a campaign budget of each period."""
    name = re.sub(r"[^A-Za-z0-9_.:-]", "-", app)  # app names are plain names
    under = [
        budgets.Budget(app=name, campaign=campaign, period=period, limit_micros=1)
        for campaign in (None, "bf") for period in budgets.PERIODS
    ]
    calls: list[list[str]] = []
    for budget in under:
        window = budgets.period_window(budget.period, budget.timezone, NOW)
        marker = f"sb:budget:{budgets.tag(budget.app)}:counted:{message}:sms:0"
        calls.append([marker, budget.counter(window)])
    return calls


def _apps(user: str) -> list[list[str]]:
    return [[apps._APP.format(user), apps._KEY.format("ab" * 32), apps._APPS]]


def _accounts(code: str) -> list[str]:
    accounts = channel_accounts
    return [accounts._ACCOUNT.format(code), accounts._CODES, accounts._TYPE.format("sms")]


def _operators(name: str) -> list[list[str]]:
    digest = "ab" * 32
    return [[
        operators._OP.format(name), operators._NAMES, operators._TOKEN.format(digest),
        operators._TOKENS.format(name), operators._USED.format(name), operators._SESSION.format(digest),
        operators._SESSION_END.format(digest), operators._sessions_of(name),
    ]]


def _auth_failures(name: str) -> list[list[str]]:
    return [[auth_failures._LOCK.format(name), auth_failures._OPERATOR.format(name)],
            [auth_failures._SOURCE.format("2001:db8::1")]]


# (module, script or transaction): the key groups one call touches, for a user id and a message id.
CALLS: dict[tuple[str, str], Callable[[str, str], list[list[str]]]] = {
    ("caps", "_CHECK"): _caps_check,
    ("caps", "_FORGET"): _caps_check,
    ("fallback", "_ARM"): lambda _, m: _chain(m),
    ("fallback", "_OBSERVE"): lambda _, m: _chain(m),
    ("fallback", "_FIRE"): lambda _, m: _chain(m),
    ("fallback", "_DONE"): lambda _, m: _chain(m),
    ("inbox", "_ADD"): lambda u, _: [list(inbox.inbox_keys(u))],
    ("inbox", "_MARK"): lambda u, _: [list(inbox.inbox_keys(u)[1:])],
    ("offline", "_KEEP"): _offline,
    ("offline", "_LEASE"): _offline,
    ("offline", "_DONE"): _offline,
    ("pacing", "_SLOT"): lambda u, _: [list(pacing.pace_keys(f"campaign:{u}"))],
    ("schedule", "_CLAIM"): lambda _, m: _schedules(m),
    ("schedule", "_REQUEUE"): lambda _, m: _schedules(m),
    ("schedule", "_ADD"): lambda _, m: _schedules(m),
    ("schedule", "_DONE"): lambda _, m: _schedules(m),
    ("apps", "transaction"): lambda u, _: _apps(u),
    ("budgets", "_COUNT"): _budget_count,
    ("inbox", "transaction"): lambda u, _: [list(inbox.inbox_keys(u))],
    # Operators, their tokens, sessions and lockouts share the `{ops}` slot (as apps share `{apps}`).
    ("operators", "transaction"): lambda u, _: _operators(u),
    ("auth_failures", "transaction"): lambda u, _: _auth_failures(u),
    # Broadcast jobs are few (one per large audience): they share the `{bc}` slot on purpose.
    ("broadcasts", "_CREATE"): lambda _, m: [
        [broadcasts._JOB.format(m), broadcasts._ACTIVE, broadcasts._JOBS]
    ],
    ("broadcasts", "_FINISH"): lambda u, m: [[broadcasts._JOB.format(m), broadcasts._ACTIVE]],
    ("broadcasts", "transaction"): lambda u, m: [[broadcasts._JOB.format(m)]],
    # Channel accounts are few (a quota per type): they share the `{chacc}` slot on purpose.
    ("channel_accounts", "_CREATE"): lambda u, _: [_accounts(u)],
    ("channel_accounts", "_REPLACE"): lambda u, _: [_accounts(u)[:1]],
    ("channel_accounts", "transaction"): lambda u, _: [_accounts(u)],
    # Held items are few (people decide on each): they share the `{approvals}` slot on purpose.
    ("approvals", "_CREATE"): lambda _, m: [
        [approvals.ITEM_KEY.format(m), approvals.INDEX_KEY, approvals.PENDING_KEY, approvals.DUE_KEY]
    ],
    ("approvals", "_CHANGE"): lambda _, m: [
        [approvals.ITEM_KEY.format(m), approvals.PENDING_KEY, approvals.DUE_KEY]
    ],
    ("approvals", "_RESCHEDULE"): lambda _, m: [[approvals.ITEM_KEY.format(m), approvals.DUE_KEY]],
    # Stored templates are few (operators write each): they share the `{templates}` slot on purpose.
    ("template_store", "_SAVE"): lambda u, _: [
        [template_store.COUNTER_KEY.format(u), template_store.VERSIONS_KEY.format(u)]
    ],
    ("template_store", "transaction"): lambda u, _: [
        [template_store.LIVE_KEY, template_store.GENERATION_KEY],
        [template_store.GENERATION_KEY, template_store.LIVE_KEY],
    ],
    # An uploaded list's keys share its `{up.<id>}` tag: a removal deletes its rows and marks its meta.
    ("uploads", "transaction"): lambda u, _: [
        [uploads.META_KEY.format(u), uploads.INDEX_KEY.format(u), uploads.ERRORS_KEY.format(u)]
    ],
    # Campaigns are few (operators compose them): they share the `{cmp}` slot on purpose.
    ("campaigns", "_REPLACE"): lambda _, m: [
        [campaigns._CAMPAIGN.format(m), campaigns._CANCELLED, campaigns._CANCELLED_AT]
    ],
    ("campaigns", "transaction"): lambda _, m: [[campaigns._CAMPAIGN.format(m), campaigns._CAMPAIGNS]],
    ("inbox", "_REMOVE"): lambda u, _: [list(inbox.inbox_keys(u))],  # recall, one message
}
# One key per call: nothing to keep together.
SINGLE_KEY = {
    ("idempotency", "_RELEASE"),
    ("rate_limit", "_ACQUIRE"),
    ("provider_messages", "_TAKE"),
    ("watch", "_MOVE"),  # one incident hash per rule and subject
    ("watch", "_NOTIFIED"),
    ("broadcasts", "_RENEW"),  # one lease key per job
    ("broadcasts", "_RELEASE"),
    ("uploads", "_ADD_RAW"),  # the upload's index only
}
# Reads many people's keys; on a Redis Cluster the same answer is read key by key (ConsentStore).
SINGLE_REDIS_ONLY = {("consent", "_REFUSED"), ("person_sweep", "_FILTER"), ("segments", "_READ_PAGE")}


@pytest.mark.parametrize(("module", "name"), sorted(CALLS))
def test_each_call_keeps_its_keys_in_one_slot(module: str, name: str) -> None:
    for user, message in zip(IDS, MESSAGES * 2, strict=False):
        for keys in CALLS[module, name](user, message):
            assert len(slots(keys)) == 1, (module, name, keys)


def test_every_script_of_state_is_in_the_table() -> None:
    found = set()
    for path in sorted((ROOT / "state").glob("*.py")):
        text = path.read_text()
        found |= {(path.stem, m) for m in re.findall(r"register_script\((_[A-Z_]+)\)", text)}
        if "transaction=True" in text:
            found.add((path.stem, "transaction"))
    # The idempotency and segment transactions each touch one key.
    one_key = {("idempotency", "transaction"), ("users", "transaction"), ("budgets", "transaction")}
    covered = set(CALLS) | SINGLE_KEY | SINGLE_REDIS_ONLY | one_key
    assert found <= covered, f"scripts without a slot check: {sorted(found - covered)}"
    assert found, f"no scripts found under {Path(ROOT / 'state')}"


def test_people_and_messages_spread_over_many_slots() -> None:
    # Tagged by user or message, not by one global tag: 200 users reach far more than 3 nodes' worth.
    assert len({slot(inbox.inbox_keys(u)[0]) for u in IDS}) > 150
    per_user = FrequencyCap(id="daily", limits=(CapLimit(count=3, window=timedelta(days=1)),))
    assert len({slot(cap_key(per_user, dispatch(u, "m"))) for u in IDS}) > 150
    # The global indexes use every shard, and the shards sit in evenly spaced slot ranges.
    assert len({fallback.chain_shard(m) for m in MESSAGES}) == SHARDS
    width = 16384 // SHARDS
    assert [slot(t) // width for t in SHARD_TAGS] == list(range(SHARDS))


def test_a_brace_in_an_id_cannot_break_its_tag() -> None:
    for odd in ("x}y", "{a", "", "}"):
        base = "sb:inbox:" + tag(odd)
        assert len(slots([base, base + ":m", base + ":unread"])) == 1
        assert tag(odd).count("{") == 1 and tag(odd).count("}") == 1


@pytest.mark.parametrize(
    ("limit", "counts", "given"),
    [
        (500, [0] * 16, [0] * 16),
        (10, [100, 0, 0, 5], [5, 0, 0, 5]),
        (10, [3, 3, 3, 3], [3, 3, 2, 2]),
        (1, [0, 0, 7], [0, 0, 1]),
        (100, [2, 50, 1], [2, 50, 1]),
        (6, [100, 100, 100], [2, 2, 2]),
    ],
)
def test_a_claim_shares_its_limit_among_the_shards_with_work(
    limit: int, counts: list[int], given: list[int]
) -> None:
    assert share(limit, counts) == given
    assert sum(share(limit, counts)) == min(limit, sum(counts))

"""A rule's control share, decided against real Redis and the real rule engine: held out, nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from processors.decide import Decide
from records.topics import Delivery, Dispatch, EventCore, message_id_for
from rules.apply import pick_variant
from rules.engine import AsyncRuleEngine
from rules.loader import load_ruleset
from rules.schema import Ruleset
from state.apps import AppRegistry
from state.consent import ConsentStore
from state.engagement import EngagementHistory
from state.fallback import FallbackSchedule
from state.offline import OfflineKeep
from state.pacing import Pacer
from state.schedule import DeliverySchedule
from state.users import User, UserDirectory
from tests.integration.moments import next_local

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too

NOW = next_local(16, 0)
RULES = """\
ruleset: trial
caps:
  - id: weekly
    limits: [1/7d]
rules:
  - id: library-week
    when: {campaign: [library-week]}
    then:
      variants:
        - {name: inbox, weight: 45, channels: [inbox]}
        - {name: email, weight: 45, channels: [email]}
        - {name: holdout, weight: 10, control: true}
      fallback:
        - {after: 1h, if_not: read, first_of: [email, inbox]}
      keep_offline: 1d
      pace: {per_second: 1}
"""
EVENT = EventCore(
    event_id="lw1", app="library", type="promo", template="library_week", category="marketing",
    campaign="library-week",
)


class CountingArming:
    """The real fallback schedule, remembering which messages it was asked to arm."""

    def __init__(self, schedule: FallbackSchedule) -> None:
        self.schedule = schedule
        self.message_ids: list[str] = []

    async def arm_many(self, items: Sequence[tuple[Dispatch, dict[str, str] | None, datetime]]) -> list[bool]:
        self.message_ids += [dispatch.message_id for dispatch, _, _ in items]
        return await self.schedule.arm_many(items)


def in_control(ruleset: Ruleset, user_id: str) -> bool:
    variants = next(r for r in ruleset.rules if r.id == "library-week").then.variants or ()
    return pick_variant("library-week", user_id, variants).control


async def test_a_control_share_is_held_out_and_nothing_else_happens_to_it(
    redis: Redis, tmp_path: Path
) -> None:
    path = tmp_path / "trial.yaml"
    path.write_text(RULES)
    ruleset = load_ruleset(path)
    reachable = [f"u{n:03}" for n in range(80)]
    # Two people nobody can reach: one in the control share, one not (offline keep is for the latter).
    candidates = [f"lost{n}" for n in range(200)]
    lost = [next(u for u in candidates if in_control(ruleset, u) is held) for held in (True, False)]
    directory = UserDirectory(redis)
    await directory.upsert(
        [User(user_id=u, timezone="Asia/Shanghai", bindings={"inbox": u, "email": f"{u}@uni.example"})
         for u in reachable]
        + [User(user_id=u, timezone="Asia/Shanghai", bindings={}) for u in lost]
    )
    await AppRegistry(redis).register("library", {"inbox", "email"})
    engine = AsyncRuleEngine(ruleset)
    arming = CountingArming(FallbackSchedule(redis))
    decide = Decide(
        directory, AppRegistry(redis), engine, DeliverySchedule(redis), frozenset({"inbox", "email"}),
        consent=ConsentStore(redis, opt_in=()), engagement=EngagementHistory(redis), pacer=Pacer(redis),
        offline=OfflineKeep(redis), fallback=arming,
    )
    people = [*reachable, *lost]
    deliveries = [
        Delivery(message_id=message_id_for("library", "lw1", u), user_id=u, event=EVENT) for u in people
    ]
    try:
        result = await decide.handle(deliveries, now=NOW)
    finally:
        engine.close()

    held = {u for u in people if in_control(ruleset, u)}
    assert lost[0] in held and lost[1] not in held
    assert 0 < len(held) < len(people) // 2  # about a tenth, by the stable hash
    by_user: dict[str, list[tuple[str, str, str, str]]] = {}
    for r in result.receipts:
        by_user.setdefault(r.user_id, []).append((r.status, r.channel, r.rule_id, r.variant))
    for user in held:
        assert by_user[user] == [("held_out", "", "library-week", "holdout")], user
    reasons = {r.reason for r in result.receipts if r.status == "held_out"}
    assert reasons == {"rule library-week matched; variant holdout (10 of 100); "
                       "held out: control share holdout of rule library-week"}
    sent_to = {d.user_id for d in result.dispatches} | {d.user_id for d, _ in result.paced}
    assert sent_to == set(reachable) - held  # nothing dispatched or paced for the control share
    assert set(arming.message_ids) == {message_id_for("library", "lw1", u) for u in sent_to}
    assert result.kept_offline == 1 and by_user[lost[1]][0][0] == "deferred"  # only the treated one kept
    assert result.scheduled == 0
    treated = {r.user_id: r.variant for r in result.receipts if r.status == "decided"}
    assert set(treated.values()) == {"inbox", "email"} and not held & set(treated)

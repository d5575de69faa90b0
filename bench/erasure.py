"""Bench: what one data-rights erasure costs against a populated store.

Redis: `--people` profiles with inbox, engagement and consent, `--scheduled` deliveries and as many
fallback chains spread over everyone, then one person's export and erasure timed (the sweep SCANs the
whole keyspace, reads every fallback chain and send-ledger record and HSCANs every schedule shard, so
it grows with the store, not with the person); `--sends` send-ledger records beside them.
ClickHouse (embedded): `--rows` message_events rows over `--people` people, then one person's history
read and anonymisation timed (mutations rewrite the parts holding matching rows).

Run: .venv/bin/python bench/erasure.py [--people 20000] [--scheduled 20000] [--sends 100000] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from analytics import erasure
from analytics.connection import open_clickhouse
from analytics.migrate import apply_migrations
from localparts import free_port
from localparts.redis_server import LocalRedis
from records.erasure import ErasedAddress, ErasureRequest, pseudonym
from records.plan import DeliveryPlan, FallbackStep
from records.topics import Delivery, Dispatch, EventCore, address_user_id
from state.connection import open_redis
from state.data_rights import PersonState
from state.engagement import EngagementHistory
from state.fallback import FallbackSchedule
from state.idempotency import SendLedger, SendRecord
from state.inbox import Inbox, InboxMessage
from state.schedule import DeliverySchedule
from state.users import User, UserDirectory

EVENT = EventCore(event_id="e", app="bursar", type="fee", template="fee_due", category="transactional")
PLAN = DeliveryPlan(
    fallback=(FallbackStep(step=1, after=timedelta(hours=1), condition="not_read", channels=("sms",)),)
)


def person(n: int) -> User:
    return User(
        user_id=f"u{n}", name=f"Person {n}", bindings={"email": f"u{n}@uni.example", "inbox": f"u{n}"}
    )


async def fill_redis(url: str, people: int, scheduled: int, sends: int) -> None:
    redis = open_redis(url)
    now = datetime.now(UTC)
    users = [person(n) for n in range(people)]
    await UserDirectory(redis).upsert(users)
    inbox, engagement = Inbox(redis), EngagementHistory(redis)
    for user in users:
        message = InboxMessage(
            message_id=f"{user.user_id}-m",
            title="t",
            body="b",
            app="bursar",
            event_id="e",
            template="fee_due",
            category="transactional",
            created_at=now,
        )
        await inbox.add(user.user_id, message)
    await engagement.record_many([(u.user_id, "read", now) for u in users])
    schedule, chains = DeliverySchedule(redis), FallbackSchedule(redis)
    await schedule.add_many(
        [
            (Delivery(message_id=f"d{n}", user_id=f"u{n % people}", event=EVENT), now + timedelta(hours=1))
            for n in range(scheduled)
        ]
    )
    await chains.arm_many(
        [
            (
                Dispatch(
                    message_id=f"c{n}",
                    user_id=f"u{n % people}",
                    channel="email",
                    address=f"u{n % people}@uni.example",
                    event=EVENT,
                    rule_id="r",
                    rule_version="1",
                    plan=PLAN,
                ),
                None,
                now,
            )
            for n in range(scheduled)
        ]
    )
    ledger = SendLedger(redis, ttl_seconds=3600)
    for start in range(0, sends, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(start + 5000, sends)):
                ledger.record_into(pipe, (f"s{n}", "email", 0), SendRecord(outcome="sent", provider="smtp"))
            await pipe.execute()
    keys = await redis.dbsize()
    state = PersonState(redis)
    started = time.perf_counter()
    await state.export("u7")
    exported = time.perf_counter() - started
    started = time.perf_counter()
    outcome = await state.erase("u7")
    erased = time.perf_counter() - started
    print(
        f"redis: {keys:,} keys; export {exported * 1000:,.0f} ms, erase {erased * 1000:,.0f} ms "
        f"(removed {outcome['removed']})"
    )
    await redis.aclose()


def fill_clickhouse(folder: Path, people: int, rows: int) -> None:
    client = open_clickhouse(f"chdb://{folder}")
    apply_migrations(client)
    client.command(
        "INSERT INTO message_events (event_time, message_id, event_id, app, user_id, channel, status, cost) "
        "SELECT now64(3) - number, toString(number), 'e', 'bursar', "
        "concat('u', toString(number % {people:UInt32})), 'email', "
        "if(number % 2 = 0, 'sent', 'delivered'), 0.01 FROM numbers({rows:UInt64})",
        {"people": people, "rows": rows},
    )
    request = ErasureRequest(
        user_id="u7",
        pseudonym=pseudonym(b"bench", "u7"),
        addresses=(
            ErasedAddress(
                channel="email",
                address="u7@uni.example",
                address_id=address_user_id("email", "u7@uni.example"),
            ),
        ),
    )
    started = time.perf_counter()
    page = erasure.history(client, request)
    read = time.perf_counter() - started
    started = time.perf_counter()
    left = erasure.apply(client, request)
    applied = time.perf_counter() - started
    print(
        f"clickhouse: {rows:,} message_events rows; history {read * 1000:,.0f} ms "
        f"({len(page.message_events)} rows), anonymise {applied * 1000:,.0f} ms (left {left})"
    )
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--scheduled", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sends", type=int, default=100_000, help="send-ledger records")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = LocalRedis(
            port=free_port(), log_path=Path(folder) / "redis.log", data_dir=Path(folder) / "data"
        )
        server.start()
        try:
            asyncio.run(fill_redis(server.url, args.people, args.scheduled, args.sends))
        finally:
            server.stop()
        fill_clickhouse(Path(folder) / "clickhouse", args.people, args.rows)


if __name__ == "__main__":
    main()

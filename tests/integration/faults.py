"""The fault harness: a counted flow of email+inbox messages, parts to break, and the tallies that show
nothing was lost or doubled.

Every person gets one transactional event's message by email and in the inbox (rule
`fees-and-payments`). The tallies read what people hold — the SMTP server's envelopes, the Redis
inboxes — and what ClickHouse says happened, so a test compares the two exactly.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from analytics.connection import ClickHouseUnavailable, open_reader
from localparts import LocalRedis, LocalSmtpServer, free_port
from localparts.switchboard_process import SwitchboardProcess
from records.topics import message_id_for
from settings import Settings
from state.apps import AppRegistry
from state.flow_counters import FlowCounters
from state.inbox import inbox_keys
from state.users import User, UserDirectory
from tests.integration.signing import signatures

PEOPLE_PER_EVENT = 50  # recipients per event: the deliveries, not the events, are what the tests count
APP = "bursar"


def person(i: int) -> str:
    return f"p{i}"


def address(i: int) -> str:
    return f"p{i}@uni.example"


async def seed_people(redis: Redis, people: int) -> str:
    """People with an email address and an inbox, and the app allowed both channels; returns the
    app's API key."""
    directory = UserDirectory(redis)
    for start in range(0, people, 1000):
        await directory.upsert(
            [
                User(user_id=person(i), bindings={"email": address(i), "inbox": person(i)})
                for i in range(start, min(start + 1000, people))
            ]
        )
    return await AppRegistry(redis).register(APP, {"email", "inbox"})


def statements(first: int, people: int, run: str = "fault") -> list[tuple[bytes, bytes]]:
    """(key, value) records of events reaching people `first` .. `first + people - 1`, by email and inbox."""
    records = []
    for start in range(first, first + people, PEOPLE_PER_EVENT):
        members = [person(i) for i in range(start, min(start + PEOPLE_PER_EVENT, first + people))]
        event = {
            "event_id": f"{run}-{start}",
            "app": APP,
            "type": "fee.statement",
            "template": "fee_due",
            "category": "transactional",  # rule fees-and-payments: email and inbox
            "audience": {"user_ids": members},
            "data": {"amount": "¥10", "due_date": "2026-12-01", "term": "Autumn"},
        }
        records.append((members[0].encode(), json.dumps(event).encode()))
    return records


def message_ids(people: Iterable[int], run: str = "fault") -> dict[str, int]:
    """Each person's message id, as ingest derives it (deterministic), to the person's number."""
    return {message_id_for(APP, f"{run}-{i - i % PEOPLE_PER_EVENT}", person(i)): i for i in people}


async def produce(settings: Settings, records: Sequence[tuple[bytes, bytes]], topic: str = "events") -> None:
    """Produce and wait for the broker's acknowledgement of every record."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    values = [value for _, value in records]
    signed = await signatures(settings, values) if topic.startswith("events") else [None] * len(values)
    try:
        pending = [
            await producer.send(settings.topic(topic), value, key=key, headers=headers)
            for (key, value), headers in zip(records, signed, strict=True)
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


@dataclass(frozen=True)
class Tally:
    """What people hold: emails per address, inbox messages per person."""

    emails: Counter[str]
    inbox: list[int]

    def missing_emails(self, people: int) -> list[str]:
        return [address(i) for i in range(people) if not self.emails[address(i)]]

    def repeated_emails(self) -> int:
        """Emails beyond the first to the same person."""
        return sum(n - 1 for n in self.emails.values() if n > 1)

    def complete(self, people: int) -> bool:
        return not self.missing_emails(people) and all(self.inbox)


async def tally(smtp: LocalSmtpServer, redis: Redis, people: int) -> Tally:
    emails = Counter(r for mail in smtp.messages for r in mail.rcpt_tos)
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(people):
            pipe.zcard(inbox_keys(person(i))[0])
        inbox = [int(n) for n in await pipe.execute()]
    return Tally(emails, inbox)


def clickhouse_messages(settings: Settings, statuses: Sequence[str]) -> dict[tuple[str, str], set[str]]:
    """(channel, status) -> the message ids ClickHouse has rows of, for this app; nothing while the
    analytics service is starting (it holds the data before it serves it)."""
    try:
        client = open_reader(settings)
    except ClickHouseUnavailable:
        return {}
    try:
        rows = client.query(
            "SELECT DISTINCT channel, status, message_id FROM message_events "
            "WHERE app = {app:String} AND status IN {statuses:Array(String)}",
            parameters={"app": APP, "statuses": list(statuses)},
        ).result_rows
    finally:
        client.close()
    found: dict[tuple[str, str], set[str]] = {}
    for channel, status, message_id in rows:
        found.setdefault((channel, status), set()).add(message_id)
    return found


async def wait_for(
    check: Callable[[], Awaitable[bool]],
    what: str,
    within: float,
    *processes: SwitchboardProcess,
    detail: Callable[[], Awaitable[str]] | None = None,
) -> float:
    """Poll `check` until true; fail naming `what` if a process exits or `within` seconds pass.
    Returns the seconds it took."""
    started = time.monotonic()
    while not await check():
        for process in processes:
            assert process.running, f"{process.role} exited while waiting for {what}:\n{process.log_tail()}"
        if time.monotonic() - started > within:
            extra = await detail() if detail is not None else ""
            logs = "\n".join(f"--- {p.role}\n{p.log_tail()}" for p in processes)
            raise AssertionError(f"no {what} within {within:.0f}s {extra}\n{logs}")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def progress(redis: Redis) -> str:
    return str(await FlowCounters(redis).read())


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    """A Redis of this test alone (AOF on, as in production), so the test may stop and restart it."""
    server = LocalRedis(port=free_port(), log_path=tmp_path / "redis.log", data_dir=tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def own_redis_client(own_redis: LocalRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(own_redis.url)
    try:
        yield client
    finally:
        await client.aclose()

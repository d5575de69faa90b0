"""`kill -9` of a worker, twice, during 10,000 email+inbox deliveries: nobody misses a message, and
ClickHouse agrees exactly with what the SMTP server and the inboxes hold.

A repeat is possible only for a send cut between the provider's acceptance and its record (the email
went out, the worker died before writing the outcome): the test counts these and holds them to the
sends that can be in flight at a kill, the send stage's concurrency, per kill.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from pathlib import Path

import pytest
from redis.asyncio import Redis

from channels.email_smtp import MESSAGE_ID_HEADER
from localparts import LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from processors.send import Send
from settings import Settings
from tests.integration.faults import (
    clickhouse_messages,
    message_ids,
    produce,
    progress,
    seed_people,
    statements,
    tally,
    wait_for,
)

pytestmark = pytest.mark.faults

# SWITCHBOARD_FAULT_PEOPLE makes a quicker local run; the suite runs the 10,000.
PEOPLE = int(os.environ.get("SWITCHBOARD_FAULT_PEOPLE", "10000"))
KILLS = 2
SEND_CONCURRENCY: int = inspect.signature(Send).parameters["concurrency"].default
# A claim held by a killed worker lapses after this; then its send goes out (again, if it was cut
# after the provider accepted it). Production keeps 10 minutes.
CLAIM_SECONDS = 8
TIMEOUT = 240.0


async def test_two_kill_9_lose_nothing_and_clickhouse_agrees_with_what_people_hold(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    flow = settings.model_copy(
        update={
            "clickhouse": f"chdb://{tmp_path / 'clickhouse'}",
            "send_claim_seconds": CLAIM_SECONDS,
        }
    )
    await seed_people(redis, PEOPLE)
    with SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service:
        worker = SwitchboardProcess("worker", flow, tmp_path / "worker-0.log")
        worker.start()
        try:
            await produce(flow, statements(0, PEOPLE))
            for kill in range(1, KILLS + 1):
                # Kill while emails are going out: at a third and at two thirds of them.
                target = PEOPLE * kill // (KILLS + 1)

                async def far_enough(target: int = target) -> bool:
                    return smtp.count >= target

                await wait_for(far_enough, f"{target} emails before kill {kill}", TIMEOUT, worker, service)
                worker.kill()
                worker = SwitchboardProcess("worker", flow, tmp_path / f"worker-{kill}.log")
                worker.start()

            ids = message_ids(range(PEOPLE))

            # The flow counters count redelivered batches again after a kill: what people hold and
            # what ClickHouse holds tell when it is over.
            async def settled() -> bool:
                if not (await tally(smtp, redis, PEOPLE)).complete(PEOPLE):
                    return False
                rows = await asyncio.to_thread(clickhouse_messages, flow, ["sent", "delivered"])
                return all(len(rows.get(key, ())) >= PEOPLE for key in _EXPECTED)

            async def where() -> str:
                now = await tally(smtp, redis, PEOPLE)
                rows = await asyncio.to_thread(clickhouse_messages, flow, ["sent", "delivered"])
                return (
                    f"missing emails {len(now.missing_emails(PEOPLE))}, empty inboxes "
                    f"{now.inbox.count(0)}, ClickHouse { ({k: len(v) for k, v in rows.items()}) }, "
                    f"counters {await progress(redis)}"
                )

            await wait_for(
                settled, "every message delivered and in ClickHouse", TIMEOUT, worker, service, detail=where
            )
            await asyncio.sleep(CLAIM_SECONDS + 2)  # a claim lapsing late would resend now
            held = await tally(smtp, redis, PEOPLE)
            rows = await asyncio.to_thread(clickhouse_messages, flow, ["sent", "delivered", "failed"])
        finally:
            worker.stop()

    emailed = {str(mail.message[MESSAGE_ID_HEADER]) for mail in smtp.messages}
    assert held.missing_emails(PEOPLE) == []
    assert held.inbox == [1] * PEOPLE
    assert held.repeated_emails() <= KILLS * SEND_CONCURRENCY, held.emails.most_common(5)
    # ClickHouse agrees exactly with the SMTP server and the inboxes: every message that reached a
    # person has its row, and no row tells of a message nobody holds.
    assert emailed == set(ids)
    assert rows[("email", "sent")] == emailed
    assert rows[("inbox", "sent")] == rows[("inbox", "delivered")] == set(ids)
    assert ("email", "failed") not in rows and ("inbox", "failed") not in rows
    print(
        f"\n{PEOPLE} people, {KILLS} kills: {held.repeated_emails()} emails repeated "
        f"(bound {KILLS * SEND_CONCURRENCY})"
    )  # the figure, with -s


_EXPECTED = (("email", "sent"), ("inbox", "sent"), ("inbox", "delivered"))

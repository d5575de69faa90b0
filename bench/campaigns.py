"""What campaigns add to the flow and to an operator's wait, against a local Redis:

- the cancel check each stage makes per batch (one HMGET for the batch's campaigns), timed with and
  without cancelled campaigns in the set;
- a recall: N inbox messages of one campaign taken back, a batch of 500 per round trip.

    .venv/bin/python bench/campaigns.py [--people 20000] [--batch 500]

Starts its own redis-server (AOF everysec, as deployed) on a free loopback port, so it needs nothing
running.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from localparts.process import free_port
from localparts.redis_server import LocalRedis
from state.campaigns import Campaign, CampaignStore, Cancellation, CancelledCampaigns, Composition
from state.inbox import Inbox, InboxMessage


async def measure(redis_url: str, people: int, batch: int) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    store, cancelled, inbox = CampaignStore(redis), CancelledCampaigns(redis), Inbox(redis)
    composition = Composition.model_validate({
        "app": "lms", "name": "bench", "audience": {"all": True}, "category": "notice", "template": "t",
    })
    for n in range(200):  # a realistic set: a few hundred cancelled campaigns
        campaign = Campaign(id=f"lms.c{n:012x}", app="lms", name="b", composition=composition,
                            created_by="b", created_at=datetime.now(UTC), state="running")
        await store.create(campaign)
        await store.replace(campaign, campaign.model_copy(update={
            "state": "cancelled", "cancelled": Cancellation(by="bench", at=datetime.now(UTC))}))
    pairs = [("lms", "lms.c000000000007")] * batch  # a batch of one campaign's deliveries
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        await cancelled.among(pairs)
    per_batch = (time.perf_counter() - started) / rounds
    each = per_batch / batch * 1e6
    print(f"cancel check: {per_batch * 1e6:.0f} µs per batch of {batch} ({each:.2f} µs a message)")
    unnamed = [("lms", "")] * batch
    started = time.perf_counter()
    for _ in range(rounds):
        await cancelled.among(unnamed)
    unnamed_us = (time.perf_counter() - started) / rounds * 1e6
    print(f"cancel check, no campaign named: {unnamed_us:.0f} µs per batch")

    now = datetime.now(UTC)
    await redis.script_load(inbox.add_script.source)
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(people):
            inbox.add_into(pipe, f"u{n}", InboxMessage(
                message_id=f"m{n}", title="t", body="b", app="lms", event_id="e", template="t",
                category="notice", campaign="lms.cbench", created_at=now,
            ))
        await pipe.execute()
    started = time.perf_counter()
    taken = 0
    async for found in inbox.recall("lms", "lms.cbench", batch=batch):
        taken += len(found)
    seconds = time.perf_counter() - started
    print(f"recall: {taken} inbox messages in {seconds:.2f} s ({taken / seconds:,.0f} a second)")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        server = LocalRedis(port=free_port(), log_path=data / "redis.log", data_dir=data / "data")
        server.start()
        try:
            asyncio.run(measure(server.url, args.people, args.batch))
        finally:
            server.stop()


if __name__ == "__main__":
    main()

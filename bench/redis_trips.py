"""Redis round trips and commands per delivery in decide, send and track, for a batch of 500.

Builds the worker's stages as the worker does (processors/runtime.build_flow: real Redis on a free
loopback port, bench/flow_rules.yaml) and runs one batch of campus-notice deliveries (inbox) and one
of fee statements (email to a local SMTP server, and inbox) through decide, send and track, counting
the requests the client wrote to Redis (each a round trip: a pipeline or script call is one) and the
commands Redis ran (INFO commandstats, those inside scripts included).

Run: .venv/bin/python bench/redis_trips.py [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from localparts import LocalSmtpServer, free_port
from localparts.redis_server import LocalRedis
from processors.runtime import build_flow
from records.topics import Delivery, EventCore, message_id_for
from settings import Settings
from state.apps import AppRegistry
from state.connection import open_redis
from state.users import User, UserDirectory

_T = TypeVar("_T")
RULES = Path(__file__).with_name("flow_rules.yaml")
_requests = 0
_send = AbstractConnection.send_packed_command


async def _counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
    global _requests
    _requests += 1
    await _send(self, command, check_health)


async def commands(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if isinstance(v, dict) and k != "cmdstat_info")


async def measured(label: str, n: int, redis: Redis, step: Callable[[], Awaitable[_T]]) -> _T:
    global _requests
    before_commands = await commands(redis)
    _requests = 0
    result = await step()
    trips = _requests
    ran = await commands(redis) - before_commands - 1  # the INFO just above
    print(
        f"  {label:<8} {trips:5d} round trips = {trips / n:6.3f} per delivery; "
        f"{ran / n:5.1f} commands per delivery"
    )
    return result


def deliveries(kind: str, n: int) -> list[Delivery]:
    transactional = kind == "fee.statement"
    event = EventCore(
        event_id=f"{kind}-1",
        app="campus",
        type=kind,
        template="fee_due" if transactional else "campus_notice",
        category="transactional" if transactional else "notice",
        data={
            "amount": "¥100",
            "due_date": "2026-12-01",
            "term": "Autumn",
            "headline": "Hours",
            "body": "Open",
        },
    )
    return [
        Delivery(message_id=message_id_for("campus", event.event_id, f"u{i}"), user_id=f"u{i}", event=event)
        for i in range(n)
    ]


async def run(settings: Settings, n: int) -> None:
    redis = open_redis(settings.redis)
    await UserDirectory(redis).upsert(
        [User(user_id=f"u{i}", bindings={"inbox": f"u{i}", "email": f"u{i}@bench.example"}) for i in range(n)]
    )
    await AppRegistry(redis).register("campus", {"inbox", "email"})
    flow = build_flow(settings)
    stages = flow.stages
    AbstractConnection.send_packed_command = _counted  # type: ignore[method-assign]
    for kind, label in (
        ("campus.notice", "campus notice (inbox)"),
        ("fee.statement", "fee statement (email+inbox)"),
    ):
        print(f"{label}, a batch of {n}:")
        batch = deliveries(kind, n)
        decided = await measured("decide", n, redis, lambda b=batch: stages.decide.handle(b))  # type: ignore[misc]
        sent = await measured("send", n, redis, lambda d=decided: stages.send.handle(d.dispatches))  # type: ignore[misc]
        receipts = [*decided.receipts, *sent.receipts]
        await measured("track", n, redis, lambda r=receipts: stages.track.handle(r))  # type: ignore[misc]
    AbstractConnection.send_packed_command = _send  # type: ignore[method-assign]
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalSmtpServer() as smtp:
        var = Path(tmp)
        server = LocalRedis(port=free_port(), log_path=var / "redis.log", data_dir=var / "redis")
        server.start()
        try:
            settings = Settings(
                redis=server.url,
                var_dir=var,
                env="dev",
                rules=RULES,
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                app_id="bench-trips",
            )
            asyncio.run(run(settings, args.batch))
        finally:
            server.stop()


if __name__ == "__main__":
    main()

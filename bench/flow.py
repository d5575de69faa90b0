"""Deliveries per second through the whole flow on the local parts, in one worker process.

Starts its own broker and Redis on free loopback ports and loads N users. Then it times three loads,
each from the first produce until every receipt is in ClickHouse: one campus-wide event (one inbox
delivery per user), K individual statements (email to a local SMTP server, plus inbox) and K fee
notices (inbox, with the rule's fallback chain armed in Redis for each); and, with `sms` among the
loads, K course reminders by SMS through the local HTTP SMS gateway peer (priced 0.05 a segment).
`--budget` puts every load under budgets (app-wide and per campaign, limits never reached), so each
send's cost is checked and counted.

For each load it prints wall rates and what the worker process spent: CPU time (utime + stime from
/proc/<pid>/stat, all its threads) per delivery and per send, its RSS peak so far (VmHWM), and the
Redis commands the whole flow ran per delivery (INFO commandstats, commands inside scripts included).
The rules are bench/flow_rules.yaml (the default rules' flows without pacing or quiet hours) unless
--rules names others.

Run: .venv/bin/python bench/flow.py [--users 5000] [--individual 1000] [--broadcast 100000]
     [--loads campus,individual,fees,sms] [--budget] [--no-tuning] [--rules rules/default.yaml]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from localparts import LocalParts, LocalSmtpServer, free_port
from localparts.peers.server import PeerServer
from localparts.peers.sms_gateway import STATE, create_app
from localparts.switchboard_process import SwitchboardProcess
from records.signing import signed_headers
from settings import Settings
from state.apps import AppRegistry
from state.budgets import Budget, BudgetStore
from state.connection import open_redis
from state.fallback import FallbackSchedule
from state.flow_counters import FlowCounters, caught_up
from state.users import User, UserDirectory


def users(n: int) -> list[User]:
    return [
        User(
            user_id=f"u{i}", name=f"User {i}",
            bindings={"inbox": f"u{i}", "email": f"u{i}@bench.example", "sms": f"+8613{i:09d}"},
        )
        for i in range(n)
    ]


def campus_notice(event_id: str, audience: dict[str, Any]) -> bytes:
    event = {
        "event_id": event_id,
        "app": "campus",
        "type": "campus.notice",
        "template": "campus_notice",
        "category": "notice",
        "audience": audience,
        "data": {"headline": "Library hours", "body": "Open until midnight during exams."},
    }
    return json.dumps(event).encode()


def fee_events(n: int, n_users: int, kind: str) -> list[bytes]:
    """Individual transactional events. With the default rules a `fee.statement` goes by email and
    to the inbox (rule fees-and-payments); a `fee.due` to the inbox with a fallback chain (fee-notices)."""
    return [
        json.dumps(
            {
                "event_id": f"{kind}-{i}",
                "app": "campus",
                "type": kind,
                "template": "fee_due",
                "category": "transactional",
                "audience": {"user_ids": [f"u{i % n_users}"]},
                "data": {"amount": "¥100", "due_date": "2026-12-01", "term": "Autumn"},
            }
        ).encode()
        for i in range(n)
    ]


def sms_reminders(n: int, n_users: int) -> list[bytes]:
    """Course reminders of campaign `autumn`: one SMS segment each (rule reminders-by-sms)."""
    return [
        json.dumps(
            {
                "event_id": f"reminder-{i}", "app": "campus", "type": "course.reminder",
                "template": "course_reminder", "category": "notice", "campaign": "autumn",
                "audience": {"user_ids": [f"u{i % n_users}"]},
                "data": {"course": "Linear Algebra", "starts_at": "10:00", "room": "B201"},
            }
        ).encode()
        for i in range(n)
    ]


SMS_SECRET = "bench-gateway-secret"  # noqa: S105 - the local peer's throwaway secret
SMS_PROVIDERS = """\
sms:
  - name: gateway
    kind: http-sms
    rate: {{per_second: 100000, burst: 100000}}
    options:
      url: {url}/sms
      secret: ${{BENCH_SMS_SECRET:-{secret}}}
      sender: BENCH
      cost_per_segment: 0.05
"""
BENCH_RULES = Path(__file__).with_name("flow_rules.yaml")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcessMeter:
    """CPU time and peak RSS of one process, read from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
        return (utime + stime) / CLOCK_TICKS

    def rss_peak_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0


async def redis_commands(redis: Redis) -> dict[str, int]:
    """Commands Redis has run, by name (INFO commandstats: every command, those inside scripts too)."""
    stats = await redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if isinstance(v, dict)}


STAGES = ("events", "deliveries", "decided", "dispatched", "sent_done", "receipts", "rows")


async def wait_caught_up(
    counters: FlowCounters, emitted: int, processes: list[SwitchboardProcess], timeline: bool = False
) -> None:
    """Poll until caught up, rows in ClickHouse included; with `timeline`, print each stage's counter
    once a second (shows the lag)."""
    last_print = 0.0
    while not caught_up(counts := await counters.read(), emitted):
        for process in processes:
            if not process.running:
                raise RuntimeError(process.log_tail())
        if timeline and time.monotonic() - last_print >= 1.0:
            last_print = time.monotonic()
            print("  " + "  ".join(f"{name}={counts.get(name, 0)}" for name in STAGES))
        await asyncio.sleep(0.05)


async def timed(
    label: str,
    payloads: list[bytes],
    settings: Settings,
    counters: FlowCounters,
    processes: list[SwitchboardProcess],
    meter: ProcessMeter,
    redis: Redis,
) -> None:
    """Produce the payloads, wait until every stage has caught up, print the rates and the worker's
    CPU per delivery and per send."""
    before = await counters.read()
    commands_before = await redis_commands(redis)
    cpu_before = meter.cpu_seconds()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    key = await AppRegistry(redis).signing_key("campus")  # every payload is the campus app's, signed
    started = time.perf_counter()
    try:
        acks = [
            await producer.send(settings.topic("events"), payload, headers=signed_headers(payload, str(key)))
            for payload in payloads
        ]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    await wait_caught_up(counters, before.get("events", 0) + len(payloads), processes, timeline=True)
    elapsed = time.perf_counter() - started
    cpu = meter.cpu_seconds() - cpu_before
    commands_after = await redis_commands(redis)
    by_name = {k: n - commands_before.get(k, 0) for k, n in commands_after.items()}
    commands = sum(by_name.values())
    after = await counters.read()
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in STAGES}
    deliveries, sends = max(delta["deliveries"], 1), max(delta["dispatched"], 1)
    print(
        f"{label}: {len(payloads)} events -> {delta['deliveries']} deliveries, {delta['dispatched']} sends, "
        f"{delta['rows']} rows in {elapsed:.2f}s = {len(payloads) / elapsed:,.0f} events/s, "
        f"{delta['deliveries'] / elapsed:,.0f} deliveries/s, {delta['dispatched'] / elapsed:,.0f} sends/s"
    )
    print(
        f"         worker CPU {cpu:.2f}s = {cpu * 1000 / deliveries:.3f} ms per delivery, "
        f"{cpu * 1000 / sends:.3f} ms per send, {cpu * 1000 / max(len(payloads), 1):.3f} ms per event; "
        f"RSS peak {meter.rss_peak_mb():.0f} MB; Redis {commands / deliveries:.1f} commands per delivery"
    )
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:8]
    print("         Redis per delivery: " + ", ".join(f"{k} {n / deliveries:.1f}" for k, n in top if n))


async def drive(
    settings: Settings,
    n_users: int,
    n_individual: int,
    loads: set[str],
    worker: SwitchboardProcess,
    service: SwitchboardProcess,
    budget: bool = False,
) -> None:
    redis = open_redis(settings.redis)
    directory = UserDirectory(redis)
    for start in range(0, n_users, 10_000):
        await directory.upsert(users(n_users)[start : start + 10_000])
    await AppRegistry(redis).register("campus", {"inbox", "email", "sms"})
    if budget:
        # Limits never reached: every send is checked and counted, none held back.
        store = BudgetStore(redis)
        await store.set(Budget(app="campus", period="month", limit_micros=10**15))
        await store.set(Budget(app="campus", campaign="autumn", period="day", limit_micros=10**15))
    counters = FlowCounters(redis)
    service.start()
    worker.start()
    processes = [worker, service]
    assert worker.pid is not None  # noqa: S101 - just started
    meter = ProcessMeter(worker.pid)
    print(f"worker pid {worker.pid} (profile it with: py-spy record --pid {worker.pid})", flush=True)

    async def run(label: str, payloads: list[bytes]) -> None:
        await timed(label, payloads, settings, counters, processes, meter, redis)

    # One event first, so joining the consumer group and start-up are not timed.
    await run("warm-up", [campus_notice("warm-up", {"user_ids": ["u0"]})])
    if "campus" in loads:
        await run(f"campus-wide (inbox, {n_users} users)", [campus_notice("all", {"all": True})])
    if "individual" in loads:
        await run("individual (email+inbox)", fee_events(n_individual, n_users, "fee.statement"))
    if "fees" in loads:
        await run("fee notices (inbox+fallback)", fee_events(n_individual, n_users, "fee.due"))
    if "sms" in loads:
        await run("course reminders (sms)", sms_reminders(n_individual, n_users))
    print(f"         fallback chains waiting in Redis: {await FallbackSchedule(redis).pending()}")
    await redis.aclose()


SMS_PEER = create_app(SMS_SECRET)


async def with_sms_peer(
    settings: Settings, var: Path, n_users: int, n_individual: int, loads: set[str], budget: bool
) -> None:
    """The SMS gateway peer serves in this process; the worker reaches it through the providers file."""
    async with PeerServer(SMS_PEER) as server:
        providers = var / "providers.yaml"
        providers.write_text(SMS_PROVIDERS.format(url=server.url, secret=SMS_SECRET))
        settings = settings.model_copy(update={"providers": providers})
        worker = SwitchboardProcess("worker", settings, var / "worker.log")
        # The analytics service writes ClickHouse; the timings include every row landing there.
        service = SwitchboardProcess("analytics", settings, var / "analytics.log")
        try:
            await drive(settings, n_users, n_individual, loads, worker, service, budget)
        finally:
            await asyncio.to_thread(worker.stop)
            await asyncio.to_thread(service.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--individual", type=int, default=1000)
    parser.add_argument(
        "--broadcast", type=int, default=0, help="users of the campus-wide load (sets --users at least to it)"
    )
    parser.add_argument("--loads", default="campus,individual,fees", help="which loads to time")
    parser.add_argument("--no-tuning", action="store_true", help="the worker without GC/logging tuning")
    parser.add_argument("--rules", type=Path, default=BENCH_RULES, help="rule file or folder")
    parser.add_argument("--budget", action="store_true", help="every load under (unreached) budgets")
    args = parser.parse_args()
    n_users = max(args.users, args.broadcast)
    loads = {name.strip() for name in args.loads.split(",") if name.strip()}
    # Stopped from outside, still stop the worker and the parts on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        with (
            LocalParts(var, kafka_port=free_port(), redis_port=free_port()) as parts,
            LocalSmtpServer() as smtp,
        ):
            settings = Settings(
                kafka=parts.kafka_url,
                redis=parts.redis_url,
                clickhouse=f"chdb://{var / 'clickhouse'}",
                var_dir=var,
                app_id="bench-flow",
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                env="dev",
                analytics_port=free_port(),
            )
            settings = settings.model_copy(
                update={"rules": args.rules.resolve(), "runtime_tuning": not args.no_tuning}
            )
            try:
                asyncio.run(with_sms_peer(settings, var, n_users, args.individual, loads, args.budget))
            finally:
                print(f"         SMS gateway peer received {len(SMS_PEER[STATE].received)} messages")
            print(f"         SMTP server received {smtp.count} emails")


if __name__ == "__main__":
    main()

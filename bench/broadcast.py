"""A broadcast to everyone, streamed, on the local parts: worker memory and CPU, and login codes
sent through the urgent lane in the middle of it.

Starts its own broker, Redis and SMTP server on free loopback ports, loads N inbox users (pipelined,
through `UserDirectory.upsert`), starts one worker (`bench/rules_broadcast.yaml`: a notice to the
inbox, a code by email) and emits one event to `all`. Reports the load time, the broadcast's wall
time, the worker's CPU per delivery and its RSS sampled every half second (peak and the last
sample). With `--codes K`, once a third of the audience is expanded it emits K login codes to the
urgent events topic, one every `--code-gap` seconds, and reports each code's time from emit to the
SMTP server (p50, p99, max). The analytics service is not started: the figures are the worker's.

Run: .venv/bin/python bench/broadcast.py [--users 1000000] [--codes 0]
     .venv/bin/python bench/broadcast.py --users 100000 --codes 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from localparts import LocalParts, LocalSmtpServer, free_port
from localparts.switchboard_process import SwitchboardProcess
from records.signing import events_signing_key, signed_headers
from settings import ROOT, Settings
from state.apps import AppRegistry
from state.broadcasts import BroadcastJobs
from state.connection import open_redis
from state.flow_counters import FlowCounters, caught_up
from state.users import User, UserDirectory

LOAD_BATCH = 10_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def notice(event_id: str) -> bytes:
    event = {
        "event_id": event_id,
        "app": "campus",
        "type": "campus.notice",
        "template": "campus_notice",
        "category": "notice",
        "audience": {"all": True},
        "data": {"headline": "Library hours", "body": "Open until midnight during exams."},
    }
    return json.dumps(event).encode()


def login_code(i: int, event_id: str = "") -> bytes:
    event = {
        "event_id": event_id or f"code-{i}",
        "app": "campus",
        "type": "login.code",
        "template": "verification_code",
        "category": "verification",
        "audience": {"user_ids": [f"code{i}"]},
        "data": {"code": f"{i:06d}", "minutes": 5},
    }
    return json.dumps(event).encode()


class Sampler:
    """The worker's resident memory every half second, and its CPU time (user + system)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.samples: list[int] = []

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self._pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self._pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    async def run(self) -> None:
        while True:
            self.samples.append(int(self.rss_mb()))
            await asyncio.sleep(0.5)


async def load_users(directory: UserDirectory, n: int, codes: int) -> float:
    started = time.perf_counter()
    for start in range(0, n, LOAD_BATCH):
        await directory.upsert(
            [
                User(user_id=f"u{i:07d}", bindings={"inbox": f"u{i:07d}"})
                for i in range(start, min(n, start + LOAD_BATCH))
            ]
        )
    await directory.upsert(
        # code0 takes the warm-up code too, so there is one even without `--codes`.
        [User(user_id=f"code{i}", bindings={"email": f"code{i}@bench.example"}) for i in range(max(1, codes))]
    )
    return time.perf_counter() - started


async def emit_codes(
    producer: AIOKafkaProducer, topic: str, jobs: BroadcastJobs, n: int, gap: float, signing_key: str
) -> dict[str, float]:
    """Once a third of the audience is expanded, K codes one `gap` apart; returns emit time per address."""
    while (job := await jobs.get("campus/broadcast")) is None or job.expanded < job.total // 3:  # noqa: ASYNC110 - polling Redis
        await asyncio.sleep(0.1)
    emitted: dict[str, float] = {}
    for i in range(n):
        emitted[f"code{i}@bench.example"] = time.time()
        code = login_code(i)
        await producer.send_and_wait(topic, code, key=b"campus", headers=signed_headers(code, signing_key))
        await asyncio.sleep(gap)
    return emitted


async def drive(
    settings: Settings, args: argparse.Namespace, smtp: LocalSmtpServer, worker: SwitchboardProcess
) -> None:
    redis = open_redis(settings.redis)
    directory = UserDirectory(redis)
    load_time = await load_users(directory, args.users, args.codes)
    loaded = f"loaded {args.users:,} users (+{max(1, args.codes)} for codes) into Redis in {load_time:.1f}s"
    print(loaded, flush=True)
    signing_key = events_signing_key(await AppRegistry(redis).register("campus", {"inbox", "email"}))
    counters, jobs = FlowCounters(redis), BroadcastJobs(redis)
    worker.start()
    if worker.pid is None:
        raise RuntimeError("the worker did not start")
    sampler = Sampler(worker.pid)
    sampling = asyncio.create_task(sampler.run())
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    try:
        # One event first, so joining the consumer group and start-up are not timed.
        warm_up, broadcast = login_code(0, "warm-up"), notice("broadcast")
        await producer.send_and_wait(settings.topic("events"), warm_up, key=b"campus",
                                     headers=signed_headers(warm_up, signing_key))
        while not caught_up(await counters.read(), 1, analytics=False) or smtp.count < 1:
            await _alive(worker)
        smtp.clear()
        cpu_before, started = sampler.cpu_seconds(), time.perf_counter()
        await producer.send_and_wait(settings.topic("events"), broadcast, key=b"campus",
                                     headers=signed_headers(broadcast, signing_key))
        coding = asyncio.create_task(
            emit_codes(
                producer, settings.topic("events.urgent"), jobs, args.codes, args.code_gap, signing_key
            )
        )
        last = 0.0
        while (
            not caught_up(counts := await counters.read(), 2 + args.codes, analytics=False)
            or not coding.done()
        ):
            await _alive(worker)
            if time.perf_counter() - last >= args.every:
                last = time.perf_counter()
                job = await jobs.get("campus/broadcast")
                expanded = job.expanded if job else 0
                print(
                    f"  {time.perf_counter() - started:7.1f}s expanded {expanded:>9,}  "
                    f"decided {counts.get('decided', 0):>9,}  sent {counts.get('sent_done', 0):>9,}  "
                    f"worker RSS {sampler.rss_mb():6.0f} MB",
                    flush=True,
                )
        elapsed = time.perf_counter() - started
        cpu = sampler.cpu_seconds() - cpu_before
        emitted = coding.result()
    finally:
        await producer.stop()
        sampling.cancel()
    after = await counters.read()
    job = await jobs.get("campus/broadcast")
    deliveries = job.expanded if job else 0
    print(
        f"broadcast to {deliveries:,} inboxes: {elapsed:.1f}s wall, "
        f"{deliveries / elapsed:,.0f} deliveries/s, "
        f"worker CPU {cpu:.1f}s = {1000 * cpu / max(1, deliveries):.3f} ms per delivery "
        f"(codes included), counters {after}"
    )
    print(
        f"worker RSS: peak {max(sampler.samples)} MB, last {sampler.samples[-1]} MB, "
        f"{len(sampler.samples)} samples (every 0.5 s)"
    )
    if emitted:
        arrived = {r: mail.received_at for mail in smtp.messages for r in mail.rcpt_tos}
        latencies = sorted(arrived[a] - t for a, t in emitted.items() if a in arrived)
        missing = len(emitted) - len(latencies)
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        print(
            f"login codes emitted mid-broadcast: {len(latencies)} at the SMTP server ({missing} missing), "
            f"emit to SMTP p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"max {latencies[-1] * 1000:.0f} ms"
        )
    await redis.aclose()


async def _alive(worker: SwitchboardProcess) -> None:
    if not worker.running:
        raise RuntimeError(worker.log_tail())
    await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--codes", type=int, default=0, help="login codes emitted mid-broadcast")
    parser.add_argument("--code-gap", type=float, default=0.2, help="seconds between codes")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--page", type=int, default=1000, help="SWITCHBOARD_BROADCAST_PAGE")
    parser.add_argument("--backlog", type=int, default=20_000, help="SWITCHBOARD_BROADCAST_BACKLOG")
    args = parser.parse_args()
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
                app_id="bench-broadcast",
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                env="dev",
                rules=ROOT / "bench" / "rules_broadcast.yaml",
                broadcast_page=args.page,
                broadcast_backlog=args.backlog,
            )
            worker = SwitchboardProcess("worker", settings, var / "worker.log")
            try:
                asyncio.run(drive(settings, args, smtp, worker))
            finally:
                worker.stop()


if __name__ == "__main__":
    main()

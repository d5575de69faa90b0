"""Bench: sends per second through the channel base, and memory per thousand in-flight sends.

One send, as the send stage does it: claim in the SendLedger (Redis SET NX) → `deliver` (retries) →
ProviderChain → token bucket (Redis Lua, rate set high so it grants) → HttpSmsGateway (HMAC-signed
JSON) → the local gateway peer in its own process → ledger records the outcome. The "adapter alone"
rows call the adapter directly, so the difference is what the base costs.

Memory: the peer holds every request until N are in flight, then the client's traced Python memory
(tracemalloc) and RSS growth over the idle baseline are divided by N.

Run: .venv/bin/python bench/send.py [--sends 1000] [--concurrency 1,16,64,256] [--held 1000,5000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from aiohttp import web
from pydantic import SecretStr
from redis.asyncio import BlockingConnectionPool, Redis

from channels.base import ChannelDeps, RetryPolicy, deliver
from channels.failover import ProviderChain, Rate, Route
from channels.sms_gateway import HttpSmsGateway, HttpSmsGatewayOptions
from channels.templates import RenderedMessage
from localparts.process import free_port
from localparts.redis_server import LocalRedis
from records.topics import Dispatch, EventCore
from state.idempotency import SendLedger
from state.rate_limit import TokenBucket

SECRET = "bench-gateway-secret"  # noqa: S105 - the local peer's throwaway key
MESSAGE = RenderedMessage(template="fee_due", channel="sms", text="Your fee of 4,800 CNY is due Friday.")
EVENT = EventCore(event_id="bench", app="bursar", type="fee.due", template="fee_due", category="notice")
HOLD = web.AppKey("hold", dict)
RAMP = 250
LEDGER_SLOTS = 64


def serve_peer(port: int) -> None:
    """The gateway peer, plus /hold, /held and /release so the bench can keep requests in flight."""
    from localparts.peers.sms_gateway import create_app

    app = create_app(SECRET)
    app[HOLD] = {"gate": None, "held": 0}

    @web.middleware
    async def holding(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        hold = request.app[HOLD]
        gate = hold["gate"]
        if gate is not None and request.path == "/sms":
            hold["held"] += 1
            try:
                await gate.wait()
            finally:
                hold["held"] -= 1
        return await handler(request)

    async def start_hold(request: web.Request) -> web.Response:
        request.app[HOLD]["gate"] = asyncio.Event()
        return web.json_response({})

    async def held(request: web.Request) -> web.Response:
        return web.json_response({"held": request.app[HOLD]["held"]})

    async def release(request: web.Request) -> web.Response:
        gate = request.app[HOLD]["gate"]
        request.app[HOLD]["gate"] = None
        if gate is not None:
            gate.set()
        return web.json_response({})

    app.middlewares.append(holding)
    app.router.add_post("/hold", start_hold)
    app.router.add_get("/held", held)
    app.router.add_post("/release", release)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=8192)


def dispatches(prefix: str, count: int) -> list[Dispatch]:
    return [
        Dispatch(message_id=f"{prefix}-{i}", user_id=f"u{i}", channel="sms", address=f"+4477009{i:05d}",
                 event=EVENT, rule_id="bench", rule_version="1")
        for i in range(count)
    ]


class Bench:
    def __init__(self, peer_url: str, redis: Redis, http: httpx.AsyncClient) -> None:
        options = HttpSmsGatewayOptions(url=f"{peer_url}/sms", secret=SecretStr(SECRET), timeout=300.0)
        self.adapter = HttpSmsGateway.from_options(options, ChannelDeps(http=http, redis=redis))
        route = Route("gateway", self.adapter, 1, Rate(1e6, 1e6))  # high: the bucket always grants
        self.chain = ProviderChain("sms", [route], TokenBucket(redis))
        self.ledger = SendLedger(redis, ttl_seconds=3600)
        self.retry = RetryPolicy()
        self.ledger_slots = asyncio.Semaphore(LEDGER_SLOTS)

    async def through_base(self, dispatch: Dispatch) -> bool:
        async with self.ledger_slots:
            if not await self.ledger.claim(dispatch.message_id, dispatch.channel, dispatch.step):
                return False
        outcome = await deliver(self.chain, MESSAGE, dispatch.address, dispatch, self.retry)
        async with self.ledger_slots:  # thousands released at once must not open thousands of connections
            await self.ledger.mark_done(dispatch.message_id, dispatch.channel, dispatch.step, outcome.status)
        return outcome.ok

    async def adapter_alone(self, dispatch: Dispatch) -> bool:
        await self.adapter.send(MESSAGE, dispatch.address, dispatch)
        return True


async def throughput(send: Callable[[Dispatch], Awaitable[bool]], work: list[Dispatch],
                     concurrency: int) -> tuple[float, float, float, float, int]:
    """(sends/s, p50 ms, p99 ms, client CPU ms per send, failures) for `concurrency` senders."""
    queue = list(reversed(work))
    latencies: list[float] = []
    failures = 0

    async def sender() -> None:
        nonlocal failures
        while queue:
            dispatch = queue.pop()
            began = time.perf_counter()
            if not await send(dispatch):
                failures += 1
            latencies.append(time.perf_counter() - began)

    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    cuts = statistics.quantiles(latencies, n=100)
    return len(work) / elapsed, cuts[49] * 1000, cuts[98] * 1000, cpu / len(work) * 1000, failures


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def in_flight_memory(redis: Redis, control: httpx.AsyncClient, peer_url: str, count: int,
                           traced: bool) -> float:
    """KiB per thousand sends held in flight at the peer: traced Python memory, or RSS growth.

    Separate passes: tracemalloc's own bookkeeping would inflate the RSS figure. Each step of RAMP
    sends has its own HTTP client (counted): httpcore's pool scans every connection for every queued
    request (encode/httpcore#1035), so 5000 on one client would take CPU-hours, not memory.
    """
    await control.post(f"{peer_url}/hold")
    gc.collect()
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] / 1024 if traced else rss_kib()
    work = dispatches(f"held{count}{traced}", count)
    tasks: list[asyncio.Future[bool]] = []
    clients: list[httpx.AsyncClient] = []
    for start in range(0, count, RAMP):
        # In steps, as a worker's stream would fill them: all at once, the last would wait longer for
        # a Redis connection than the pool allows on a busy machine.
        clients.append(httpx.AsyncClient(limits=httpx.Limits(max_connections=RAMP)))
        bench = Bench(peer_url, redis, clients[-1])
        tasks += [asyncio.ensure_future(bench.through_base(d)) for d in work[start:start + RAMP]]
        # The peer is another process: polling it is the only way to know they are in flight.
        while (await control.get(f"{peer_url}/held")).json()["held"] < len(tasks):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    gc.collect()
    grown = (tracemalloc.get_traced_memory()[0] / 1024 if traced else rss_kib()) - before
    if traced:
        tracemalloc.stop()
    await control.post(f"{peer_url}/release")
    results = await asyncio.gather(*tasks)
    await asyncio.gather(*(client.aclose() for client in clients))
    if not all(results):
        raise RuntimeError(f"{results.count(False)} held sends failed")
    return grown / count * 1000


async def run(args: argparse.Namespace, peer_url: str, redis_url: str) -> None:
    most = max([*args.concurrency, 1]) + 16
    # A blocking pool as the worker's (state.connection), never exhausted: past its size redis-py's
    # pool convoys (every release queues behind every waiter), which would measure the pool instead.
    connections = max([*args.concurrency, RAMP]) + LEDGER_SLOTS + 16
    # No wait limit: thousands of held sends released at once keep the loop busy for a while.
    redis = Redis(connection_pool=BlockingConnectionPool.from_url(
        redis_url, max_connections=connections, timeout=None))
    await asyncio.gather(*(redis.ping() for _ in range(connections)))  # opened before any measure
    limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
    async with httpx.AsyncClient(limits=limits) as http, httpx.AsyncClient() as control:
        bench = Bench(peer_url, redis, http)
        await throughput(bench.through_base, dispatches("warm", 200), 16)
        print(f"{'path':<14} {'concurrent':>10} {'sends':>6} {'sends/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'CPU ms/send':>11}")
        for concurrency in args.concurrency:
            for label, send in (("adapter alone", bench.adapter_alone), ("through base", bench.through_base)):
                work = dispatches(f"{label[:4]}{concurrency}", args.sends)
                rate, p50, p99, cpu, failed = await throughput(send, work, concurrency)
                note = f"  ({failed} failed)" if failed else ""
                print(f"{label:<14} {concurrency:>10} {args.sends:>6} {rate:>8.0f} {p50:>7.1f} {p99:>7.1f} "
                      f"{cpu:>11.2f}{note}")
        print()
        print(f"{'held in flight':>14} {'RSS KiB/1000':>13} {'traced KiB/1000':>16}")
        for count in args.held:
            rss = await in_flight_memory(redis, control, peer_url, count, traced=False)
            traced = await in_flight_memory(redis, control, peer_url, count, traced=True)
            print(f"{count:>14} {rss:>13.0f} {traced:>16.0f}")
    await redis.aclose()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so `finally` stops Redis and the peer
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sends", type=int, default=1000, help="sends per row")
    numbers: Callable[[str], list[int]] = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    parser.add_argument("--concurrency", type=numbers, default=[1, 16, 64, 256])
    parser.add_argument("--held", type=numbers, default=[1000, 5000])
    args = parser.parse_args()

    port = free_port()
    peer = multiprocessing.get_context("spawn").Process(target=serve_peer, args=(port,), daemon=True)
    peer.start()
    with tempfile.TemporaryDirectory(prefix="bench-send-") as folder:
        redis = LocalRedis(port=free_port(), log_path=Path(folder) / "redis.log",
                           data_dir=Path(folder) / "redis")
        redis.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/held", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            asyncio.run(run(args, f"http://127.0.0.1:{port}", redis.url))
        finally:
            redis.stop()
            peer.terminate()
            peer.join(timeout=10)
            if peer.is_alive():  # still draining held requests
                peer.kill()


if __name__ == "__main__":
    main()

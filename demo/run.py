"""The demo: the whole flow on the local parts, with a sample university, ending in a reach report
that is checked against what the SMTP server and the inboxes actually hold."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from analytics.connection import READER_USER, open_reader
from analytics.report import NO_CHANNEL, ReachReport, print_table, reach_report
from demo.events import DEMO_APPS, DemoEvent, demo_events
from demo.organisation import generate_university, write_csv
from demo.peers import DemoPeers
from localparts.smtp_server import LocalSmtpServer
from localparts.supervisor import LocalParts
from localparts.switchboard_process import SwitchboardProcess
from records.signing import events_signing_key, signed_headers
from records.topics import Event, Lane, lane_of, lane_topic
from settings import Settings
from state.apps import AppRegistry
from state.broadcasts import BroadcastJobs
from state.connection import open_redis
from state.flow_counters import FlowCounters, caught_up
from state.inbox import Inbox
from state.operators import OperatorStore
from state.schedule import DeliverySchedule, ParkedDispatches
from state.users import UserDirectory
from state.users_import import import_users

# Wide enough for the report table also when the output is not a terminal (CI logs, pipes).
console = Console(width=None if sys.stdout.isatty() else 120)

READ_SHARE = 0.35  # of inbox recipients who open their inbox during the demo
CLICK_SHARE = 0.3  # of those readers who also click the link
FLOW_TIMEOUT = 600.0
# Deliveries deferred by less than this (pacing, a cap's next slot) are waited for; longer ones (quiet
# hours, best time, fallback steps hours away) stay scheduled and show as `deferred` in the report.
SOON = 60.0


@dataclass
class Engagement:
    """What the demo did beyond emitting: the bad events it sent, the reads and clicks it made."""

    dead_letters: int = 0
    reads: int = 0
    clicks: int = 0
    callbacks: int = 0
    """Delivery reports the WeChat peer pushed back to the API's callback endpoint."""


def run_demo(settings: Settings, size: int = 5000, keep_running: bool = False) -> int:
    """Returns the process exit status: 0 when the report agrees with what was really delivered."""
    run_dir = settings.var_dir / "demo"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    run = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    demo = settings.model_copy(
        update={
            "topic_prefix": f"demo{run}.",
            "app_id": f"switchboard-demo-{run}",
            "clickhouse": f"chdb://{run_dir / 'clickhouse'}",
            # Local by definition: links are signed with a key kept in var_dir unless one is given.
            "env": "dev",
        }
    )
    # Stopped from outside (SIGTERM), still stop the children and the parts on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parts = LocalParts.from_settings(demo)
    console.rule("[bold]Switchboard demo")
    console.print("starting the local parts (Kafka-protocol broker, Redis, SMTP server) on loopback…")
    parts.up()
    smtp = LocalSmtpServer(demo.smtp_host, demo.smtp_port)
    smtp.start()
    console.print(
        "starting the providers' local peers (Aliyun and Tencent SMS, an SMS gateway, FCM, APNs over "
        "HTTP/2, JPush, WeChat, DingTalk/WeCom/Feishu robots)…"
    )
    peers = DemoPeers(run_dir / "peers", demo.public_url, demo.templates)
    # The worker and API inherit this environment: it switches on the providers of providers.yaml.
    os.environ.update(peers.start())
    service = SwitchboardProcess("analytics", demo, run_dir / "analytics.log")
    worker = SwitchboardProcess("worker", demo, run_dir / "worker.log")
    api = SwitchboardProcess("api", demo, run_dir / "api.log")
    try:
        engagement = asyncio.run(_drive(demo, size, run_dir, service, worker, api, smtp, peers))
        if not keep_running:
            api.stop()
        if worker.stop() not in (0, None):
            console.print(f"[red]the worker exited badly; its log:[/]\n{worker.log_tail()}")
            return 1
        # Read live through the analytics service's HTTP interface, as analysts do.
        report = reach_report(open_reader(demo))
        print_table(report, console)
        _how_to_connect(demo)
        inbox_total = asyncio.run(_inbox_total(demo))
        return _cross_check(report, smtp.count, inbox_total, engagement, peers.received())
    except RuntimeError as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        return 1
    finally:
        if keep_running and api.running:
            _console_login(demo, api)
        else:
            api.stop()
        worker.stop()
        if keep_running and service.running:
            console.print(f"the analytics service keeps serving; stop it with `kill {service.pid}`")
        else:
            service.stop()
        smtp.stop()
        peers.stop()
        if keep_running:
            console.print("local parts left running; stop them with `switchboard parts down`")
        else:
            parts.down()


async def _drive(
    settings: Settings,
    size: int,
    run_dir: Path,
    service: SwitchboardProcess,
    worker: SwitchboardProcess,
    api: SwitchboardProcess,
    smtp: LocalSmtpServer,
    peers: DemoPeers,
) -> Engagement:
    redis = open_redis(settings.redis)
    try:
        await redis.flushdb()  # the demo owns its local Redis: start from nothing
        users = generate_university(size=size)
        csv_path = run_dir / "university.csv"
        write_csv(users, csv_path)
        imported = await import_users(csv_path, UserDirectory(redis))
        console.print(f"imported {imported.imported} people from {csv_path} ({imported.rejected} rejected)")
        registry = AppRegistry(redis)
        keys = {
            name: await registry.register(name, set(channels), "demo app")
            for name, channels in DEMO_APPS.items()
        }
        console.print(f"registered apps: {', '.join(sorted(keys))}")

        service.start()
        worker.start()
        api.start()
        await _wait_healthy(settings, api)
        events = demo_events(users, datetime.now(UTC))
        await _emit(settings, events, keys)
        counters = FlowCounters(redis)
        soon = _SoonDue(redis)
        broadcasts = BroadcastJobs(redis)
        await _follow(counters, soon, broadcasts, len(events), worker, service)
        engagement = await _engage(settings, redis, keys, users_with_inbox=[u.user_id for u in users])
        engagement.dead_letters = sum(e.outcome == "dead_letter" for e in events)
        # The API counts the receipts it publishes (reads, clicks, the WeChat peer's delivery reports).
        await _follow(counters, soon, broadcasts, len(events), worker, service)
        engagement.callbacks = peers.wechat_reports()
        console.print(f"SMTP server received {smtp.count} emails; provider peers received {peers.received()}")
        return engagement
    finally:
        await redis.aclose()


API_START_TIMEOUT = 60.0


async def _wait_healthy(settings: Settings, api: SwitchboardProcess) -> None:
    deadline = time.monotonic() + API_START_TIMEOUT
    async with httpx.AsyncClient(base_url=f"http://{settings.api_host}:{settings.api_port}") as client:
        while time.monotonic() < deadline:
            if not api.running:
                raise RuntimeError(f"the API exited; its log:\n{api.log_tail()}")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(
        f"the API did not become healthy in {API_START_TIMEOUT:.0f}s; its log:\n{api.log_tail()}"
    )


async def _emit(settings: Settings, events: list[DemoEvent], keys: dict[str, str]) -> None:
    """Business systems speak both ways: some events through the HTTP API, some straight to Kafka."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    refused: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://{settings.api_host}:{settings.api_port}") as client:
            for event in events:
                if event.via == "http":
                    answer = await client.post(
                        "/v1/events",
                        content=event.body,
                        headers={
                            "Authorization": f"Bearer {keys[event.app]}",
                            "Content-Type": "application/json",
                        },
                    )
                    if answer.status_code != 202:
                        refused.append(f"{event.description}: HTTP {answer.status_code} {answer.text[:200]}")
                else:
                    topic = settings.topic(lane_topic("events", _lane(event.body)))
                    # Signed as its app would sign it; an event of an app the demo did not register goes
                    # unsigned, as a stranger's would, and is dead-lettered.
                    key = keys.get(event.app)
                    headers = signed_headers(event.body, events_signing_key(key)) if key else None
                    await producer.send_and_wait(topic, event.body, key=event.key.encode(), headers=headers)
    finally:
        await producer.stop()
    for description, count in Counter(_kind(e) for e in events).items():
        console.print(f"  emitted {count:>4} × {description}")
    if refused:
        raise RuntimeError("the API refused demo events:\n" + "\n".join(refused))


def _lane(body: bytes) -> Lane:
    """The lane a producer writes an event to, as the API does; a bad event goes to bulk (refused there)."""
    try:
        return lane_of(Event.model_validate_json(body))
    except ValueError:
        return "bulk"


def _kind(event: DemoEvent) -> str:
    # Course reminders go to one student each; show them as one line, not three hundred.
    subject = event.description.split(" for ")[0] if event.app == "lms" else event.description
    return f"{subject} ({event.app}, via {'HTTP API' if event.via == 'http' else 'Kafka'})"


class _SoonDue:
    """Scheduled work falling due within `SOON`: paced deliveries, dispatches parked for a cap."""

    def __init__(self, redis: Redis) -> None:
        self._schedules = (DeliverySchedule(redis), ParkedDispatches(redis))

    async def count(self) -> int:
        return sum([await schedule.due_within(SOON) for schedule in self._schedules])


async def _follow(
    counters: FlowCounters,
    soon: _SoonDue,
    broadcasts: BroadcastJobs,
    emitted: int,
    worker: SwitchboardProcess,
    service: SwitchboardProcess,
) -> None:
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    deadline = time.monotonic() + FLOW_TIMEOUT
    broadcast_bars: dict[str, TaskID] = {}
    with Progress(*columns, console=console) as progress:
        bars = {
            name: progress.add_task(label, total=None)
            for name, label in (
                ("events", "events ingested"),
                ("decided", "deliveries decided"),
                ("sent_done", "messages sent"),
                ("rows", "rows in ClickHouse"),
            )
        }
        while True:
            counts = await counters.read()
            totals = {
                "events": emitted,
                "decided": counts.get("deliveries", 0),
                "sent_done": counts.get("dispatched", 0),
                "rows": counts.get("receipts", 0),
            }
            for name, task in bars.items():
                progress.update(task, completed=counts.get(name, 0), total=totals[name])
            await _broadcast_bars(progress, broadcast_bars, broadcasts)
            if caught_up(counts, emitted) and await soon.count() == 0:
                return
            for process in (worker, service):
                if not process.running:
                    raise RuntimeError(f"the {process.role} process exited; its log:\n{process.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the flow did not finish in {FLOW_TIMEOUT:.0f}s; counters: {counts}")
            await asyncio.sleep(0.25)


async def _broadcast_bars(progress: Progress, bars: dict[str, TaskID], jobs: BroadcastJobs) -> None:
    """One bar per broadcast (an event to all, tags or a segment): recipients expanded of the estimate;
    it ends at the count reached, which is below the estimate when tags overlap."""
    for job in reversed(await jobs.recent(20)):
        if job.job_id not in bars:
            bars[job.job_id] = progress.add_task(f"  ↳ {job.event.event_id}"[:22], total=job.total)
        total = job.expanded if job.done else max(job.total, job.expanded)
        progress.update(bars[job.job_id], completed=job.expanded, total=total)


EXAMPLE_QUERY = (
    "SELECT channel, status, uniqExact(message_id) AS messages FROM message_events "
    "GROUP BY channel, status ORDER BY messages DESC"
)


def _how_to_connect(settings: Settings) -> None:
    """Analysts query the same data live with their own tools; the password is read from its file,
    never printed."""
    url = f"http://{settings.analytics_host}:{settings.analytics_port}"
    password_file = settings.var_dir / "analytics_password"
    console.print(f"\n[bold]Query it live[/] (ClickHouse HTTP interface of `switchboard analytics`, {url}):")
    console.print(
        f"  curl -u \"{READER_USER}:$(cat {password_file})\" '{url}/' "
        f"--data-binary \"{EXAMPLE_QUERY} FORMAT PrettyCompact\"",
        soft_wrap=True,
    )
    console.print(
        f"  .venv/bin/python -c \"import clickhouse_connect; c = clickhouse_connect.get_client(host="
        f"'{settings.analytics_host}', port={settings.analytics_port}, username='{READER_USER}', "
        f"password=open('{password_file}').read().strip()); print(c.query_df('{EXAMPLE_QUERY}'))\"",
        soft_wrap=True,
    )


DEMO_OPERATOR = "demo"


def _console_login(settings: Settings, api: SwitchboardProcess) -> None:
    """The API keeps serving the console: an administrator `demo` with a new random password, written
    to a file only its owner reads (never printed, as the analytics password)."""
    password = secrets.token_urlsafe(18)
    while DEMO_OPERATOR in password.lower():  # the policy refuses a password holding the name
        password = secrets.token_urlsafe(18)
    password_file = settings.var_dir / "console_password"
    password_file.touch(mode=0o600, exist_ok=True)
    password_file.chmod(0o600)
    password_file.write_text(password + "\n")
    asyncio.run(_demo_operator(settings, password))
    address = f"http://{settings.api_host}:{settings.api_port}/console/"
    console.print(f"\n[bold]The console[/] (the API keeps serving; stop it with `kill {api.pid}`): {address}")
    console.print(f"  log in as {DEMO_OPERATOR!r} (an administrator) with the password in {password_file}:")
    console.print(f"  cat {password_file}", soft_wrap=True)


async def _demo_operator(settings: Settings, password: str) -> None:
    redis = open_redis(settings.redis)
    try:
        operators = OperatorStore(redis)
        if await operators.find(DEMO_OPERATOR) is None:
            await operators.create(DEMO_OPERATOR, password, grants=["administrator"], display_name="Demo",
                                   locale="zh")
        else:
            await operators.set_password(DEMO_OPERATOR, password)
    finally:
        await redis.aclose()


async def _engage(
    settings: Settings, redis: Redis, keys: dict[str, str], users_with_inbox: list[str]
) -> Engagement:
    """Students open the campus app: some read their newest message, some click its link. The app's
    backend mints each signed-in student a token (`POST /v1/user-tokens`), with which they reach their
    own inbox: the app's key reaches no inbox."""
    inbox = Inbox(redis, settings.inbox_max_per_user)
    rng = random.Random(7)
    readers = [u for u in users_with_inbox if rng.random() < READ_SHARE]
    engagement = Engagement()
    app_key = {"Authorization": f"Bearer {next(iter(keys.values()))}"}
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(
        base_url=f"http://{settings.api_host}:{settings.api_port}",
        limits=limits,
    ) as client:

        async def open_inbox(user_id: str) -> None:
            newest = await inbox.list(user_id, limit=1)
            if not newest:
                return
            minted = await client.post("/v1/user-tokens", json={"user_id": user_id, "ttl_seconds": 600},
                                       headers=app_key)
            minted.raise_for_status()
            headers = {"Authorization": f"Bearer {minted.json()['token']}"}
            message_id = newest[0].message_id
            read = await client.post(f"/v1/inbox/{user_id}/{message_id}/read", headers=headers)
            if read.status_code == 200:
                engagement.reads += 1
            if rng.random() < CLICK_SHARE:
                clicked = await client.post(f"/v1/inbox/{user_id}/{message_id}/click", headers=headers)
                engagement.clicks += clicked.status_code == 200

        for start in range(0, len(readers), 50):
            await asyncio.gather(*(open_inbox(u) for u in readers[start : start + 50]))
    console.print(
        f"{engagement.reads} people read an inbox message through the API, {engagement.clicks} clicked"
    )
    return engagement


async def _inbox_total(settings: Settings) -> int:
    redis = open_redis(settings.redis)
    try:
        inbox = Inbox(redis, settings.inbox_max_per_user)
        ids = await UserDirectory(redis).all_ids()
        return sum([await inbox.total(u) for u in ids])
    finally:
        await redis.aclose()


def _cross_check(
    report: ReachReport,
    emails_received: int,
    inbox_total: int,
    engagement: Engagement,
    providers_received: dict[str, int],
) -> int:
    """The report is only worth showing if it matches reality; say where it does not."""
    email, inbox, unrouted = report.row("email"), report.row("inbox"), report.row(NO_CHANNEL)
    wechat = report.row("wechat_oa").sent + report.row("wechat_mp").sent
    wechat_delivered = report.row("wechat_oa").delivered + report.row("wechat_mp").delivered
    checks = [
        ("SMS sent (ClickHouse) = messages the SMS providers' peers accepted", report.row("sms").sent,
         providers_received["sms"]),
        ("push sent (ClickHouse) = pushes FCM, APNs and JPush peers accepted", report.row("push").sent,
         providers_received["push"]),
        ("WeChat sent (ClickHouse) = messages the WeChat peer accepted", wechat,
         providers_received["wechat"]),
        ("WeChat delivered (ClickHouse) = delivery reports the WeChat peer pushed back", wechat_delivered,
         engagement.callbacks),
        ("robot posts (ClickHouse) = posts the robot peers accepted", report.row("robot").sent,
         providers_received["robot"]),
        ("emails sent (ClickHouse) = emails the SMTP server received", email.sent, emails_received),
        ("inbox delivered (ClickHouse) = messages in the inboxes (Redis)", inbox.delivered, inbox_total),
        ("inbox read (ClickHouse) = reads made through the API", inbox.read, engagement.reads),
        ("inbox clicked (ClickHouse) = clicks made through the API", inbox.clicked, engagement.clicks),
        (
            "dead-lettered (ClickHouse) = malformed events emitted",
            unrouted.dead_lettered,
            engagement.dead_letters,
        ),
    ]
    failures = 0
    for label, reported, actual in checks:
        if reported == actual:
            console.print(f"[green]✔[/] {label}: {reported}")
        else:
            failures += 1
            console.print(f"[red]✘[/] {label}: report says {reported}, reality is {actual}")
    console.print(
        "[bold green]the report agrees with what was delivered"
        if not failures
        else f"[bold red]{failures} check(s) disagree"
    )
    return 0 if not failures else 1

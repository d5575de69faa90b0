"""The local parts really work: broker produce/consume, Redis on loopback, SMTP receipt, up/down."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from localparts import LocalBroker, LocalParts, LocalRedis, LocalSmtpServer, PartError, PartState, free_port
from localparts.process import port_accepts, read_cmdline

ROOT = Path(__file__).resolve().parents[2]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on port, read from /proc (no traffic to other addresses)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:
                if len(address) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    words = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, 32, 8))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


async def test_broker_carries_records_from_producer_to_consumer(local_parts: LocalParts) -> None:
    bootstrap = local_parts.kafka_url.removeprefix("kafka://")
    topic = f"localparts-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(topic, json.dumps({"n": n}).encode(), key=b"user-1")
    finally:
        await producer.stop()

    # No consumer group: JoinGroup on Tansu waits half the session timeout, and Faust's tests cover groups.
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000, max_records=3)
        records = [record for batch in batches.values() for record in batch]
        while len(records) < 3:
            record = await consumer.getone()
            records.append(record)
    finally:
        await consumer.stop()
    assert [json.loads(r.value) for r in records] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert {r.key for r in records} == {b"user-1"}


async def test_redis_answers_and_listens_on_loopback_only(redis: Redis, local_parts: LocalParts) -> None:
    await redis.set("greeting", "你好", ex=60)
    assert (await redis.get("greeting")).decode() == "你好"
    config = await redis.config_get("*")
    assert config["bind"] == "127.0.0.1"
    assert config["protected-mode"] == "yes"
    assert config["appendonly"] == "yes"
    assert config["save"] == ""
    assert _listening_addresses(local_parts.redis.port) == {"127.0.0.1"}


async def test_broker_listens_on_loopback_only(local_parts: LocalParts) -> None:
    assert _listening_addresses(local_parts.broker.port) == {"127.0.0.1"}


async def test_smtp_server_keeps_what_it_receives(smtp: LocalSmtpServer) -> None:
    message = EmailMessage()
    message["From"] = "Switchboard <noreply@switchboard.local>"
    message["To"] = "li.lei@example.edu, han.meimei@example.edu"
    message["Subject"] = "选课提醒"
    message.set_content("明天 9:00 开始选课。")

    await aiosmtplib.send(message, hostname=smtp.host, port=smtp.port)

    (received,) = smtp.wait_for(1, timeout=5)
    assert smtp.count == 1
    assert smtp.recipients_count == 2
    assert received.mail_from == "noreply@switchboard.local"
    assert received.rcpt_tos == ("li.lei@example.edu", "han.meimei@example.edu")
    assert received.message["Subject"] == "选课提醒"
    assert received.message.get_content().strip() == "明天 9:00 开始选课。"
    smtp.clear()
    assert smtp.count == 0
    assert smtp.messages == []


def test_smtp_wait_for_names_what_is_missing(smtp: LocalSmtpServer) -> None:
    with pytest.raises(TimeoutError, match="got 0 of 1 messages"):
        smtp.wait_for(1, timeout=0.1)


def test_parts_up_in_one_process_and_down_in_another(tmp_path: Path) -> None:
    kafka_port, redis_port = free_port(), free_port()
    up = (
        "import sys; from pathlib import Path; from localparts import LocalParts; "
        "LocalParts(Path(sys.argv[1]), kafka_port=int(sys.argv[2]), redis_port=int(sys.argv[3])).up()"
    )
    args = [sys.executable, "-c", up, str(tmp_path), str(kafka_port), str(redis_port)]
    started = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
    assert started.returncode == 0, started.stderr

    parts = LocalParts(tmp_path, kafka_port=kafka_port, redis_port=redis_port)
    try:
        statuses = parts.status()
        assert [(s.name, s.state) for s in statuses] == [("broker", PartState.UP), ("redis", PartState.UP)]
        pids = [s.pid for s in statuses]
        assert all(pid is not None and read_cmdline(pid) for pid in pids)
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["broker.pid", "redis.pid"]

        # A second `up` reuses the running parts instead of starting new ones.
        assert [s.pid for s in parts.up()] == pids
    finally:
        after = parts.down()

    assert [s.state for s in after] == [PartState.DOWN, PartState.DOWN]
    assert all(read_cmdline(pid) is None for pid in pids if pid is not None)
    assert not port_accepts("127.0.0.1", kafka_port)
    assert not port_accepts("127.0.0.1", redis_port)
    assert list((tmp_path / "run").iterdir()) == []


def test_down_never_signals_a_pid_running_something_else(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "30"])  # noqa: S607 - a harmless stand-in process
    try:
        run = tmp_path / "run"
        run.mkdir()
        (run / "broker.pid").write_text(f"{bystander.pid}\n{json.dumps(['/opt/tansu', 'broker'])}\n")
        parts = LocalParts(tmp_path, kafka_port=free_port(), redis_port=free_port())

        assert [s.state for s in parts.status()] == [PartState.DOWN, PartState.DOWN]
        parts.down()

        assert bystander.poll() is None
        assert not (run / "broker.pid").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_parts_found_running_elsewhere_are_reused_not_stopped(
    local_parts: LocalParts, tmp_path: Path
) -> None:
    other = LocalParts(tmp_path, kafka_port=local_parts.broker.port, redis_port=local_parts.redis.port)
    with other:
        assert [s.state for s in other.status()] == [PartState.EXTERNAL, PartState.EXTERNAL]
    other.down()
    assert [s.state for s in local_parts.status()] == [PartState.UP, PartState.UP]


def test_context_manager_stops_what_it_started(tmp_path: Path) -> None:
    with LocalParts(tmp_path, kafka_port=free_port(), redis_port=free_port()) as parts:
        pids = [s.pid for s in parts.status()]
        assert all(pids)
    assert all(read_cmdline(pid) is None for pid in pids if pid is not None)
    assert [s.state for s in parts.status()] == [PartState.DOWN, PartState.DOWN]


def test_broker_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = LocalBroker(port=port, log_path=tmp_path / "broker.log")
        with pytest.raises(PartError, match=f"port 127.0.0.1:{port} is already taken"):
            broker.start()
        assert broker.pid is None


def test_parts_listen_on_loopback_only_by_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        LocalParts(tmp_path, host="0.0.0.0")  # noqa: S104 - the value under test


def test_missing_redis_server_says_how_to_install_it(tmp_path: Path) -> None:
    redis = LocalRedis(
        port=free_port(),
        log_path=tmp_path / "redis.log",
        data_dir=tmp_path / "redis",
        binary="/nonexistent/redis-server",
    )
    with pytest.raises(PartError, match="apt-get install redis-server"):
        redis.start()

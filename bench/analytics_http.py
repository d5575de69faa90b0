"""Bench: rows per second returned to clickhouse-connect over the analytics service's HTTP interface.

A fresh chdb folder holds a `message_events`-shaped table of N rows; the interface runs under uvicorn in
a child process (as in `switchboard analytics`), and clickhouse-connect's ordinary HTTP client reads the
whole table with query_arrow and with query (Native, into Python rows). Reports wall time, rows/s and
CPU time per row on each side (client: this process; server: the child, from /proc).

Run: .venv/bin/python bench/analytics_http.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import clickhouse_connect
from pydantic import SecretStr

PASSWORD = secrets.token_urlsafe(16)  # handed to the child by spawn arguments


def serve(dsn: str, port: int, rows: int, password: str, ready: multiprocessing.synchronize.Event) -> None:
    import uvicorn

    from analytics.analysts import Analysts
    from analytics.connection import open_clickhouse
    from analytics.http_interface import chdb_engine, create_http_interface

    owner = open_clickhouse(dsn)
    owner.command(
        "CREATE TABLE events (event_time DateTime64(3, 'UTC'), message_id String, "
        "app LowCardinality(String), user_id String, channel LowCardinality(String), "
        "status LowCardinality(String), cost Float64) "
        "ENGINE = MergeTree ORDER BY (app, event_time)"
    )
    owner.command(
        "INSERT INTO events SELECT now64(3) - number, concat('m', toString(number)), "
        "['enrol', 'pay', 'alerts'][number % 3 + 1], concat('u', toString(number % 50000)), "
        "['sms', 'email', 'inbox', 'push'][number % 4 + 1], ['sent', 'delivered', 'read'][number % 3 + 1], "
        "(number % 7) / 100 FROM numbers({rows:UInt64})",
        parameters={"rows": rows},
    )
    analysts = Analysts.load(Path("/nonexistent"), SecretStr(password))
    app = create_http_interface(chdb_engine(dsn), analysts)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    ready.set()
    server.run()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from localparts.process import free_port

    folder = tempfile.mkdtemp(prefix="bench-http-")
    port = free_port()
    ready = multiprocessing.get_context("spawn").Event()
    child = multiprocessing.get_context("spawn").Process(
        target=serve, args=(f"chdb://{folder}", port, args.rows, PASSWORD, ready), daemon=True
    )
    child.start()
    ready.wait(120)
    time.sleep(0.5)
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=port, username="switchboard", password=PASSWORD
    )
    if child.pid is None:
        raise SystemExit("the interface did not start")
    try:
        for name, run in (
            ("query_arrow", lambda: client.query_arrow("SELECT * FROM events").num_rows),
            ("query", lambda: len(client.query("SELECT * FROM events").result_rows)),
        ):
            walls, client_cpu, server_cpu = [], [], []
            for _ in range(args.repeat):
                wall0, cpu0, srv0 = time.perf_counter(), time.process_time(), cpu_seconds(child.pid)
                got = run()
                walls.append(time.perf_counter() - wall0)
                client_cpu.append(time.process_time() - cpu0)
                server_cpu.append(cpu_seconds(child.pid) - srv0)
                if got != args.rows:
                    raise SystemExit(f"{name} returned {got} rows, not {args.rows}")
            wall = statistics.median(walls)
            print(
                f"{name:12} {args.rows:>9,} rows  median {wall:6.2f} s  {args.rows / wall:>10,.0f} rows/s  "
                f"CPU per row: client {statistics.median(client_cpu) / args.rows * 1e6:5.2f} µs, "
                f"server {statistics.median(server_cpu) / args.rows * 1e6:5.2f} µs"
            )
    finally:
        client.close()
        child.terminate()
        child.join(10)


if __name__ == "__main__":
    main()

"""`switchboard people export|erase|pseudonym` in a child process, against the test's Redis, broker and
a running analytics service (which reads ClickHouse for the export and applies the erasure)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from redis.asyncio import Redis

from localparts.switchboard_process import SwitchboardProcess
from settings import ROOT, Settings
from state.users import User, UserDirectory

ALICE = User(user_id="alice", name="Alice Li", bindings={"email": "alice@uni.example", "inbox": "alice"})


def switchboard(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command line, fixed arguments
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env={**settings.to_env(), "PATH": ""},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def serving(settings: Settings) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((settings.analytics_host, settings.analytics_port)) == 0


async def test_people_are_exported_to_a_file_and_erased_after_confirmation(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    own = settings.model_copy(update={"clickhouse": f"chdb://{tmp_path / 'clickhouse'}"})
    await UserDirectory(redis).upsert([ALICE])
    with SwitchboardProcess("analytics", own, tmp_path / "analytics.log") as service:
        deadline = time.monotonic() + 60
        while not serving(own) and time.monotonic() < deadline:
            assert service.running, service.log_tail()
            await asyncio.sleep(0.2)  # until the service serves ClickHouse's HTTP interface
        written = tmp_path / "alice.json"
        exported = await asyncio.to_thread(switchboard, own, "people", "export", "alice", "-o", str(written))
        assert exported.returncode == 0, exported.stderr
        assert exported.stdout.strip() == f"wrote {written}"
        document = json.loads(written.read_text(encoding="utf-8"))
        assert document["format"] == "switchboard.person/1" and document["profile"]["name"] == "Alice Li"

        refused = await asyncio.to_thread(
            switchboard, own, "people", "erase", "alice", "--reason", "ticket 7", stdin="n\n"
        )
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines()[-1] == (
            "error: not erased: not confirmed (pass --yes to skip the question)"
        )
        assert await UserDirectory(redis).get_many(["alice"])  # still there
        short = await asyncio.to_thread(
            switchboard, own, "people", "erase", "alice", "--reason", "x", "--yes"
        )
        assert (short.returncode, short.stderr.strip().splitlines()) == (
            1,
            ["error: --reason: say why, at least 3 characters (kept in the audit log)"],
        )

        erased = await asyncio.to_thread(
            switchboard, own, "people", "erase", "alice", "--reason", "ticket 7", "--yes"
        )
        assert erased.returncode == 0, erased.stderr
        named = await asyncio.to_thread(switchboard, own, "people", "pseudonym", "alice")
        pseudonym = named.stdout.strip()
        assert pseudonym == document["pseudonym"]
        first, second = erased.stdout.strip().splitlines()
        assert first.startswith(f"erased alice as {pseudonym}: Redis ") and "1 keys" in first
        assert second.startswith("ClickHouse: requested")
        assert await UserDirectory(redis).get_many(["alice"]) == {}
        assert service.stop() == 0, service.log_tail()

"""`switchboard variants` on a chdb folder of its own (subprocesses: chdb allows one folder per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localparts import free_port
from settings import ROOT

SWITCHBOARD = [sys.executable, "-m", "app"]
# 100 messages of rule `trial` an hour ago: 20 held out, 40 of variant a (8 convert), 40 of b (4 convert).
SEED = """
import sys
from analytics.connection import open_clickhouse
from analytics.migrate import apply_migrations
client = open_clickhouse(sys.argv[1])
apply_migrations(client)
client.command('''
INSERT INTO message_events (event_time, message_id, app, user_id, channel, status, rule_id, variant)
SELECT now64(3) - INTERVAL 1 HOUR, concat('m', toString(number)), 'shop', concat('u', toString(number)),
       if(number < 20, '', 'email'), if(number < 20, 'held_out', 'decided'), 'trial',
       multiIf(number < 20, 'holdout', number < 60, 'a', 'b')
FROM numbers(100)
''')
client.command('''
INSERT INTO message_events (event_time, message_id, app, user_id, channel, status, rule_id, variant)
SELECT now64(3) - INTERVAL 10 MINUTE, concat('m', toString(number)), 'shop', '', '', 'converted', 'trial',
       multiIf(number < 20, 'holdout', number < 60, 'a', 'b')
FROM numbers(100) WHERE number IN (1, 2) OR (number >= 20 AND number < 28) OR (number >= 60 AND number < 64)
''')
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    var = tmp_path_factory.mktemp("variants-cli")
    dsn = f"chdb://{var / 'clickhouse'}"
    subprocess.run([sys.executable, "-c", SEED, dsn], cwd=ROOT, check=True, timeout=120)  # noqa: S603
    # Nothing listens on this port: the CLI reads the folder directly, as it does with no service running.
    return {**os.environ, "SWITCHBOARD_VAR_DIR": str(var), "SWITCHBOARD_CLICKHOUSE": dsn,
            "SWITCHBOARD_ANALYTICS_PORT": str(free_port()), "SWITCHBOARD_RULES": str(ROOT / "rules")}


def switchboard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter
        [*SWITCHBOARD, "variants", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_json_csv_and_table(env: dict[str, str]) -> None:
    result = switchboard(env, "--rule", "trial", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["baseline"] == "holdout"
    counts = {v["variant"]: (v["recipients"], v["converted"], v["control"]) for v in report["variants"]}
    assert counts == {"holdout": (20, 2, True), "a": (40, 8, False), "b": (40, 4, False)}
    a = next(v for v in report["variants"] if v["variant"] == "a")
    assert a["lift"] == pytest.approx((8 / 40) / (2 / 20) - 1)

    csv = switchboard(env, "--rule", "trial", "--format", "csv", "--since", "2h").stdout.splitlines()
    assert len(csv) == 4 and csv[1].startswith("trial,holdout,holdout,True,20,")

    table = switchboard(env, "--rule", "trial").stdout
    assert "holdout (control)" in table and "+100.0%" in table and "lift against holdout" in table

    nothing = switchboard(env, "--rule", "trial", "--since", "30m")
    assert nothing.returncode == 0 and "rule trial decided no message with a variant since" in nothing.stdout


def test_a_bad_since_is_one_line(env: dict[str, str]) -> None:
    result = switchboard(env, "--rule", "trial", "--since", "last week")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == (
        "error: --since 'last week': write how far back (30m, 12h, 7d, 2w) or a date or time (2026-11-01)\n"
    )


def test_an_empty_folder_says_there_are_no_analytics_yet(tmp_path: Path) -> None:
    env = {**os.environ, "SWITCHBOARD_VAR_DIR": str(tmp_path), "SWITCHBOARD_ANALYTICS_PORT": str(free_port())}
    result = switchboard(env, "--rule", "trial")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: no analytics yet (no message_events table)")

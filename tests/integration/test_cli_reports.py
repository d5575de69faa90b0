"""`switchboard report --by/--since/--interval/--format/--chart` and `switchboard why`, in process, on the
test run's chdb (read as open_reader reads it when no analytics service answers) and Redis."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from typer.testing import CliRunner

from analytics.sink import ReceiptSink
from app import cli
from localparts import free_port
from records.plan import DeliveryPlan, FallbackStep
from records.topics import Dispatch, EventCore
from state.connection import open_redis
from state.fallback import FallbackSchedule
from tests.integration.test_reports import campaign


@pytest.fixture
def app(clickhouse: Client) -> str:
    name = f"app_{uuid.uuid4().hex[:10]}"
    ReceiptSink(clickhouse).write(campaign(name))
    return name


@pytest.fixture
def env(clickhouse_dsn: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "SWITCHBOARD_CLICKHOUSE": clickhouse_dsn,
        "SWITCHBOARD_REDIS": redis_url,
        "SWITCHBOARD_VAR_DIR": str(tmp_path / "var"),
        "SWITCHBOARD_ANALYTICS_PORT": str(free_port()),  # no analytics service: the folder is read directly
    }


def run(args: list[str], env: dict[str, str], status: int = 0) -> tuple[str, str]:
    # On a thread of its own: the command runs its own event loop, and pytest-asyncio may hold one here.
    with ThreadPoolExecutor(1) as thread:
        result = thread.submit(CliRunner().invoke, cli, args, env=env).result()
    assert result.exit_code == status, (result.stdout, result.stderr, result.exception)
    return result.stdout, result.stderr


def test_funnel_as_csv_json_table_and_chart(app: str, env: dict[str, str], tmp_path: Path) -> None:
    out, _ = run(["report", "--by", "channel", "--since", "3d", "--app", app, "--format", "csv"], env)
    lines = {line["channel"]: line for line in csv.DictReader(io.StringIO(out))}
    assert (lines["sms"]["decided"], lines["sms"]["converted"], lines["sms"]["cost"]) == ("2", "1", "0.095")
    assert lines[""]["suppressed"] == "1"

    chart = tmp_path / "charts" / "daily.png"
    out, err = run(
        ["report", "--interval", "hour", "--app", app, "--format", "json", "--chart", str(chart)], env
    )
    data = json.loads(out)
    assert data["interval"] == "hour" and sum(row["decided"] for row in data["rows"]) == 5
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"chart written to {chart}" in err

    out, _ = run(["report", "--by", "rule", "--app", app, "--since", "3d"], env)
    assert "Funnel (app " in out and "r1" in out and "converted/sent" in out

    # Without the new options, the reach report as before.
    out, _ = run(["report", "--json", "--app", app], env)
    assert json.loads(out)["rows"][0]["channel"] == "sms"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--by", "chanel"], "unknown dimension 'chanel' in by (did you mean 'channel'?)"),
        (["--since", "last week"], "since='last week' is not a time"),
        (["--interval", "week"], "unknown interval 'week'"),
        (["--chart", "funnel.svg"], "--chart funnel.svg: charts are PNG files"),
    ],
)
def test_mistakes_are_one_line(env: dict[str, str], args: list[str], words: str) -> None:
    _, err = run(["report", *args], env, status=1)
    assert err.startswith("error: ") and words in err and err.count("\n") == 1


async def arm(redis_url: str, first: Dispatch) -> None:
    redis = open_redis(redis_url)
    try:
        await FallbackSchedule(redis).arm(first, None, datetime.now(UTC))
    finally:
        await redis.aclose()


def test_why_tells_the_chain_and_what_is_pending(app: str, env: dict[str, str], redis_url: str) -> None:
    """Not async: the command runs its own event loop."""
    event = EventCore(event_id="ev-m1", app=app, type="t", template="t1", category="notice")
    first = Dispatch(
        message_id=f"{app}-m1", user_id="u1", channel="sms", address="+8613800138000", event=event,
        rule_id="r1", rule_version="v1",
        plan=DeliveryPlan(fallback=(
            FallbackStep(step=1, after=timedelta(hours=2), condition="not_clicked", channels=("email",)),
        )),
    )  # fmt: skip
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, arm(redis_url, first)).result()

    out, _ = run(["why", "u1", "--app", app, "--event", "ev-m2"], env)
    assert f"message {app}-m2" in out
    assert "failed" in out and "sms/aliyun" in out and "because quota" in out and "sms/tencent" in out
    assert "nothing pending in Redis" in out

    out, _ = run(["why", "u1", "--message", f"{app}-m1"], env)
    assert "fallback step 1 (not_clicked)" in out and "converted" in out

    (trace,) = json.loads(run(["why", "u1", "--message", f"{app}-m1", "--json"], env)[0])
    assert trace["pending"]["fallback"]["steps"][0]["condition"] == "not_clicked"
    everything = json.loads(run(["why", "u1", "--app", app, "--json"], env)[0])
    assert len(everything) == 6

    _, err = run(["why", "u2", "--message", f"{app}-m1"], env, status=1)
    assert f"message {app}-m1 is not u2's: it was for u1" in err
    _, err = run(["why", "nobody", "--app", app], env, status=1)
    assert err == "error: no messages for nobody in analytics, nor pending in Redis\n"
    _, err = run(["why", "u1", "--message", "m", "--event", "e"], env, status=1)
    assert "not both" in err

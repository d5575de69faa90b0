"""`switchboard channels` against the real parts, as a child process: secrets from standard input only,
never printed, sealed in Redis, audited on topic `audit`; a new master key first and `rotate-secrets`
let the old key go; mistakes are one line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from aiokafka import AIOKafkaConsumer
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from settings import ROOT, Settings
from state.apps import AppRegistry
from tests.integration.test_api_channel_accounts import leaks

SECRET = "Hx3Wn8Kd2Qv7Lp4Zr9Tb6Mc"
OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def switchboard(settings: Settings, *args: str, stdin: str = "", keys: str = OLD,
                status: int = 0) -> str:
    env = {**settings.to_env(), "SWITCHBOARD_MASTER_KEYS": keys, "PATH": ""}
    done = subprocess.run(  # noqa: S603  # our own command line, with the test's arguments
        [sys.executable, "-m", "app", "channels", *args], cwd=ROOT, env=env, input=stdin,
        capture_output=True, text=True, timeout=120, check=False,
    )
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == status, output
    return output


async def audits(settings: Settings, expected: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(settings.topic("audit"), bootstrap_servers=settings.kafka.removeprefix("kafka://"),
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 20
        while len(found) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(json.loads(record.value) for record in records)
    finally:
        await consumer.stop()
    return found


async def test_the_channels_commands_keep_secrets_out_of_sight(settings: Settings, redis: Redis) -> None:
    await AppRegistry(redis).register("bursar", ["email"])
    outputs = [switchboard(
        settings, "add", "campus-sms", "--name", "校园短信", "--type", "sms", "--platform", "aliyun",
        "--setting", "access_key_id=LTAI5tExample", "--setting", "sign_name=某大学",
        "--secret", "access_key_secret", "--app", "bursar", "--enable", stdin=SECRET + "\n",
    )]
    assert "campus-sms" in outputs[0] and "access_key_secret=******" in outputs[0] and "bursar" in outputs[0]
    outputs.append(switchboard(settings, "list"))
    assert "campus-sms" in outputs[-1] and " on " in outputs[-1]
    # The new key goes first; the old one still opens; rotation frees it.
    outputs.append(switchboard(settings, "rotate-secrets", keys=f"{NEW},{OLD}"))
    assert "resealed the secrets of 1 account(s)" in outputs[-1]
    outputs.append(switchboard(settings, "set-secret", "campus-sms", "access_key_secret", stdin=SECRET[::-1],
                               keys=NEW))
    assert "secret access_key_secret set at" in outputs[-1]
    outputs.append(switchboard(settings, "disable", "campus-sms", keys=NEW))
    # Mistakes: one line each, nothing changed.
    outputs.append(switchboard(settings, "set-secret", "campus-sms", "sign_name", stdin="x", status=1))
    assert "secrets.sign_name: not a secret of aliyun" in outputs[-1]
    outputs.append(switchboard(settings, "enable", "nope", status=1))
    assert outputs[-1].strip() == "error: no channel account with code 'nope'"
    outputs.append(switchboard(settings, "add", "x", "--name", "x", "--type", "sms", "--platform", "aliyun",
                               "--setting", f"access_key_secret={SECRET}", status=1))
    assert "a secret; set it through the secrets" in outputs[-1]
    stored = [f"{k!r} {await redis.get(k)!r}" async for k in redis.scan_iter(match="sb:{chacc}:account:*")]
    records = await audits(settings, 5)
    assert [r["action"] for r in records] == ["channel.create", "channel.authorise", "channel.secrets_reseal",
                                              "channel.secret_rotate", "channel.disable"]
    assert {r["source"] for r in records} == {"cli"} and records[0]["actor"].startswith("cli:")
    assert leaks("\n".join([*outputs, *stored, json.dumps(records)]), SECRET, SECRET[::-1]) == []

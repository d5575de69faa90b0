"""`switchboard people add|show|update|remove|addresses|list` against the real local parts: every change
an audit record on the broker, the data-rights commands still beside them, and every mistake one line."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from app import cli
from state.users import UserDirectory
from tests.integration.test_cli_budgets import audits, env

__all__ = ["env"]  # the fixture, shared with the budgets commands' tests
TOKEN_A, TOKEN_B = "fcm:" + "a" * 30, "fcm:" + "b" * 30


def run(args: list[str], env: dict[str, str], status: int = 0) -> list[str]:
    result = CliRunner().invoke(cli, ["people", *args], env=env)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == status, result.output
    return result.output.strip().splitlines()


async def test_people_from_the_command_line(env: dict[str, str], redis: Redis) -> None:
    [added] = await asyncio.to_thread(run, [
        "add", "s1", "--name", "Han Meimei", "--tags", "undergrad,y2021", "--attr", "year=2021",
        "--address", "email=Han@UNI.example,label=campus", "--address", "sms=13800138001",
        "--address", f"push={TOKEN_A},label=phone,active=2026-01-01T00:00:00Z",
        "--address", f"push={TOKEN_B},label=tablet,active=2026-02-01T00:00:00Z",
    ], env)
    assert added == "person s1 added: 1 email, 2 push, 1 sms; tags undergrad,y2021"
    shown = json.loads("\n".join(await asyncio.to_thread(run, ["show", "s1"], env)))
    assert shown["bindings"] == {"email": "Han@uni.example", "sms": "+8613800138001", "push": TOKEN_B}
    assert shown["attributes"] == {"year": 2021}

    update = ["update", "s1", "--choice", "push=all", "--drop-channel", "sms"]
    [changed] = await asyncio.to_thread(run, update, env)
    assert changed == "person s1 changed: 1 email, 2 push; tags undergrad,y2021"
    rows = [line.split() for line in await asyncio.to_thread(run, ["addresses", "s1"], env)]
    assert [(r[0], r[2], r[-2]) for r in rows] == [
        ("email", "Han@uni.example", "used"), ("push", TOKEN_A, "used"), ("push", TOKEN_B, "used")
    ]
    listed = await asyncio.to_thread(run, ["list", "--tag", "y2021"], env)
    assert [line.split()[0] for line in listed] == ["s1"]
    assert await UserDirectory(redis).owners("sms", "+8613800138001") == []

    [removed] = await asyncio.to_thread(run, ["remove", "s1", "--yes"], env)
    assert removed == "person s1 removed from the directory"
    assert await UserDirectory(redis).get("s1") is None
    records = await audits(env, 3)
    assert [(r["action"], r["target"], r["source"]) for r in records] == [
        ("person.create", "s1", "cli"), ("person.update", "s1", "cli"), ("person.remove", "s1", "cli")
    ]
    assert "13800138001" not in json.dumps(records)
    # The data-rights commands are still in the group.
    [pseudonym] = await asyncio.to_thread(run, ["pseudonym", "s1"], env)
    assert pseudonym.startswith("erased:")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "s2", "--address", "sms=12345"], "error: addresses.sms[0]: invalid phone number '12345'"),
        (["add", "s2", "--address", "fax=123"], "error: addresses.fax: Input should be"),
        (["add", "s2", "--address", "email"], "error: --address 'email': expected CHANNEL=ADDRESS"),
        (["add", "s2", "--timezone", "Mars/Base"], "error: timezone: unknown timezone 'Mars/Base'"),
        (["add", "s2", "--choice", "push=every"], "error: address_choice.push: Input should be"),
        (["show", "nobody"], "error: no person nobody; `switchboard people list` shows them"),
        (["update", "nobody", "--name", "x"], "error: no person nobody"),
        (["update", "s2"], "error: nothing to change"),
        (["remove", "nobody", "--yes"], "error: no person nobody"),
    ],
)
def test_a_mistake_is_one_line(env: dict[str, str], args: list[str], says: str) -> None:
    [line] = run(args, env, status=1)
    assert line.startswith(says), line

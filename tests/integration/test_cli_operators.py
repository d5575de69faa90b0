"""`switchboard operators|roles` against the real local parts: the first administrator from the shell,
grants, tokens, lockout by hand, roles; each change an audit record on the `audit` topic; every
mistake one line."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from app import cli
from localparts import LocalParts
from settings import Settings
from state.connection import open_redis
from state.operators import OperatorStore

from .test_api import consume

PASSWORD = "correct horse battery staple"


@pytest.fixture
def env(local_parts: LocalParts, tmp_path: Path) -> dict[str, str]:
    """The CLI on the test parts, on a Redis database of its own, emptied first, topics of its own."""
    url = local_parts.redis_url.rsplit("/", 1)[0] + "/8"
    redis.Redis.from_url(url).flushdb()
    return {
        "SWITCHBOARD_REDIS": url,
        "SWITCHBOARD_KAFKA": local_parts.kafka_url,
        "SWITCHBOARD_VAR_DIR": str(tmp_path / "var"),
        "SWITCHBOARD_ENV": "test",
        "SWITCHBOARD_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}-",
    }


def run(args: list[str], env: dict[str, str], status: int = 0, stdin: str | None = None) -> list[str]:
    result = CliRunner().invoke(cli, args, env=env, input=stdin)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == status, result.output
    return result.output.strip().splitlines()


def test_the_first_administrator_and_an_operators_life(env: dict[str, str]) -> None:
    assert run(["operators", "list"], env) == [
        "no operators yet; create the first with `switchboard operators add admin --role administrator`"
    ]
    made = run(
        ["operators", "add", "admin", "--role", "administrator", "--password-stdin"], env, stdin=PASSWORD
    )
    assert made == ["operator admin created with administrator"]
    run(["operators", "add", "wang", "--role", "sender@lms,bursar", "--password-stdin"], env, stdin=PASSWORD)
    run(["operators", "grant", "wang", "analyst"], env)
    run(["operators", "revoke", "wang", "sender", "--apps", "bursar"], env)
    assert run(["operators", "list"], env)[1].split() == ["wang", "active", "analyst", "sender@lms"]
    [line] = run(["operators", "token", "wang", "--label", "laptop"], env)
    token = line.split("(shown once): ")[1]
    run(["operators", "lock", "wang"], env)
    assert run(["operators", "list"], env)[1].split()[1] == "locked"
    run(["operators", "unlock", "wang"], env)
    run(["operators", "reset-password", "wang", "--password-stdin"], env, stdin="another long passphrase")

    async def check() -> None:
        client = open_redis(env["SWITCHBOARD_REDIS"])
        try:
            store = OperatorStore(client)
            assert (await store.authenticate_token(token)) is not None
            assert await store.verify_password("wang", "another long passphrase") is not None
            assert await store.verify_password("wang", PASSWORD) is None
        finally:
            await client.aclose()

    asyncio.run(check())
    settings = Settings(kafka=env["SWITCHBOARD_KAFKA"], topic_prefix=env["SWITCHBOARD_TOPIC_PREFIX"])
    records = asyncio.run(consume(settings.kafka.split("://")[1], settings.topic("audit"), at_least=8))
    audits = [json.loads(value) for _, value in records]
    assert [a["action"] for a in audits] == [
        "operator.create",
        "operator.create",
        "role.grant",
        "role.revoke",
        "operator.token_issue",
        "operator.lock",
        "operator.unlock",
        "operator.password_reset",
    ]
    assert {(a["source"], a["actor_kind"]) for a in audits} == {("cli", "system")}
    assert token not in json.dumps(audits) and PASSWORD not in json.dumps(audits)


def test_roles_from_the_shell(env: dict[str, str]) -> None:
    assert run(["roles", "add", "desk", "--permissions", "apps:read,operators:read"], env) == [
        "role desk: apps:read,operators:read"
    ]
    assert "desk               custom    apps:read,operators:read" in run(["roles", "list"], env)
    run(["operators", "add", "li", "--role", "desk", "--password-stdin"], env, stdin=PASSWORD)
    held = run(["roles", "remove", "desk"], env, status=1)
    assert held == ["error: role 'desk' is held by li; revoke it from them first"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["roles", "add", "desk", "--permissions", "statistic:read"],
            None,
            "error: unknown permission 'statistic:read' (did you mean 'statistics:read'?)",
        ),
        (
            ["roles", "add", "sender", "--permissions", "apps:read"],
            None,
            "error: 'sender' is a built-in role and cannot be changed; make a custom role instead",
        ),
        (
            ["operators", "add", "zhao", "--role", "sendr", "--password-stdin"],
            PASSWORD,
            "error: no role named 'sendr' (did you mean 'sender'?)",
        ),
        (
            ["operators", "add", "zhao", "--password-stdin"],
            "short",
            "error: the password must be at least 12 characters long",
        ),
        (["operators", "grant", "nobody", "sender"], None, "error: no operator named 'nobody'"),
        (
            ["operators", "add", "zhao", "--locale", "fr", "--password-stdin"],
            PASSWORD,
            "error: --locale must be zh or en, got 'fr'",
        ),
    ],
)
def test_mistakes_are_one_line(env: dict[str, str], args: list[str], stdin: str | None, message: str) -> None:
    assert run(args, env, status=1, stdin=stdin) == [message]

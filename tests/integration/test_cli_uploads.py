"""`switchboard uploads` against the real local parts: add, list, show, errors, remove, every change an
audit record on the broker, and every mistake one line."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis
from typer.testing import CliRunner

from app import cli
from state.uploads import UploadStore
from tests.integration.test_cli_budgets import audits, env

__all__ = ["env"]  # the fixture, shared with the budgets commands' tests


def run(args: list[str], env: dict[str, str], status: int = 0) -> list[str]:
    result = CliRunner().invoke(cli, ["uploads", *args], env=env)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == status, result.output
    return result.output.strip().splitlines()


async def test_uploads_from_the_command_line(env: dict[str, str], redis: Redis, tmp_path: Path) -> None:
    path = tmp_path / "alumni.csv"
    await asyncio.to_thread(path.write_bytes, "手机号\n13800138000\n13800138000\nnope\n".encode("gbk"))
    added = await asyncio.to_thread(run, ["add", str(path), "--app", "lms", "--ttl-hours", "2"], env)
    fields = {line.split()[0]: line.split()[1] for line in added if len(line.split()) == 2}
    upload_id = fields["id"]
    assert (fields["encoding"], fields["valid"], fields["duplicates"], fields["invalid"]) == (
        "gbk/gb18030", "2", "1", "1",
    )
    assert any("row 4 手机号: n*** " in line for line in added), added
    assert upload_id in (await asyncio.to_thread(run, ["list", "--app", "lms"], env))[0]
    assert "recipients     1" in await asyncio.to_thread(run, ["show", upload_id], env)
    assert (await asyncio.to_thread(run, ["errors", upload_id], env))[0].startswith("row 4\t手机号\tn***\t")
    removed = await asyncio.to_thread(run, ["remove", upload_id], env)
    assert removed == [f"upload {upload_id} of app lms removed (1 recipients)"]
    assert await UploadStore(redis).size(upload_id) is None
    records = await audits(env, 2)
    assert [(r["action"], r["target"], r["app"], r["source"]) for r in records] == [
        ("upload.add", upload_id, "lms", "cli"), ("upload.remove", upload_id, "lms", "cli"),
    ]


def test_mistakes_are_one_line(env: dict[str, str], tmp_path: Path) -> None:
    missing = run(["add", str(tmp_path / "none.csv"), "--app", "lms"], env, status=1)
    assert missing == [f"error: {tmp_path / 'none.csv'}: no such file"]
    plain = tmp_path / "plain.csv"
    plain.write_text("13800138000\n")
    [no_kind] = run(["add", str(plain), "--app", "lms"], env, status=1)
    assert no_kind.startswith("error: say what the file holds")
    assert run(["add", str(plain), "--app", "lms", "--kind", "fax"], env, status=1) == [
        "error: kind: must be one of phone, email, user_id, got 'fax'"
    ]
    assert run(["add", str(plain), "--app", "lms", "--kind", "phone", "--ttl-hours", "0"], env, status=1) == [
        "error: --ttl-hours: from 1 to 720 (30 days), got 0"
    ]
    big = env | {"SWITCHBOARD_UPLOAD_MAX_BYTES": "4"}
    [too_big] = run(["add", str(plain), "--app", "lms", "--kind", "phone"], big, status=1)
    assert "over the limit of 4" in too_big
    assert run(["show", "up-none"], env, status=1) == [
        "error: upload up-none expired or unknown; `switchboard uploads list` shows the live ones"
    ]

"""`switchboard approvals` against real Redis and the broker, acting as operators by their tokens: the
same rules as the API, every mistake one line, every decision an audit record on the `audit` topic."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from typer.testing import CliRunner

from app import cli
from processors.approvals import ApprovalGate
from records.topics import Event
from settings import Settings
from state.approval_policies import PolicyStore
from state.approvals import ApprovalStore
from state.connection import open_redis
from state.users import UserDirectory
from tests.integration.approvals_support import promotion, seed


def run(args: list[str], env: dict[str, str], status: int = 0) -> list[str]:
    result = CliRunner().invoke(cli, args, env=env)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == status, result.output
    return result.output.strip().splitlines()


async def held_by_sam(settings: Settings) -> tuple[dict[str, str], str]:
    """The seeded operators' tokens, and the id of a promotion sam submitted that a policy holds."""
    redis = open_redis(settings.redis)
    try:
        await redis.flushdb()
        tokens = await seed(redis)
        event = Event.model_validate({**promotion("cli-1"), "submitted_by": "operator:sam"})
        gate = ApprovalGate(PolicyStore(redis), ApprovalStore(redis), UserDirectory(redis))
        assert await gate.hold(event) is not None
        [item] = await ApprovalStore(redis).listing("pending")
        return tokens, item.approval_id
    finally:
        await redis.aclose()


async def audit_actions(settings: Settings, expected: int) -> list[tuple[str, str, str]]:
    consumer = AIOKafkaConsumer(
        settings.topic("audit"),
        bootstrap_servers=settings.kafka.removeprefix("kafka://"),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: list[tuple[str, str, str]] = []
    try:
        deadline = time.monotonic() + 20
        while len(found) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    value = json.loads(record.value)
                    found.append((value["action"], value["actor"], value["outcome"]))
    finally:
        await consumer.stop()
    return found


def test_operators_decide_and_manage_policies_from_the_command_line(
    settings: Settings, tmp_path: Path
) -> None:
    tokens, approval = asyncio.run(held_by_sam(settings))
    base = settings.to_env()

    def as_(name: str) -> dict[str, str]:
        return {**base, "SWITCHBOARD_OPERATOR_TOKEN": tokens[name]}

    [line] = run(["approvals", "list", "--operator", "ann"], as_("ann"))
    assert line.startswith(approval) and "level 1/2 approver" in line and "by operator:sam" in line
    nothing = run(["approvals", "list", "--operator", "bo"], as_("bo"))
    assert nothing == ["no pending approvals for operator bo"]
    shown = json.loads("\n".join(run(["approvals", "show", approval, "--operator", "ann"], as_("ann"))))
    assert shown["payload"]["data"]["headline"] == "Winter sale"

    [own] = run(["approvals", "approve", approval, "--operator", "sam"], as_("sam"), status=1)
    assert own == "error: operator 'sam' submitted this message; its approvers must be other operators"
    [ok] = run(["approvals", "approve", approval, "--operator", "ann", "--comment", "ok"], as_("ann"))
    assert "level 2/2 administrator" in ok
    [borrowed] = run(["approvals", "approve", approval, "--operator", "bo"], as_("ann"), status=1)
    assert borrowed == "error: SWITCHBOARD_OPERATOR_TOKEN is not a valid token of an active operator 'bo'"
    [missing] = run(["approvals", "reject", approval, "--operator", "bo"], base, status=1)
    assert "set SWITCHBOARD_OPERATOR_TOKEN" in missing
    [rejected] = run(["approvals", "reject", approval, "--operator", "bo", "--comment", "too broad"],
                     as_("bo"))
    assert "rejected" in rejected

    policy = tmp_path / "surveys.yaml"
    policy.write_text("name: surveys\napps: [shop]\ncampaign: true\nlevels: [approver]\nexpires_after: 24h\n")
    assert run(["approvals", "policies", "put", str(policy), "--operator", "bo"], as_("bo")) == [
        "created approval policy surveys"
    ]
    policy.write_text("name: surveys\napps: [shop]\nlevels: []\nexpire_after: 24h\n")
    [bad] = run(["approvals", "policies", "put", str(policy), "--operator", "bo"], as_("bo"), status=1)
    assert bad.startswith(f"error: {policy}: levels: ") and "expire_after: Extra inputs" in bad
    listed = run(["approvals", "policies", "list", "--operator", "bo"], as_("bo"))
    assert "surveys: apps shop; when a campaign; levels approver; expires after 24h" in listed
    assert run(["approvals", "policies", "remove", "surveys", "--operator", "bo"], as_("bo")) == [
        "removed approval policy surveys"
    ]
    [state] = run(["approvals", "list", "--operator", "ann", "--state", "nonsense"], as_("ann"), status=1)
    assert state == "error: --state 'nonsense': use one of pending, approved, rejected, expired, all"

    # Keyed by actor, so only each operator's own records keep their order across partitions.
    assert sorted(asyncio.run(audit_actions(settings, 5))) == [
        ("approval.approve", "ann", "ok"),
        ("approval.approve", "sam", "denied"),
        ("approval.reject", "bo", "ok"),
        ("approval_policy.put", "bo", "ok"),
        ("approval_policy.remove", "bo", "ok"),
    ]

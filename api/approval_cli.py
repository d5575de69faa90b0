"""`switchboard approvals`: list, show, approve and reject held items and manage the approval policies,
acting as an operator: `--operator NAME` with that operator's personal token in
`SWITCHBOARD_OPERATOR_TOKEN`. The same rules and audit records as the API (`api.approval_service`)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import ValidationError
from redis.asyncio import Redis

from api import approval_service as service
from api.approval_service import ApprovalRefused, Approvals, AuditSink
from api.operator_cli import TOKEN_VARIABLE, act_as_operator
from api.publisher import KafkaPublisher
from settings import Settings, SwitchboardError
from settings.permissions import Principal
from state.approval_policies import ApprovalPolicy, PolicyStore
from state.approvals import STATES, ApprovalItem, ApprovalState, ApprovalStore
from state.operators import OperatorStore

_T = TypeVar("_T")

approvals_cli = typer.Typer(no_args_is_help=True, help="Held messages awaiting approval, and the policies.")
policies_cli = typer.Typer(no_args_is_help=True, help="The approval policies.")
approvals_cli.add_typer(policies_cli, name="policies")

Operator = Annotated[
    str, typer.Option("--operator", help=f"act as this operator (token in ${TOKEN_VARIABLE})")
]
Json = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]


def _act(operator: str, action: Callable[[Approvals, AuditSink, Principal], Awaitable[_T]]) -> _T:
    """Run `action` as the operator whose token is in the environment, publishing audit records."""

    async def with_approvals(_: Settings, redis: Redis, publisher: KafkaPublisher, who: Principal) -> _T:
        roles = OperatorStore(redis).roles
        return await action(Approvals(ApprovalStore(redis), PolicyStore(redis), roles=roles), publisher, who)

    return act_as_operator(operator, with_approvals, (ApprovalRefused,))


def _state(value: str) -> ApprovalState | None:
    if value == "all":
        return None
    for state in STATES:
        if state == value:
            return state
    raise SwitchboardError(f"--state {value!r}: use one of {', '.join(STATES)}, all")


def _line(item: ApprovalItem) -> str:
    waiting = f"level {item.level + 1}/{len(item.levels)} {item.role}" if item.role else item.state
    return (f"{item.approval_id}  {item.state:<8}  {waiting:<24}  {item.subject}  "
            f"{item.audience} ~{item.audience_size}  by {item.submitted_by or '?'}  policy {item.policy}")


@approvals_cli.command("list")
def approvals_list(
    operator: Operator,
    state: Annotated[str, typer.Option(help="pending (what waits for you), approved, rejected, expired, all")]
    = "pending",
    limit: int = 100,
    as_json: Json = False,
) -> None:
    """What waits for you (pending), or the items of the apps you decide on."""
    chosen = _state(state)
    items = _act(operator, lambda approvals, _, who: service.listing(approvals, who, chosen, limit))
    if as_json:
        shown = [item.model_dump(mode="json", exclude={"payload"}) for item in items]
        typer.echo(json.dumps(shown, indent=2))
        return
    for item in items:
        typer.echo(_line(item))
    if not items:
        typer.echo(f"no {state} approvals for operator {operator}")


@approvals_cli.command("show")
def approvals_show(approval_id: str, operator: Operator) -> None:
    """One held item with its event and decisions, as JSON."""
    item = _act(operator, lambda approvals, _, who: service.show(approvals, who, approval_id))
    typer.echo(json.dumps(item.model_dump(mode="json"), indent=2, ensure_ascii=False))


@approvals_cli.command("approve")
def approvals_approve(approval_id: str, operator: Operator, comment: str = "") -> None:
    """Approve at the level that waits for you; the last level releases the message."""
    item = _act(operator, lambda approvals, audit, who: service.decide(
        approvals, audit, who, approval_id, "approve", comment, "cli"))
    typer.echo(_line(item))


@approvals_cli.command("reject")
def approvals_reject(approval_id: str, operator: Operator, comment: str = "") -> None:
    """Reject: the message is not sent, and its `rejected` row gives your comment as the reason."""
    item = _act(operator, lambda approvals, audit, who: service.decide(
        approvals, audit, who, approval_id, "reject", comment, "cli"))
    typer.echo(_line(item))


@policies_cli.command("list")
def policies_list(operator: Operator, as_json: Json = False) -> None:
    """The policies over the apps you manage."""
    policies = _act(operator, lambda approvals, _, who: service.visible_policies(approvals, who))
    if as_json:
        typer.echo(json.dumps([p.model_dump(mode="json") for p in policies], indent=2))
        return
    for p in policies:
        disabled = "" if p.enabled else " (disabled)"
        typer.echo(f"{p.name}: apps {', '.join(p.apps) or '*'}; {_conditions(p)}; levels "
                   f"{' → '.join(p.levels)}; expires after {p.expires_after}{disabled}")
    if not policies:
        typer.echo("no approval policies")


@policies_cli.command("put")
def policies_put(
    file: Annotated[Path, typer.Argument(help="a YAML or JSON file holding one policy (with its name)")],
    operator: Operator,
) -> None:
    """Create or replace the policy the file describes."""
    policy = _policy_file(file)
    previous = _act(
        operator, lambda approvals, audit, who: service.put_policy(approvals, audit, who, policy, "cli")
    )
    typer.echo(f"{'replaced' if previous else 'created'} approval policy {policy.name}")


@policies_cli.command("remove")
def policies_remove(name: str, operator: Operator) -> None:
    """Remove a policy; items it held keep waiting under the levels they were held with."""
    _act(operator, lambda approvals, audit, who: service.remove_policy(approvals, audit, who, name, "cli"))
    typer.echo(f"removed approval policy {name}")


def _conditions(policy: ApprovalPolicy) -> str:
    parts = [f"category in {', '.join(policy.categories)}"] if policy.categories else []
    parts += [f"channels {', '.join(policy.channels)}"] if policy.channels else []
    parts += ["a campaign"] if policy.campaign else []
    parts += [f"audience over {policy.audience_over}"] if policy.audience_over is not None else []
    joined = f" {'or' if policy.match == 'any' else 'and'} ".join(parts)
    return f"when {joined}" if parts else "every message"


def _policy_file(path: Path) -> ApprovalPolicy:
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SwitchboardError(f"{path}: not YAML ({exc})") from None
    try:
        return ApprovalPolicy.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise SwitchboardError(f"{path}: {problems}") from None

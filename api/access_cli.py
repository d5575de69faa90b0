"""What the `switchboard operators|roles|apps` commands (app.py) run on: Redis and the audit topic, from
the server's shell. Each change is audited as done by the shell's user from `cli`; the broker is checked
before anything is changed, so nothing happens that its audit record could not follow."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from api.audit_cli import cli_actor
from records.audit import AuditRecord, mask_secrets
from settings import Settings, SwitchboardError
from state.apps import AppRegistry
from state.auth_failures import AuthFailures
from state.operators import OperatorStore

if TYPE_CHECKING:
    from api.publisher import KafkaPublisher

T = TypeVar("T")


@dataclass
class Shell:
    """The stores, and the audit trail of the shell's user."""

    operators: OperatorStore
    apps: AppRegistry
    failures: AuthFailures
    publisher: KafkaPublisher

    async def audit(self, action: str, target_kind: str, target: str, **fields: Any) -> None:
        await self.publisher.publish_audit(
            AuditRecord(
                actor=cli_actor(),
                actor_kind="system",
                source="cli",
                action=action,
                target_kind=target_kind,
                target=target,
                before=mask_secrets(fields.pop("before", None)),
                after=mask_secrets(fields.pop("after", None)),
                **fields,
            )
        )


@asynccontextmanager
async def audited_shell(settings: Settings) -> Any:
    """Redis and the audit topic's publisher, both open (or a one-line error before anything changes)."""
    from api.publisher import KafkaPublisher, PublishError
    from state.connection import open_redis

    redis = open_redis(settings.redis)
    publisher = KafkaPublisher(
        settings.kafka,
        events_topic=settings.topic("events"),
        receipts_topic=settings.topic("receipts"),
        audit_topic=settings.topic("audit"),
    )
    try:
        await redis.ping()  # Redis first: its error names the fix (`switchboard parts up`)
        try:
            await publisher.start()
        except PublishError as exc:
            raise SwitchboardError(f"{exc}: changes are audited, so nothing was changed") from None
        try:
            yield Shell(OperatorStore(redis), AppRegistry(redis), AuthFailures(redis), publisher)
        finally:
            await publisher.stop()
    finally:
        await redis.aclose()


def in_shell(action: Callable[[Shell], Awaitable[T]]) -> T:
    async def run() -> T:
        async with audited_shell(Settings()) as shell:
            return await action(shell)

    return asyncio.run(run())



def read_password(stdin: bool, what: str) -> str:
    """The password from stdin's first line, or prompted for twice without echo."""
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt(what, hide_input=True, confirmation_prompt=True))

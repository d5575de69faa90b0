"""Commands that act as an operator: `--operator NAME` with that operator's personal token in
`SWITCHBOARD_OPERATOR_TOKEN`, so the shell is held to the same permissions and audit as the API."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from api.publisher import KafkaPublisher
from settings import Settings, SwitchboardError
from settings.permissions import Principal
from state.connection import open_redis
from state.operators import OperatorStore

TOKEN_VARIABLE = "SWITCHBOARD_OPERATOR_TOKEN"  # noqa: S105  (the variable's name, not a token)
_T = TypeVar("_T")




def act_as_operator(
    operator: str,
    action: Callable[[Settings, Redis, KafkaPublisher, Principal], Awaitable[_T]],
    refusals: tuple[type[Exception], ...] = (),
) -> _T:
    """Run `action` as the operator whose token is in the environment, with the audit topic open; a
    refusal of `refusals` becomes a one-line error (its `detail`)."""
    token = os.environ.get(TOKEN_VARIABLE, "")
    if not token:
        raise SwitchboardError(f"set {TOKEN_VARIABLE} to the personal token of operator {operator!r}")
    settings = Settings()

    async def run() -> _T:
        redis = open_redis(settings.redis)
        publisher = KafkaPublisher(
            settings.kafka,
            events_topic=settings.topic("events"),
            receipts_topic=settings.topic("receipts"),
            audit_topic=settings.topic("audit"),
        )
        try:
            operators = OperatorStore(redis)
            found = await operators.authenticate_token(token)
            if found is None or found.name != operator:
                # Which of the two is wrong is not said: the token is a secret, the name a guess.
                raise SwitchboardError(
                    f"{TOKEN_VARIABLE} is not a valid token of an active operator {operator!r}"
                )
            principal = await operators.principal(found)
            await publisher.start()
            try:
                return await action(settings, redis, publisher, principal)
            finally:
                await publisher.stop()
        except refusals as refused:
            raise SwitchboardError(str(getattr(refused, "detail", refused))) from None
        finally:
            await redis.aclose()

    return asyncio.run(run())

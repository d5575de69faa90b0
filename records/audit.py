"""Topic `audit`: one record per operator or administrative action, append-only; the analytics service
writes them to ClickHouse `audit_log`, where auditors query them (API `GET /v1/audit`, CLI `switchboard
audit`). Secrets never enter a record: `before` and `after` hold them masked (`mask_secrets`)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

Outcome = Literal["ok", "denied", "failed"]
ActorKind = Literal["operator", "app", "user", "system"]
MASK = "******"
# Field names whose values are secrets wherever they appear in a record's before/after.
SECRET_FIELDS = frozenset(
    {"secret", "app_secret", "password", "token", "api_key", "key", "private_key", "access_key_secret",
     "client_secret", "signing_key", "master_key"}
)


class AuditRecord(BaseModel):
    """Who did what, when, from where, to what, with the state before and after (secrets masked)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    audit_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    actor: str
    actor_kind: ActorKind
    source: str = ""
    """Where the action came from: the client address of an API call, `cli` for the command line."""
    action: str
    """`module.verb`, e.g. `operator.login`, `role.grant`, `app.rotate_key`, `channel.secret_set`."""
    target_kind: str = ""
    target: str = ""
    app: str = ""
    outcome: Outcome = "ok"
    reason: str = ""
    before: JsonValue = None
    after: JsonValue = None

    def model_post_init(self, context: Any, /) -> None:
        for side in (self.before, self.after):
            if _holds_secret(side):
                raise ValueError(f"audit record {self.action!r} holds an unmasked secret; mask_secrets() it")


def mask_secrets(value: Any) -> JsonValue:
    """`value` with every secret-named field's value replaced by the mask, recursively."""
    if isinstance(value, Mapping):
        return {str(key): _masked(str(key), item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(item) for item in value]
    return value  # type: ignore[no-any-return]


def _masked(key: str, item: Any) -> JsonValue:
    return MASK if key.lower() in SECRET_FIELDS and item not in (None, "") else mask_secrets(item)


def _holds_secret(value: JsonValue) -> bool:
    if isinstance(value, dict):
        return any(
            (key.lower() in SECRET_FIELDS and item not in (None, "", MASK)) or _holds_secret(item)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return any(_holds_secret(item) for item in value)
    return False

"""Data rights (PIPL art. 45 and 47, GDPR art. 15, 17 and 20): one person's data exported as one JSON
document, or erased. Shared by the API (`/v1/people/{user_id}/...`) and `switchboard people`.

Export reads Redis (state/data_rights.py) and ClickHouse (analytics/erasure.py, through the analytics
reader). Erasure hands ClickHouse's part to the analytics service on topic `erasures` first, then
clears Redis: if the broker refuses, nothing is erased and the caller retries; if Redis fails after,
asking again finds what is left (a second request is harmless, the rewrite is idempotent).

Audit: every export and erasure is one audit record naming the person by their pseudonym only
(`erased:<hmac of the user id>`), never by id or address, so the audit log does not re-identify
someone it recorded being erased. An auditor who knows an id can find its records through the
pseudonym (`switchboard people pseudonym USER_ID`, or the `pseudonym` field of an export).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from redis.asyncio import Redis

from analytics import erasure
from api.analytics_reader import LazyReader
from records.audit import ActorKind, AuditRecord
from records.erasure import ErasedAddress, ErasureMode, ErasureRequest, pseudonym
from records.topics import address_user_id
from settings import Settings
from state.data_rights import PersonState, addresses_of
from state.person_sweep import scrub

FORMAT: Final = "switchboard.person/1"
HISTORY_LIMIT: Final = 10_000


class RightsPublisher(Protocol):
    """Where erasure requests and audit records go (`api.publisher.KafkaPublisher`)."""

    async def publish_erasure(self, request: ErasureRequest) -> None: ...

    async def publish_audit(self, record: AuditRecord) -> None: ...


@dataclass(frozen=True)
class Actor:
    """Who asks, for the audit record: an operator's name, `cli` or a client address as source."""

    name: str
    kind: ActorKind
    source: str


def pseudonym_key(signing_secret: str) -> bytes:
    """The pseudonyms' key, derived from the link-signing secret (one secret to keep, not two)."""
    return hmac.new(signing_secret.encode(), b"switchboard erasure pseudonyms", hashlib.sha256).digest()


@dataclass(frozen=True)
class DataRights:
    state: PersonState
    publisher: RightsPublisher
    reader: LazyReader
    key: bytes

    def pseudonym(self, user_id: str) -> str:
        return pseudonym(self.key, user_id)

    async def request_for(self, user_id: str, mode: ErasureMode = "anonymise") -> ErasureRequest:
        """The person's identifiers as far as Redis still knows them (the id alone once erased)."""
        user = await self.state.profile(user_id)
        return ErasureRequest(
            user_id=user_id,
            pseudonym=self.pseudonym(user_id),
            addresses=tuple(
                ErasedAddress(channel=channel, address=address, address_id=address_user_id(channel, address))
                for channel, address in addresses_of(user)
            ),
            mode=mode,
        )

    async def export(
        self, user_id: str, actor: Actor, limit: int = HISTORY_LIMIT, offset: int = 0
    ) -> dict[str, Any]:
        """The document: Redis's sections, then a page of ClickHouse history (`history.more` names the
        tables holding more rows: ask again with `offset` + `limit`). AnalyticsUnavailable when
        ClickHouse cannot be read: an export is whole or not given."""
        request = await self.request_for(user_id)
        held = await self.state.export(user_id)
        page = await asyncio.to_thread(self.reader.run, lambda c: erasure.history(c, request, limit, offset))
        document = {
            "format": FORMAT,
            "user_id": user_id,
            "pseudonym": request.pseudonym,
            "exported_at": datetime.now(UTC).isoformat(),
            **held,
            "history": {
                "limit": limit,
                "offset": offset,
                "more": page.more,
                "message_events": page.message_events,
                "conversions": page.conversions,
                "event_log": page.event_log,
            },
            "notes": _notes(page.more, limit, offset),
        }
        await self.publisher.publish_audit(
            AuditRecord(
                actor=actor.name,
                actor_kind=actor.kind,
                source=actor.source,
                action="data_rights.export",
                target_kind="person",
                target=request.pseudonym,
                after={"sections": _sizes(document), "history_offset": offset, "history_limit": limit},
            )
        )
        return document

    async def erase(self, user_id: str, actor: Actor, reason: str, mode: ErasureMode) -> dict[str, Any]:
        """Erase the person: ClickHouse through the analytics service, Redis here; audited."""
        request = await self.request_for(user_id, mode)
        await self.publisher.publish_erasure(request)
        outcome = await self.state.erase(user_id)
        summary = {
            "request_id": request.request_id,
            "mode": mode,
            "removed": outcome["removed"],
            "kept_refusals": outcome["kept"],
        }
        await self.publisher.publish_audit(
            AuditRecord(
                actor=actor.name,
                actor_kind=actor.kind,
                source=actor.source,
                action="data_rights.erase",
                target_kind="person",
                target=request.pseudonym,
                # The reason is the operator's words: the person's id or an address in it is blanked.
                reason=scrub(reason, request.identifiers(), request.pseudonym),
                after=summary,
            )
        )
        return {
            "pseudonym": request.pseudonym,
            **summary,
            "unknown_keys": outcome["unknown"],
            "clickhouse": "requested: the analytics service anonymises the rows (topic erasures)"
            if mode == "anonymise"
            else "requested: the analytics service deletes the rows (topic erasures)",
        }


def _sizes(document: dict[str, Any]) -> dict[str, int]:
    """How much each section held, for the audit record (never the content)."""
    sizes: dict[str, int] = {}
    for name, value in document.items():
        if name == "history":
            sizes |= {f"history.{t}": len(value[t]) for t in ("message_events", "conversions", "event_log")}
        elif isinstance(value, list | dict):
            sizes[name] = len(value)
    return sizes


def _notes(more: list[str], limit: int, offset: int) -> list[str]:
    notes = [
        "inbox, engagement and caps are what Redis keeps (bounded per person); message history is "
        "what ClickHouse keeps (13 months of message_events and event_log)",
    ]
    if more:
        notes.append(
            f"history truncated at {limit} rows per table for {', '.join(more)}: ask again with "
            f"history_offset={offset + limit}"
        )
    return notes


def data_rights_of(
    settings: Settings, redis: Redis, publisher: RightsPublisher, reader: LazyReader
) -> DataRights:
    """The production wiring, shared by the API (`build_deps`) and `switchboard people`."""
    key = pseudonym_key(settings.signing_secret().get_secret_value())
    return DataRights(PersonState(redis, settings.inbox_max_per_user), publisher, reader, key)

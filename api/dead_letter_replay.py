"""Replaying a dead-lettered event, for the API and the command line alike: the letter's payload (or an
operator's corrected body) is validated as an Event and published to `events` again, where ingest
treats it like any event, deduplication included; each replay is audited as `dead_letter.replay`."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from api.publisher import Publisher, PublishError
from processors.dead_letter_shelf import REPLAYABLE_STAGE, ShelvedLetter
from records.audit import AuditRecord, mask_secrets
from records.signing import signature
from records.topics import Event, lane_of

ReplayOutcome = Literal["published", "not_replayable", "invalid", "forbidden"]


class AcceptedEvents(Protocol):
    """Whether ingest already accepted an event (`state.dedup.EventDedup`)."""

    async def accepted(self, app: str, event_id: str) -> bool: ...


class SigningKeys(Protocol):
    """The apps' events signing keys (`state.apps.AppRegistry`)."""

    async def signing_key(self, name: str) -> str | None: ...


@dataclass(frozen=True)
class Signing:
    """How a replay is signed: like the API's own events, with its app's key (`records.signing`); when
    ingest requires signatures, an app without a key cannot have its events replayed."""

    keys: SigningKeys
    required: bool = True


@dataclass(frozen=True)
class Replay:
    """What became of one letter's replay."""

    letter_id: str
    outcome: ReplayOutcome
    detail: str
    app: str = ""
    event_id: str = ""
    duplicate: bool = False
    """The event (app, event_id) was accepted before: ingest drops this replay as a duplicate."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Actor:
    """Who replays, as the audit record names them."""

    name: str
    kind: Literal["operator", "app", "user", "system"]
    source: str


def summary(shelved: ShelvedLetter) -> dict[str, Any]:
    """A letter without its payload, as listings show it."""
    letter = shelved.letter
    return {
        "id": shelved.letter_id,
        "received_at": letter.received_at.isoformat(),
        "stage": shelved.stage,
        "reason": letter.reason,
        "app": letter.app,
        "event_id": letter.event_id,
        "source": letter.source,
        "payload_bytes": letter.payload_bytes,
        "payload_truncated": letter.payload_truncated,
        "replayable": shelved.stage == REPLAYABLE_STAGE and not letter.payload_truncated,
    }


def inspected(shelved: ShelvedLetter) -> dict[str, Any]:
    """The letter with its payload decoded: JSON as JSON with secret-named fields masked, other text as
    text, bytes as base64."""
    letter = shelved.letter
    shown: Any = letter.payload
    kind = "base64" if letter.payload_encoding == "base64" else "text"
    if kind == "text":
        with contextlib.suppress(ValueError):  # not JSON: shown as the text it is
            shown, kind = mask_secrets(json.loads(letter.payload)), "json"
    return {**summary(shelved), "payload_kind": kind, "payload": shown}


def read_record(shelved: ShelvedLetter, actor: Actor) -> AuditRecord:
    """The audit record of a letter's payload being shown to someone."""
    return AuditRecord(
        actor=actor.name,
        actor_kind=actor.kind,
        source=actor.source,
        action="dead_letter.read",
        target_kind="dead_letter",
        target=shelved.letter_id,
        app=shelved.letter.app,
    )


def _payload(shelved: ShelvedLetter) -> bytes:
    letter = shelved.letter
    if letter.payload_encoding == "base64":
        return base64.b64decode(letter.payload)
    return letter.payload.encode()


async def replay(
    shelved: ShelvedLetter,
    *,
    publisher: Publisher,
    accepted: AcceptedEvents | None,
    actor: Actor,
    may_replay: Callable[[str], bool],
    edited: Mapping[str, Any] | None = None,
    signing: Signing | None = None,
) -> Replay:
    """Publish the letter's event (or `edited`) to `events` and audit it, whatever the outcome.

    `may_replay(app)` says whether the actor holds `dead_letters:replay` on an app; both the letter's
    app and the event's must pass, so a replay cannot move an event to another app. PublishError
    propagates (the caller answers 503) after an attempt to audit the failure, which a broker that is
    down refuses too; the replay was not published then, so nothing happened unaudited."""
    try:
        result = await _replay(shelved, publisher, accepted, may_replay, edited, signing)
    except PublishError as exc:
        failure = Replay(shelved.letter_id, "not_replayable", f"the broker did not take it: {exc}")
        with contextlib.suppress(PublishError):
            await publisher.publish_audit(_record(shelved, failure, actor, edited is not None))
        raise
    try:
        await publisher.publish_audit(_record(shelved, result, actor, edited is not None))
    except PublishError as exc:
        done = f"letter {shelved.letter_id}: {result.outcome}" + (
            " (the event is on events)" if result.outcome == "published" else ""
        )
        raise PublishError(f"{done}, but its audit record was not published: {exc}") from exc
    return result


async def _replay(
    shelved: ShelvedLetter,
    publisher: Publisher,
    accepted: AcceptedEvents | None,
    may_replay: Callable[[str], bool],
    edited: Mapping[str, Any] | None,
    signing: Signing | None,
) -> Replay:
    letter, letter_id = shelved.letter, shelved.letter_id
    if not may_replay(letter.app):
        return Replay(letter_id, "forbidden", f"no dead_letters:replay on app {letter.app or '(none)'!r}")
    if shelved.stage != REPLAYABLE_STAGE:
        return Replay(
            letter_id,
            "not_replayable",
            f"refused by {shelved.stage}, not ingest: only events are replayed (this is a "
            f"{shelved.stage} record; the event it came from can be sent again as a new event)",
            letter.app,
            letter.event_id,
        )
    if edited is None and letter.payload_truncated:
        return Replay(
            letter_id,
            "not_replayable",
            f"the letter keeps only the first {len(_payload(shelved))} of {letter.payload_bytes} bytes; "
            "give the corrected event in the request",
            letter.app,
            letter.event_id,
        )
    try:
        event = (
            Event.model_validate(edited)
            if edited is not None
            else Event.model_validate_json(_payload(shelved))
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'event'}: {error['msg']}"
            for error in exc.errors(include_url=False)[:10]
        )
        return Replay(
            letter_id, "invalid", f"still not a valid event: {problems}", letter.app, letter.event_id
        )
    if letter.app and event.app != letter.app:
        return Replay(
            letter_id,
            "forbidden",
            f"the letter is app {letter.app!r}'s; a replay may not send as {event.app!r}",
            letter.app,
            event.event_id,
        )
    if not may_replay(event.app):
        return Replay(
            letter_id, "forbidden", f"no dead_letters:replay on app {event.app!r}", event.app, event.event_id
        )
    key = await signing.keys.signing_key(event.app) if signing is not None else None
    if signing is not None and signing.required and not key:
        return Replay(
            letter_id,
            "not_replayable",
            f"app {event.app!r} has no events signing key, and ingest refuses unsigned events: "
            f"rotate its key (`switchboard apps rotate {event.app}`), then replay",
            event.app,
            event.event_id,
        )
    duplicate = accepted is not None and await accepted.accepted(event.app, event.event_id)
    record = event.model_dump_json().encode()
    await publisher.publish_event(
        f"{event.app}:{event.event_id}", record, lane_of(event), signature(record, key) if key else ""
    )
    detail = (
        "published to events; ingest drops it: this app and event_id were accepted already"
        if duplicate
        else "published to events; ingest takes it like any event (a duplicate app and event_id is dropped)"
    )
    return Replay(letter_id, "published", detail, event.app, event.event_id, duplicate)


def _record(shelved: ShelvedLetter, result: Replay, actor: Actor, edited: bool) -> AuditRecord:
    return AuditRecord(
        actor=actor.name,
        actor_kind=actor.kind,
        source=actor.source,
        action="dead_letter.replay",
        target_kind="dead_letter",
        target=shelved.letter_id,
        app=result.app or shelved.letter.app,
        outcome="ok"
        if result.outcome == "published"
        else "denied"
        if result.outcome == "forbidden"
        else "failed",
        reason=result.detail,
        before=mask_secrets({"reason": shelved.letter.reason, "source": shelved.letter.source}),
        after=mask_secrets(
            {
                "outcome": result.outcome,
                "event_id": result.event_id,
                "edited": edited,
                "duplicate": result.duplicate,
            }
        ),
    )

"""Replaying one dead letter with a fake publisher: what is published, what is refused and why, and the
audit record every outcome leaves (secrets masked, the broker's refusal audited before it propagates)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from api.dead_letter_replay import Actor, Signing, inspected, replay
from api.publisher import PublishError
from processors.dead_letter_shelf import ShelvedLetter
from processors.dead_letters import dead_letter
from records.audit import AuditRecord
from records.signing import signature_valid

EVENT: dict[str, Any] = {
    "event_id": "n1",
    "app": "campus",
    "type": "campus.notice",
    "template": "campus_notice",
    "category": "notice",
    "audience": {"user_ids": ["xi"]},
    "data": {"headline": "h", "body": "b"},
}
ACTOR = Actor("olga", "operator", "10.0.0.9")


@dataclass
class Publisher:
    events: list[tuple[str, bytes, str]] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)
    audits: list[AuditRecord] = field(default_factory=list)
    down: bool = False

    async def publish_event(self, key: str, value: bytes, lane: str = "bulk", signature: str = "") -> None:
        if self.down:
            raise PublishError("topic 'events' did not acknowledge the record")
        self.events.append((key, value, lane))
        self.signatures.append(signature)

    async def publish_audit(self, record: AuditRecord) -> None:
        self.audits.append(record)


@dataclass
class Accepted:
    seen: set[tuple[str, str]] = field(default_factory=set)

    async def accepted(self, app: str, event_id: str) -> bool:
        return (app, event_id) in self.seen


def letter(
    event: dict[str, Any], stage: str = "ingest", keep: int = 65536, app: str = "campus"
) -> ShelvedLetter:
    raw = json.dumps(event).encode()
    return ShelvedLetter(
        1, 7, dead_letter(raw, "events:0:3", "refused", app=app, event_id="n1", keep=keep), stage
    )


async def run(
    shelved: ShelvedLetter, publisher: Publisher, accepted: Accepted | None = None, **kwargs: Any
) -> Any:
    allowed = kwargs.pop("allowed", {"campus"})
    return await replay(
        shelved,
        publisher=publisher,  # type: ignore[arg-type]
        accepted=accepted,
        actor=ACTOR,
        may_replay=lambda app: app in allowed,
        **kwargs,
    )


async def test_a_corrected_event_is_published_and_a_second_time_is_a_duplicate() -> None:
    publisher, accepted = Publisher(), Accepted()
    bad = letter({**EVENT, "category": "newsletter"})
    first = await run(bad, publisher, accepted, edited=EVENT)
    accepted.seen.add(("campus", "n1"))
    second = await run(bad, publisher, accepted, edited=EVENT)
    assert (first.outcome, first.duplicate, second.outcome, second.duplicate) == (
        "published",
        False,
        "published",
        True,
    )
    assert [(key, lane) for key, _, lane in publisher.events] == [("campus:n1", "bulk")] * 2
    assert json.loads(publisher.events[0][1])["category"] == "notice"
    assert [(a.action, a.target, a.outcome, a.actor, a.source) for a in publisher.audits] == [
        ("dead_letter.replay", "1-7", "ok", "olga", "10.0.0.9")
    ] * 2
    assert publisher.audits[1].after == {
        "outcome": "published",
        "event_id": "n1",
        "edited": True,
        "duplicate": True,
    }


@pytest.mark.parametrize(
    ("shelved", "edited", "allowed", "outcome", "words"),
    [
        (
            letter({**EVENT, "category": "newsletter"}),
            None,
            {"campus"},
            "invalid",
            "category: Input should be",
        ),
        (
            letter(EVENT),
            {**EVENT, "app": "bursar"},
            {"campus", "bursar"},
            "forbidden",
            "may not send as 'bursar'",
        ),
        (letter(EVENT), None, {"bursar"}, "forbidden", "no dead_letters:replay on app 'campus'"),
        (letter(EVENT, stage="send"), None, {"campus"}, "not_replayable", "refused by send, not ingest"),
        (letter(EVENT, keep=40), None, {"campus"}, "not_replayable", "keeps only the first 40 of"),
    ],
)
async def test_refusals_publish_nothing_and_are_audited(
    shelved: ShelvedLetter, edited: Any, allowed: set[str], outcome: str, words: str
) -> None:
    publisher = Publisher()
    result = await run(shelved, publisher, edited=edited, allowed=allowed)
    assert result.outcome == outcome and words in result.detail
    assert publisher.events == []
    [record] = publisher.audits
    assert record.outcome == ("denied" if outcome == "forbidden" else "failed") and words in record.reason


async def test_a_broker_that_does_not_take_the_event_is_audited_then_raised() -> None:
    publisher = Publisher(down=True)
    with pytest.raises(PublishError):
        await run(letter(EVENT), publisher)
    [record] = publisher.audits
    assert record.outcome == "failed" and "did not take it" in record.reason


def test_an_inspected_payload_masks_secret_named_fields() -> None:
    shown = inspected(letter({**EVENT, "data": {"password": "hunter2", "token": "abc", "headline": "h"}}))
    assert shown["payload_kind"] == "json"
    assert shown["payload"]["data"] == {"password": "******", "token": "******", "headline": "h"}
    assert "hunter2" not in json.dumps(shown)


@dataclass
class Keys:
    keys: dict[str, str]

    async def signing_key(self, name: str) -> str | None:
        return self.keys.get(name)


async def test_a_replay_is_signed_with_its_apps_key_or_refused_without_one() -> None:
    publisher = Publisher()
    signed = await run(letter(EVENT), publisher, signing=Signing(Keys({"campus": "k" * 64})))
    unsigned = await run(letter(EVENT), publisher, signing=Signing(Keys({})))
    assert signed.outcome == "published"
    assert signature_valid(publisher.events[0][1], publisher.signatures[0], "k" * 64)
    assert unsigned.outcome == "not_replayable" and "no events signing key" in unsigned.detail
    assert len(publisher.events) == 1

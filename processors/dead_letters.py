"""Dead letters: a record the flow cannot carry, kept on topic `events.deadletter` with why.

A letter must itself fit in a record, so a payload too large for one (the very reason some records are
refused) is kept as its head, with its full size and a digest to recognise it by.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from records.topics import Receipt

PAYLOAD_KEPT = 64 * 1024
"""Bytes of a payload a letter keeps: all of it when it is this small, else the head."""


class DeadLetter(BaseModel):
    """The value of the dead-letter topic: the untouched payload (or its head) and why it was refused."""

    model_config = ConfigDict(extra="forbid")

    reason: str
    payload: str
    payload_encoding: str  # "utf-8" or "base64", so non-text payloads are kept byte for byte
    source: str
    received_at: datetime
    app: str = ""
    event_id: str = ""
    payload_bytes: int = 0
    """The size of the whole payload; more than `payload` holds when `payload_truncated`."""
    payload_truncated: bool = False
    payload_sha256: str = ""


def dead_letter(
    raw: bytes, source: str, reason: str, app: str = "", event_id: str = "", keep: int = PAYLOAD_KEPT
) -> DeadLetter:
    """A letter for `raw` (the record at `source`: topic:partition:offset) refused for `reason`."""
    kept = raw[:keep]
    payload, encoding = _text(kept, truncated=len(raw) > keep)
    return DeadLetter(
        reason=reason,
        payload=payload,
        payload_encoding=encoding,
        source=source,
        received_at=datetime.now(UTC),
        app=app,
        event_id=event_id,
        payload_bytes=len(raw),
        payload_truncated=len(raw) > keep,
        payload_sha256=hashlib.sha256(raw).hexdigest(),
    )


def dead_letter_receipt(letter: DeadLetter, **fields: Any) -> Receipt:
    """The `dead_lettered` row. Without a message id of its own (`fields`), one is derived from the
    payload, so replays of the same record collapse into one row."""
    digest = hashlib.blake2b((letter.payload_sha256 or letter.payload).encode(), digest_size=12).hexdigest()
    values: dict[str, Any] = {
        "message_id": f"dl-{digest}",
        "event_id": letter.event_id,
        "app": letter.app,
        "status": "dead_lettered",
        "reason": letter.reason[:1000],
        **fields,
    }
    return Receipt.model_validate(values)


def _text(kept: bytes, truncated: bool) -> tuple[str, str]:
    # A head cut inside a multi-byte character is still text: drop the partial character (at most 3
    # bytes) rather than switch the whole letter to base64.
    for cut in range(4 if truncated else 1):
        try:
            return kept[: len(kept) - cut].decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            continue
    return base64.b64encode(kept).decode(), "base64"

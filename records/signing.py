"""Signed records on the `events` topic: each carries the Kafka header `switchboard-signature:
v1=<hex HMAC-SHA256 of the record's value>`, keyed by its app's events signing key, so only a holder of
the app's key (the app itself, the API, Switchboard's own tools) can put an event on the topic for it.

The signing key is derived from the app key (`events_signing_key`), so an app producing to the topic
directly derives it from the key it was given; Switchboard keeps it beside the app (`state.apps`).
Rotating the app key changes it: records signed with the old one are dead-lettered from then on.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

SIGNATURE_HEADER = "switchboard-signature"
VERSION = "v1"
_DERIVATION = b"switchboard-events:"


def events_signing_key(app_key: str) -> str:
    """The events signing key of an app key: hex SHA-256 of `switchboard-events:` + the key."""
    return hashlib.sha256(_DERIVATION + app_key.encode()).hexdigest()


def signature(value: bytes, signing_key: str) -> str:
    """The header value for a record: `v1=<hex HMAC-SHA256 of value>`."""
    # hmac.digest is the one-shot C path: about a fifth of hmac.new(...).hexdigest()'s time per record.
    return f"{VERSION}={hmac.digest(signing_key.encode(), value, 'sha256').hex()}"


def signed_headers(value: bytes, signing_key: str) -> list[tuple[str, bytes]]:
    """The Kafka headers that sign `value`, as aiokafka takes them."""
    return [(SIGNATURE_HEADER, signature(value, signing_key).encode())]


def signature_header(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None) -> str | None:
    """The signature header's value among a record's headers (a list of pairs or a mapping), or None."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if name == SIGNATURE_HEADER:
            return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return None


def signature_valid(value: bytes, header: str, signing_key: str) -> bool:
    """Whether `header` is `value`'s signature under `signing_key` (compared in constant time)."""
    return hmac.compare_digest(header.encode(), signature(value, signing_key).encode())

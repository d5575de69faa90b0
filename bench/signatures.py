"""Bench: what signing the `events` topic costs per event (records/signing.py), on a typical event.

The producer's side: `signed_headers` (HMAC-SHA256 of the value, hex). Ingest's side: finding the header
among a record's headers, then `signature_valid` (the HMAC again and a constant-time compare); the
signing key lookup is one cached read of the app registry, measured apart with a warm cache.

Run: .venv/bin/python bench/signatures.py [--events 200000] [--bytes 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from records.signing import events_signing_key, signature_header, signature_valid, signed_headers


def per_call(label: str, work: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        work()
    micros = (time.perf_counter() - started) / n * 1e6
    print(f"{label:<46} {micros:6.2f} µs per event")
    return micros


def typical_event(size: int) -> bytes:
    data = {"amount": "¥5,500.00", "due_date": "2026-12-06", "term": "2026-2027 autumn"}
    body: dict[str, Any] = {
        "event_id": "fee-2026-000123",
        "app": "bursar",
        "type": "fee.due",
        "template": "fee_due",
        "audience": {"user_ids": ["s2024001"]},
        "category": "transactional",
        "priority": "high",
        "data": data,
    }
    raw = json.dumps(body, ensure_ascii=False).encode()
    pad = max(0, size - len(raw) - 12)
    return json.dumps({**body, "data": {**data, "note": "x" * pad}}, ensure_ascii=False).encode()


async def cached_lookup(n: int) -> float:
    """AppRegistry.signing_key with a warm worker cache, against a stand-in for Redis (never reached)."""
    from state.apps import AppRegistry

    registry = AppRegistry(None, cache_seconds=3600.0)  # type: ignore[arg-type]
    registry._cached["bursar"] = (time.monotonic() + 3600, {"signing_key": "k" * 64})
    started = time.perf_counter()
    for _ in range(n):
        await registry.signing_key("bursar")
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--bytes", type=int, default=600)
    args = parser.parse_args()
    value = typical_event(args.bytes)
    key = events_signing_key("sbk_" + "k" * 43)
    headers = signed_headers(value, key)
    print(f"{len(value)}-byte event, {args.events:,} times")
    sign = per_call("producer: signed_headers", lambda: signed_headers(value, key), args.events)
    check = per_call(
        "ingest: header lookup + signature_valid",
        lambda: signature_valid(value, str(signature_header(headers)), key),
        args.events,
    )
    lookup = asyncio.run(cached_lookup(args.events))
    print(f"{'ingest: signing key from the warm app cache':<46} {lookup:6.2f} µs per event")
    print(f"ingest total {check + lookup:.2f} µs per event; producer {sign:.2f} µs per event")


if __name__ == "__main__":
    main()

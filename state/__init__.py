"""Redis-backed state: user directory, apps, dedup, inbox, idempotency keys, flow counters."""

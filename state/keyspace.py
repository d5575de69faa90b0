"""Where state lives in a Redis Cluster: hash tags that keep every multi-key script and transaction
in one slot while the data still spreads over the whole cluster.

Redis hashes only the part of a key between the first `{` and the next `}` (its hash tag), so keys
with the same tag share a slot and one script may touch them all. Per-person state (inbox, caps
counted per user, offline keep) is tagged by user id, per-message state by message id, a cap or a
pace counted across people by its own name.

The global indexes (the delivery schedule, parked dispatches, fallback chains, the users holding
offline deliveries) cannot be one key without putting all of it on one node, so each is split into
`SHARDS` shards: an item goes to shard `crc32(its id) % SHARDS`, and the item's own keys carry the
shard's tag, so a script moves items between the index and their bodies inside one slot. The shard
tags are chosen to land in evenly spaced slots, so shards spread over any cluster of up to `SHARDS`
evenly split primaries. `SHARDS` is part of the key layout: changing it moves data (a migration).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

SHARDS = 16


def tag(value: str) -> str:
    """`{value}`: the hash tag keeping one user's or one message's keys in one slot.

    A value holding a brace would end the tag early (or make it empty and hash the whole key), so
    such a value is tagged by its checksum instead."""
    if not value or "{" in value or "}" in value:
        return f"{{~{zlib.crc32(value.encode()):08x}}}"
    return "{" + value + "}"


def slot(key: str | bytes) -> int:
    """The cluster slot of a key, as Redis computes it."""
    return key_slot(key.encode() if isinstance(key, str) else key)


def slots(keys: Iterable[str | bytes]) -> set[int]:
    return {slot(key) for key in keys}


def _shard_tags() -> tuple[str, ...]:
    # For shard n, the first tag `{sN.k}` whose slot falls in the n-th of SHARDS equal slot ranges.
    width = REDIS_CLUSTER_HASH_SLOTS // SHARDS
    found: list[str] = []
    for n in range(SHARDS):
        k = 0
        while not n * width <= slot(f"{{s{n}.{k}}}") < (n + 1) * width:
            k += 1
        found.append(f"{{s{n}.{k}}}")
    return tuple(found)


SHARD_TAGS: tuple[str, ...] = _shard_tags()


def shard_of(ident: str) -> int:
    """Which shard of a global index the item named `ident` belongs to (stable across versions)."""
    return zlib.crc32(ident.encode()) % SHARDS


def shard_tag(ident: str) -> str:
    return SHARD_TAGS[shard_of(ident)]


def share(limit: int, counts: list[int]) -> list[int]:
    """How many of `limit` to take from each shard holding `counts` items: what is there, evenly
    (water-filling), so one busy shard cannot starve the others and the total stays within `limit`."""
    given = [0] * len(counts)
    left = max(limit, 0)
    active = [i for i, count in enumerate(counts) if count > 0]
    while left > 0 and active:
        each = max(1, left // len(active))
        for i in list(active):
            take = min(each, counts[i] - given[i], left)
            given[i] += take
            left -= take
            if given[i] >= counts[i]:
                active.remove(i)
            if left == 0:
                break
    return given

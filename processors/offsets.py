"""Faust 0.15.3 may commit past a record that was never acknowledged; this module mends that.

`Consumer._new_offset` works out the next offset to commit from the acknowledged ones. Its guard
against a gap at the head, `min(acked) - committed > 1`, treats the committed offset as the last one
processed, but Kafka's committed offset (and Faust's own `_committed_offset`) is the next one to read.
So with offset C committed, C still in hand and C+1 acknowledged, Faust commits C+2 and C is never
processed, even after a restart. Faust acknowledges some records out of order itself (a record it
skips for a stale rebalance generation is acknowledged at once), which is how the first record after
a restart went missing against the local broker (FIELD-NOTES). The mended version refuses to commit
while the committed offset itself is unacknowledged; everything else is Faust's code as released.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.consumer import Consumer
from faust.types import TP
from faust.utils.functional import consecutive_numbers

_FAUST_VERSION = "0.15.3"  # the release whose `_new_offset` this replaces; pinned in pyproject.toml
RELEASED_NEW_OFFSET = Consumer._new_offset  # kept so a test can show the defect it mends


def new_offset(consumer: Any, tp: TP) -> int | None:
    """The offset to commit for `tp`: one past the acknowledged run that starts at the committed offset."""
    acked: list[int] = consumer._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gap_for_tp = consumer._gap[tp]
    if gap_for_tp:
        # Offsets that do not exist (compaction, transaction markers) count as acknowledged.
        candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
        if candidates:
            filled: list[int] = []
            for entry in candidates:
                filled.extend(range(entry.begin, entry.end))
            new_max_offset = max(filled[-1], max_offset + 1)
            acked.extend(filled)
            gap_for_tp.chop(0, new_max_offset)
    acked.sort()
    committed: int | None = consumer._committed_offset[tp]
    if committed is not None and acked[0] > committed:
        return None  # the committed offset is the next to read and is not acknowledged yet
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    consumer._acked_index[tp].difference_update(batch)
    return int(batch[-1]) + 1


def mend_faust_commits() -> None:
    """Install `new_offset` on Faust's consumer; idempotent. Refuses another Faust release, whose
    consumer this replacement was not read against."""
    if faust.__version__ != _FAUST_VERSION:
        raise RuntimeError(
            f"processors/offsets.py mends faust-streaming {_FAUST_VERSION}, but {faust.__version__} is "
            "installed: check whether its Consumer._new_offset still commits past an unacknowledged "
            "record, then update or remove the mend"
        )
    Consumer._new_offset = new_offset  # type: ignore[method-assign,assignment]  # the mend itself

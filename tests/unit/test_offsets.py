"""The mended commit offset never passes a record that was not acknowledged (processors/offsets.py)."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from processors.offsets import RELEASED_NEW_OFFSET, mend_faust_commits, new_offset

TOPIC = TP("deliveries", 0)


def consumer(committed: int | None, acked: list[int], gaps: tuple[tuple[int, int], ...] = ()) -> Any:
    state = SimpleNamespace(
        _acked=defaultdict(list), _gap=defaultdict(IntervalTree), _committed_offset=defaultdict(lambda: None),
        _acked_index=defaultdict(set),
    )
    state._acked[TOPIC] = list(acked)
    state._acked_index[TOPIC] = set(acked)
    state._committed_offset[TOPIC] = committed
    for begin, end in gaps:
        state._gap[TOPIC].addi(begin, end)
    return state


def test_faust_as_released_commits_past_the_unacknowledged_head() -> None:
    """The defect itself: committed 10 (the next to read), 10 in hand, 11 and 12 acknowledged."""
    assert RELEASED_NEW_OFFSET(consumer(10, [11, 12]), TOPIC) == 13


def test_nothing_is_committed_while_the_next_record_to_read_is_unacknowledged() -> None:
    assert new_offset(consumer(10, [11, 12]), TOPIC) is None
    assert new_offset(consumer(0, [1]), TOPIC) is None


def test_an_acknowledged_run_from_the_committed_offset_is_committed_up_to_its_first_gap() -> None:
    state = consumer(10, [10, 11, 12, 14])
    assert new_offset(state, TOPIC) == 13
    assert state._acked[TOPIC] == [14] and state._acked_index[TOPIC] == {14}


def test_offsets_that_do_not_exist_count_as_acknowledged() -> None:
    assert new_offset(consumer(10, [12, 13], gaps=((10, 12),)), TOPIC) == 14


def test_the_mend_is_installed_on_faust() -> None:
    mend_faust_commits()
    assert Consumer._new_offset is new_offset

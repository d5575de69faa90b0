"""The mended commit offset never passes a record that was not acknowledged, and a commit has a deadline
(processors/offsets.py)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from intervaltree import IntervalTree

from processors.offsets import (
    RELEASED_COMMIT,
    RELEASED_NEW_OFFSET,
    bounded_commit,
    mend_faust_commits,
    new_offset,
)

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


async def test_a_commit_the_broker_never_takes_is_abandoned_as_not_committed() -> None:
    # aiokafka retries UnknownTopicOrPartitionError for ever; a broker that lost its topics answers it
    # for good, and Faust's rebalance waits for the commit in progress.
    calls: list[dict[TP, int]] = []

    async def never_done(_consumer: Any, offsets: Mapping[TP, int]) -> bool:
        calls.append(dict(offsets))
        await asyncio.sleep(3600)
        return True

    started = time.monotonic()
    assert await bounded_commit(never_done, 0.2)(object(), {TOPIC: 7}) is False
    assert time.monotonic() - started < 2
    assert calls == [{TOPIC: 7}]


async def test_a_commit_within_its_deadline_answers_as_it_did() -> None:
    async def done(_consumer: Any, offsets: Mapping[TP, int]) -> bool:
        return offsets[TOPIC] == 7

    assert await bounded_commit(done, 5)(object(), {TOPIC: 7}) is True
    assert await bounded_commit(done, 5)(object(), {TOPIC: 8}) is False


def test_the_mend_bounds_faust_s_aiokafka_commits() -> None:
    mend_faust_commits()
    assert AIOKafkaConsumerThread._commit is not RELEASED_COMMIT
    assert AIOKafkaConsumerThread._commit.__name__ == "commit_within"

"""Which lane an event travels in, and the lane's topic names."""

from __future__ import annotations

import pytest

from records.topics import EventCore, lane_of, lane_topic


def core(**fields: str) -> EventCore:
    base = {"event_id": "e1", "app": "campus", "type": "t", "template": "x", "category": "notice"}
    return EventCore.model_validate({**base, **fields})


@pytest.mark.parametrize(
    ("fields", "lane"),
    [
        ({"category": "verification"}, "urgent"),
        ({"category": "alert", "priority": "low"}, "urgent"),
        ({"category": "notice", "priority": "urgent"}, "urgent"),
        ({"category": "marketing", "priority": "high"}, "urgent"),
        ({"category": "notice"}, "bulk"),
        ({"category": "transactional", "priority": "normal"}, "bulk"),
        ({"category": "marketing", "priority": "low"}, "bulk"),
    ],
)
def test_codes_alerts_and_urgent_or_high_priority_take_the_urgent_lane(
    fields: dict[str, str], lane: str
) -> None:
    assert lane_of(core(**fields)) == lane


def test_the_urgent_lane_of_a_topic_is_its_urgent_twin() -> None:
    assert lane_topic("t1-events", "urgent") == "t1-events.urgent"
    assert lane_topic("t1-dispatch", "bulk") == "t1-dispatch"

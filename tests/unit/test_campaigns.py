"""Campaigns without services: ids name their app, a composition is checked at the edge, and the state
an operator sees is derived from the stored one and the progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from api.campaign_flow import derived_state as _state
from state.campaigns import Campaign, CampaignState, Composition, app_of, new_campaign_id

BODY: dict[str, Any] = {
    "app": "lms", "name": "Week 1", "audience": {"tags": ["year-2020"]}, "category": "notice",
    "template": "course_reminder", "data": {"course": "LA"},
}


def test_an_id_names_its_app_and_nothing_else_passes_for_one() -> None:
    campaign_id = new_campaign_id("lms.eng")
    assert app_of(campaign_id) == "lms.eng" and len(campaign_id) == len("lms.eng") + 14
    assert new_campaign_id("lms") != new_campaign_id("lms")
    assert [app_of(v) for v in ("whatever", "lms.x", ".c0123456789ab", "lms.d0123456789ab")] == [None] * 4


def test_the_event_of_a_composition_carries_the_campaign_its_rate_and_strategy() -> None:
    composition = Composition.model_validate(BODY | {"pace_per_second": 50, "strategy": "sms-then-email"})
    event = composition.event("lms.c0123456789ab", "operator:li")
    assert (event.event_id, event.campaign, event.submitted_by) == (
        "campaign-lms.c0123456789ab", "lms.c0123456789ab", "operator:li"
    )
    assert (event.pace_per_second, event.strategy, event.type, event.channels) == (
        50, "sms-then-email", "campaign", None
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"send_at": "2026-12-01T08:00:00"}, "timezone offset"),
        ({"pace_per_second": 0}, "pace_per_second"),
        ({"channels": []}, "channels"),
        ({"colour": "red"}, "colour"),
        ({"app": "a" * 101}, "at most 100"),
    ],
)
def test_a_bad_composition_names_what_is_wrong(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Composition.model_validate(BODY | change)


def campaign(state: CampaignState, send_at: datetime | None = None) -> Campaign:
    composition = Composition.model_validate(BODY | {"send_at": send_at})
    return Campaign(
        id="lms.c0123456789ab", app="lms", name="Week 1", state=state, composition=composition,
        created_by="operator:li", created_at=datetime.now(UTC),
    )


def test_the_state_shown_is_scheduled_until_due_and_done_once_every_message_settled() -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    assert _state(campaign("scheduled", later), 3, None) == "scheduled"
    due = datetime.now(UTC) - timedelta(seconds=1)
    assert _state(campaign("scheduled", due), 3, {"settled": 1}) == "running"
    assert _state(campaign("running"), 3, {"settled": 3}) == "done"
    assert _state(campaign("running"), None, {"settled": 3}) == "running"  # a segment: count unknown
    assert _state(campaign("cancelled"), 3, {"settled": 3}) == "cancelled"


def test_an_sms_estimate_counts_the_segments_of_the_rendered_text() -> None:
    from pathlib import Path

    from api.campaign_service import CampaignDesk, _sms_segments
    from channels.templates import TemplateCatalog

    catalog = TemplateCatalog(Path(__file__).resolve().parents[2] / "templates")
    desk = CampaignDesk(store=None, inbox=None, redis=None, templates=catalog)  # type: ignore[arg-type]
    short = {"course": "LA", "starts_at": "10:00", "room": "B201"}
    long = short | {"course": "高等数学与线性代数" * 8}  # past 70 UCS-2 characters: several segments
    assert _sms_segments(desk, Composition.model_validate(BODY | {"data": short})) == 1
    assert _sms_segments(desk, Composition.model_validate(BODY | {"data": long})) == 2

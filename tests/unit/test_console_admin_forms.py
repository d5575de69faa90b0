"""The admin pages without services: the API's refusals by field, the text areas parsed with their place,
a person's history scoped to the apps whose statistics the operator reads."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from analytics.trace import Transition
from api.apps import NewApp
from api.channel_accounts import SecretValue
from api.console.pages.channels import _account_fields
from api.console.pages.people import _history
from api.console.pages.refusals import field_errors, refusal, status_of
from api.console.pages.segments import _definition
from api.trace import MessageTrace, Pending
from settings.permissions import Grant, Principal


def test_errors_are_shown_by_field_with_the_rest_of_their_place() -> None:
    errors = field_errors([
        {"loc": ("body", "definition", "all[1].engaged.within"), "msg": "'30 dys' is not a duration"},
        {"loc": ("body", "definition", "all[2].attribute"), "msg": "unknown attribute 'locle'"},
        {"loc": ("body",), "msg": "platform: unknown"},
    ])
    assert errors == {
        "definition": "all[1].engaged.within: '30 dys' is not a duration\n"
                      "all[2].attribute: unknown attribute 'locle'",
        "": "platform: unknown",
    }


def test_a_refused_form_model_names_its_field_and_never_quotes_the_value() -> None:
    with pytest.raises(ValidationError) as caught:
        NewApp.model_validate({"name": "bad name!", "channels": []})
    errors = refusal(caught.value)
    assert set(errors) == {"name", "channels"}
    assert "bad name!" not in "".join(errors.values())
    with pytest.raises(ValidationError) as secret:
        SecretValue.model_validate({"value": ""})
    assert set(refusal(secret.value)) == {"value"}
    assert status_of(secret.value) == 422


def test_an_api_refusal_keeps_its_status_and_message() -> None:
    exc = HTTPException(409, "app 'lms' is already registered")
    assert refusal(exc) == {"": "app 'lms' is already registered"}
    assert status_of(exc) == 409


def test_a_segment_definition_is_read_as_yaml_or_json() -> None:
    assert _definition("all:\n  - tags: {all: [a]}\n") == {"all": [{"tags": {"all": ["a"]}}]}
    assert _definition('{"bound": "email"}') == {"bound": "email"}


@pytest.mark.parametrize(("text", "expected"), [
    ("all: [\n", "line 2"),
    ("- just a list", "a condition"),
    ("", "a condition"),
])
def test_a_definition_that_is_not_a_condition_is_refused_at_its_place(text: str, expected: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        _definition(text)
    assert expected in refusal(caught.value)["definition"]


def test_account_settings_must_be_a_json_object_and_a_syntax_error_names_its_line() -> None:
    given = {"code": "sms-a", "name": "A", "type": "sms", "platform": "aliyun", "settings": '{"region": "x"}'}
    assert _account_fields(given)["settings"] == {"region": "x"}
    with pytest.raises(RequestValidationError) as caught:
        _account_fields({**given, "settings": '{\n"region": }'})
    assert "line 2" in refusal(caught.value)["settings"]


class _Tracer:
    """Messages of two apps; records which app each question was scoped to."""

    def __init__(self) -> None:
        self.asked: list[str | None] = []

    async def messages_of(self, user_id: str, *, event_id: str | None = None,
                          app: str | None = None) -> list[str]:
        self.asked.append(app)
        return [f"{a}-m" for a in ("lms", "shop") if app in (None, a)]

    async def trace(self, message_ids: list[str], app: str | None = None) -> list[MessageTrace]:
        at = datetime(2026, 1, 1, tzinfo=UTC)
        return [MessageTrace(m, None, [_transition(m, at)], Pending()) for m in message_ids]


def _transition(message_id: str, at: datetime) -> Transition:
    return Transition(
        at=at, message_id=message_id, event_id="e", app=message_id.split("-")[0], user_id="u", channel="sms",
        provider="", status="failed", reason="quota", rule_id="", rule_version="", template="", campaign="",
        attempt=0, step=0, variant="", cost=Decimal(0),
    )


def _deps(tracer: _Tracer) -> Any:
    return SimpleNamespace(analytics=SimpleNamespace(tracer=tracer))


async def test_the_history_shows_only_the_apps_whose_statistics_the_operator_reads() -> None:
    tracer = _Tracer()
    lms_only = Grant("analyst", frozenset({"statistics:read"}), frozenset({"lms"}))
    scoped = Principal("operator", "ada", (lms_only,))
    traces, note = await _history(_deps(tracer), scoped, "u")
    assert [t.message_id for t in traces] == ["lms-m"] and note == "" and tracer.asked == ["lms"]

    everyone = Principal("operator", "bo", (Grant("analyst", frozenset({"statistics:read"})),))
    traces, _ = await _history(_deps(tracer), everyone, "u")
    assert {t.message_id for t in traces} == {"lms-m", "shop-m"}

    nothing = Principal("operator", "cy", (Grant("people", frozenset({"people:read"})),))
    assert await _history(_deps(tracer), nothing, "u") == ([], "history.no_permission")
    assert await _history(SimpleNamespace(analytics=None), everyone, "u") == ([], "history.no_analytics")

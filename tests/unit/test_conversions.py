"""The Conversion record: what a business system may report, and each refusal naming its field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from records.conversions import Conversion

PAYMENT: dict[str, Any] = {
    "conversion_id": "pay-20261123-0001", "app": "bursar", "user_id": "s1001", "type": "payment",
    "value": "1280.50", "currency": "CNY", "occurred_at": "2026-11-23T08:00:00+08:00",
}


def test_a_conversion_round_trips_through_json_with_its_value_exact() -> None:
    attributes = {"term": "autumn", "late": True}
    paid = Conversion.model_validate({**PAYMENT, "value": 0.1, "attributes": attributes})
    assert paid.value == Decimal("0.1")
    assert Conversion.model_validate_json(paid.model_dump_json()) == paid
    assert Conversion.model_validate({**PAYMENT, "currency": "JPY", "value": 1500}).value == 1500


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"value": "12.345"}, "value", "more decimals than CNY has minor units (2)"),
    ({"currency": "JPY", "value": "1.5"}, "value", "more decimals than JPY"),
    ({"value": -1}, "value", "greater than or equal to 0"),
    ({"value": True}, "value", "not true/false"),
    ({"value": "1e13"}, "value", "less than or equal to"),
    ({"currency": "RMB"}, "currency", "not an ISO 4217 currency code"),
    ({"currency": "cny"}, "currency", "pattern"),
    ({"occurred_at": "2026-11-23T08:00:00"}, "occurred_at", "timezone"),
    ({"occurred_at": 1795000000}, "occurred_at", "ISO time with offset"),
    ({"message_id": "m1", "token": "abcdefghij.klmnop"}, "token", "not both"),
    ({"token": "not a token"}, "token", "pattern"),
    ({"user_id": ""}, "user_id", "at least 1 character"),
    ({"channel": "sms"}, "channel", "Extra inputs"),
    ({"attributes": {f"k{i}": i for i in range(33)}}, "attributes", "at most 32"),
])
def test_each_refusal_names_its_field(change: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Conversion.model_validate({**PAYMENT, **change})
    [error] = caught.value.errors()
    assert error["loc"][0] == field
    assert words in error["msg"]


def test_nested_attributes_are_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        Conversion.model_validate({**PAYMENT, "attributes": {"course": {"id": 1}}})
    assert {e["loc"][:2] for e in caught.value.errors()} == {("attributes", "course")}

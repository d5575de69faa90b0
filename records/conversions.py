"""The contract of topic `conversions` and of `POST /v1/conversions`: a business outcome (a payment, an
enrolment, an order) that attribution links to the message that led to it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from iso4217 import Currency
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from records.vocabulary import Name

__all__ = ["MAX_ATTRIBUTES", "AttributeValue", "Conversion", "LinkToken"]

MAX_ATTRIBUTES = 32
MAX_VALUE = Decimal("999999999999.999999")  # what ClickHouse's Decimal(18, 6) columns hold

# The shape of a signed link token (channels.links): base64url payload, a dot, base64url MAC.
LinkToken = Annotated[
    str, StringConstraints(min_length=10, max_length=4096, pattern=r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")
]
AttributeValue = (
    Annotated[str, StringConstraints(max_length=1024)]
    | Annotated[bool, Strict()]
    | int
    | Annotated[float, Field(allow_inf_nan=False)]
)


class Conversion(BaseModel):
    """One business outcome for one person. `conversion_id` is its idempotency key, unique per `app`:
    a conversion reported twice is stored and attributed once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conversion_id: Name
    app: Name
    user_id: Name
    type: Name = Field(
        description="What happened, e.g. payment, enrolment, order; attribution rules are per type."
    )
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = Field(
        description="ISO 4217 code, e.g. CNY, USD; `value` has at most as many decimals as its minor units."
    )
    value: Decimal = Field(
        ge=0, le=MAX_VALUE, decimal_places=6,
        description="What the conversion is worth, in `currency`; a JSON number or a decimal string.",
    )
    occurred_at: AwareDatetime = Field(description="When it happened: an ISO time with offset.")
    message_id: Name | None = Field(
        None,
        description="The message that led to it, when the business system knows; credited when it reached "
        "the user.",
    )
    token: LinkToken | None = Field(
        None,
        description="The tracked-link (click) token that carried the person here, instead of `message_id`; "
        "the API verifies it and publishes the message id it names.",
    )
    attributes: dict[Name, AttributeValue] = Field(
        default_factory=dict,
        max_length=MAX_ATTRIBUTES,
        description=f"Free dimensions for analysts (plan, course, coupon...), at most {MAX_ATTRIBUTES}.",
    )

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _occurred_at_text(cls, value: object) -> object:
        # pydantic would read a number as seconds since 1970; the contract is an ISO time with offset.
        if isinstance(value, str | datetime):
            return value
        raise ValueError("occurred_at must be an ISO time with offset, e.g. 2026-11-23T08:00:00+08:00")

    @field_validator("value", mode="before")
    @classmethod
    def _value_not_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("value must be a number or a decimal string, not true/false")
        return value

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, code: str) -> str:
        try:
            Currency(code)
        except ValueError:
            raise ValueError(f"{code!r} is not an ISO 4217 currency code (e.g. CNY, USD, EUR)") from None
        return code

    @field_validator("value")
    @classmethod
    def _within_minor_units(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        currency = info.data.get("currency")  # absent when the currency itself was refused
        minor = Currency(currency).exponent if currency else None
        if minor is not None and value != value.quantize(Decimal(1).scaleb(-minor)):
            raise ValueError(f"{value} has more decimals than {currency} has minor units ({minor})")
        return value

    @field_validator("token")
    @classmethod
    def _not_both(cls, token: str | None, info: ValidationInfo) -> str | None:
        if token is not None and info.data.get("message_id") is not None:
            raise ValueError("give message_id or token, not both")
        return token

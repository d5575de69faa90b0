"""SMS segment counting: GSM-7 with its extension table, UCS-2, and the Chinese carriers' billing."""

from __future__ import annotations

import pytest

from channels.base import InvalidAddressError
from channels.sms_segments import (
    Segments,
    billed_segments,
    count_carrier_segments,
    count_segments,
    is_gsm7,
    require_e164,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Segments("gsm7", 1, 0)),
        ("a" * 160, Segments("gsm7", 1, 160)),
        ("a" * 161, Segments("gsm7", 2, 161)),
        ("a" * 306, Segments("gsm7", 2, 306)),
        ("a" * 307, Segments("gsm7", 3, 307)),
        ("€" * 80, Segments("gsm7", 1, 160)),  # extension characters take two septets
        ("€" * 81, Segments("gsm7", 2, 162)),
        # 306 septets fit two parts by arithmetic, but the € cannot be split across the boundary.
        ("a" * 152 + "€" + "a" * 152, Segments("gsm7", 3, 306)),
        ("Ça coûte 5€ {ok}", Segments("ucs2", 1, 16)),  # û is not GSM-7
        ("Ça a coûté", Segments("ucs2", 1, 10)),
        ("Çà {x}", Segments("gsm7", 1, 8)),
        ("你" * 70, Segments("ucs2", 1, 70)),
        ("你" * 71, Segments("ucs2", 2, 71)),
        ("你" * 134, Segments("ucs2", 2, 134)),
        ("你" * 135, Segments("ucs2", 3, 135)),
        ("😀" * 35, Segments("ucs2", 1, 70)),  # astral characters are surrogate pairs: two units
        ("a" * 66 + "😀" + "a" * 66, Segments("ucs2", 3, 134)),  # the pair is never split
    ],
    ids=lambda value: value if isinstance(value, Segments) else None,
)
def test_count_segments(text: str, expected: Segments) -> None:
    assert count_segments(text) == expected


@pytest.mark.parametrize(
    ("text", "signature", "expected"),
    [
        ("您的验证码为123456", "阿里云", Segments("carrier", 1, 17)),
        ("x" * 65, "阿里云", Segments("carrier", 1, 70)),  # 【阿里云】 is five characters
        ("x" * 66, "阿里云", Segments("carrier", 2, 71)),
        ("x" * 129, "阿里云", Segments("carrier", 2, 134)),
        ("x" * 130, "阿里云", Segments("carrier", 3, 135)),
        ("Hello", "", Segments("carrier", 1, 5)),
    ],
)
def test_carrier_billing_counts_characters_with_the_signature(
    text: str, signature: str, expected: Segments
) -> None:
    assert count_carrier_segments(text, signature) == expected


@pytest.mark.parametrize(
    "text",
    ["【统一身份认证】您的验证码为123456，5分钟内有效。", "您的验证码为123456，5分钟内有效。【统一身份认证】",
     "您的验证码为123456，5分钟内有效。"],
)
def test_a_signature_in_the_text_is_replaced_by_the_providers(text: str) -> None:
    assert count_carrier_segments(text, "示例大学") == Segments("carrier", 1, 26)
    assert billed_segments(text, "示例大学", "+8613800138000").length == 26


def test_without_a_signature_the_text_is_counted_as_sent() -> None:
    text = "【统一身份认证】" + "码" * 62
    assert billed_segments(text, "", "+8613800138000") == Segments("carrier", 1, 70)
    assert billed_segments(text + "。", "", "+8613800138000") == Segments("carrier", 2, 71)


def test_an_english_text_costs_more_in_china_than_on_gsm() -> None:
    text = "Your code is 123456. " * 5  # 105 GSM-7 characters: one SMS elsewhere
    assert billed_segments(text, "Uni", "+447700900123") == Segments("gsm7", 1, 105)
    assert billed_segments(text, "Uni", "+8613800138000") == Segments("carrier", 2, 110)


def test_segments_unpack_as_a_tuple() -> None:
    encoding, segments, length = count_segments("hi")
    assert (encoding, segments, length) == ("gsm7", 1, 2)
    assert is_gsm7("@£$¥") and not is_gsm7("ç")


@pytest.mark.parametrize("number", ["+8613800138000", "+447700900123", "+12025550123"])
def test_e164_numbers_pass(number: str) -> None:
    assert require_e164(number, "aliyun") == number


@pytest.mark.parametrize(
    "number", ["13800138000", "+86 138 0013 8000", "+0123456789", "+86", "", "tel:+8613800138000"]
)
def test_other_numbers_are_invalid_addresses_named_in_the_error(number: str) -> None:
    with pytest.raises(InvalidAddressError, match=r"aliyun: .* is not an E\.164 phone number"):
        require_e164(number, "aliyun")

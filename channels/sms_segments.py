"""How many SMS segments a text takes, for cost: GSM-7 or UCS-2, and the Chinese carriers' billing rule.

GSM-7 carries 160 septets in one segment and 153 per part of a long message (characters of the
extension table take two septets and are never split); UCS-2 carries 70 UTF-16 units, 67 per part
(a surrogate pair is never split). Mainland Chinese carriers, and so Aliyun and Tencent, bill by
characters whatever the encoding: 70 for one message, 67 per part beyond, counting the 【signature】.
"""

from __future__ import annotations

import math
import re
from typing import Literal, NamedTuple

from channels.base import InvalidAddressError

Encoding = Literal["gsm7", "ucs2", "carrier"]

# GSM 03.38 basic character set (without ESC, which only introduces the extension table).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE = {"gsm7": 160, "ucs2": 70, "carrier": 70}
PART = {"gsm7": 153, "ucs2": 67, "carrier": 67}

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
SIGNATURE = re.compile(r"^【[^【】]{1,20}】|【[^【】]{1,20}】$")
MAINLAND = "+86"


class Segments(NamedTuple):
    """How a text is counted: its encoding, the segments it is billed as, and its length in that unit."""

    encoding: Encoding
    segments: int
    length: int


def is_gsm7(text: str) -> bool:
    """Whether every character exists in GSM-7 (basic set or extension table)."""
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def count_segments(text: str) -> Segments:
    """Segments of `text` sent as one SMS on the GSM network (GSM-7 if it fits, else UCS-2)."""
    if is_gsm7(text):
        units = [2 if c in GSM7_EXTENSION else 1 for c in text]
        encoding: Encoding = "gsm7"
    else:
        units = [2 if ord(c) > 0xFFFF else 1 for c in text]
        encoding = "ucs2"
    length = sum(units)
    if length <= SINGLE[encoding]:
        return Segments(encoding, 1, length)
    return Segments(encoding, _parts(units, PART[encoding]), length)


def count_carrier_segments(text: str, signature: str) -> Segments:
    """Segments a mainland Chinese carrier bills for `text` sent with 【signature】 (Aliyun, Tencent).

    A 【signature】 the text already carries is replaced by `signature`: the provider sends its own.
    """
    if signature:
        text = f"【{signature}】{strip_signature(text)}"
    length = len(text)
    if length <= SINGLE["carrier"]:
        return Segments("carrier", 1, length)
    return Segments("carrier", math.ceil(length / PART["carrier"]), length)


def strip_signature(text: str) -> str:
    """`text` without a leading or trailing 【signature】, as Chinese SMS providers add their own."""
    return SIGNATURE.sub("", text, count=1)


def billed_segments(text: str, signature: str, number: str) -> Segments:
    """Segments billed for `text` to an E.164 `number`: the carriers' rule for mainland numbers.

    With an empty `signature` the text is counted as it is (a gateway sends it with its own 【...】).
    """
    if number.startswith(MAINLAND):
        return count_carrier_segments(text, signature)
    return count_segments(text)


def require_e164(number: str, provider: str) -> str:
    """The number if it is E.164 (`+8613800138000`); InvalidAddressError naming it otherwise."""
    if not E164.fullmatch(number):
        raise InvalidAddressError(f"{provider}: {number!r} is not an E.164 phone number (+<country><number>)")
    return number


def _parts(units: list[int], size: int) -> int:
    """Parts of at most `size` units each, never splitting one character's units across parts."""
    parts, used = 1, 0
    for width in units:
        if used + width > size:
            parts, used = parts + 1, 0
        used += width
    return parts

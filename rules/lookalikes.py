"""Characters that look like ASCII but are not: where a rule file has one, and what it looks like.

Rule authors type on keyboards with Chinese input methods and paste from documents, so a key can
hold a full-width colon or a Cyrillic 'е' and look exactly right. Keys, ids and vocabulary words are
ASCII; a message names the character, its code point and its column instead of a did-you-mean.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

_LETTERS = dict(zip("аеорсухіјѕԁһԛԝαεικνορτυχ", "aeopcyxijsdhqwaeikvoptux", strict=True))
"""Cyrillic and Greek letters that NFKC leaves alone but that look like Latin ones."""

PUNCTUATION = frozenset("：，；［］｛｝【】（）“”‘’＂＇－　\u00a0\u200b\u200c\u200d\u2060\ufeff")
"""Look-alikes of YAML's own punctuation and spaces: YAML does not read them as such."""


@dataclass(frozen=True)
class Lookalike:
    """The first non-ASCII character of a text, where it is, and the ASCII it stands for."""

    index: int
    char: str
    twin: str
    """The whole text with look-alikes replaced by what they look like."""

    def describe(self) -> str:
        name = unicodedata.name(self.char, "unnamed character")
        return f"the non-ASCII character {self.char!r} (U+{ord(self.char):04X} {name})"


def ascii_twin(text: str) -> str:
    """`text` as it looks: full-width forms folded (NFKC), look-alike letters as their Latin ones."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(_LETTERS.get(c, "" if c in "\u200b\u200c\u200d\u2060\ufeff" else c) for c in folded)


def first_non_ascii(text: str) -> Lookalike | None:
    index = next((i for i, c in enumerate(text) if not c.isascii()), None)
    return None if index is None else Lookalike(index, text[index], ascii_twin(text))


def in_line(line: str) -> int | None:
    """The index of the first YAML look-alike punctuation or space in a line, outside a comment."""
    for index, char in enumerate(line):
        if char == "#" and (index == 0 or line[index - 1] in " \t"):
            return None
        if char in PUNCTUATION:
            return index
    return None

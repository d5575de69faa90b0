"""Sensitive-word screening: normalisation, whole words, block and mask, the word-list file."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from channels.sensitive import Action, SensitiveWords, WordListError
from channels.templates import RenderedMessage
from settings import ROOT

WORDS: list[tuple[str, Action]] = [
    ("赌博", "block"), ("casino", "block"), ("gift card", "block"), ("傻逼", "mask"), ("shit", "mask"),
]


@pytest.fixture(scope="module")
def words() -> SensitiveWords:
    return SensitiveWords(WORDS)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Visit our casino tonight", [("casino", 10, 16)]),
        ("Ｃａｓｉｎｏ", [("casino", 0, 6)]),  # full-width
        ("CaSiNo!", [("casino", 0, 6)]),
        ("c.a.s.i.n.o", [("casino", 0, 11)]),
        ("casinos are bad", []),  # ASCII words match whole words only
        ("occasinoal", []),
        ("参与赌博", [("赌博", 2, 4)]),
        ("参与赌 博活动", [("赌博", 2, 5)]),
        ("参与赌\u200b博", [("赌博", 2, 5)]),  # zero-width space
        ("buy a GIFT-CARD now", [("gift card", 6, 15)]),
        ("shit赌博", [("shit", 0, 4), ("赌博", 4, 6)]),
        ("nothing to see 这里没有", []),
        ("", []),
    ],
)
def test_find_normalises_text_and_points_at_the_original(
    words: SensitiveWords, text: str, found: list[tuple[str, int, int]]
) -> None:
    assert [(h.word, h.start, h.end) for h in words.find("text", text)] == found


def test_mask_stars_the_word_and_keeps_the_message(words: SensitiveWords) -> None:
    message = RenderedMessage(
        template="t", channel="sms", text="你个傻 逼, shit happens", params={"name": "SHIT", "code": "1234"}
    )
    screened = words.screen(message)
    assert screened.blocked_reason is None
    assert screened.message.text == "你个* *, **** happens"
    assert screened.message.params == {"name": "****", "code": "1234"}
    assert [h.field for h in screened.hits] == ["text", "text", "params.name"]
    assert message.text == "你个傻 逼, shit happens"  # the original is untouched


def test_block_names_every_word_and_field(words: SensitiveWords) -> None:
    message = RenderedMessage(
        template="t", channel="email", subject="Casino night", text="赌博 and a gift card",
        html="<p>赌博</p>", link="https://casino.example/x",
    )
    screened = words.screen(message)
    assert screened.blocked_reason == (
        "sensitive word(s): 'casino' in subject, 'gift card' in text, '赌博' in html, '赌博' in text"
    )
    assert not [h for h in screened.hits if h.field == "link"]


def test_a_clean_message_is_returned_as_is(words: SensitiveWords) -> None:
    message = RenderedMessage(template="t", channel="push", title="Snow day", body="Classes cancelled")
    screened = words.screen(message)
    assert screened.message is message
    assert (screened.blocked_reason, screened.hits) == (None, ())


def test_the_shipped_list_loads() -> None:
    shipped = SensitiveWords.from_file(ROOT / "config" / "sensitive_words.txt")
    assert shipped.count > 10
    assert shipped.find("text", "加入校园 贷")[0].action == "block"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("赌博\tban\n", "words.txt:1: unknown action 'ban' (use block or mask)"),
        ("# c\n赌博\tblock\n赌 博\tmask\n", "'赌 博' is listed as both block and mask"),
        ("ok\n...\n", "'...' has no letters left to match"),
    ],
)
def test_a_bad_word_list_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "words.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(WordListError) as caught:
        SensitiveWords.from_file(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_comments_defaults_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("# header\n\n办证   # trailing comment\nfoo\tmask\n", encoding="utf-8")
    listed = SensitiveWords.from_file(path)
    assert [(h.word, h.action) for h in listed.find("t", "办证 foo")] == [("办证", "block"), ("foo", "mask")]
    with pytest.raises(WordListError, match="cannot read"):
        SensitiveWords.from_file(tmp_path / "none.txt")


def test_an_empty_list_finds_nothing() -> None:
    assert SensitiveWords([]).find("text", "anything") == []


def test_ten_thousand_words_all_found() -> None:
    rng = random.Random(7)
    alphabet = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学"
    vocabulary = sorted({"".join(rng.choices(alphabet, k=rng.randint(3, 6))) for _ in range(10_000)})
    listed = SensitiveWords((w, "mask") for w in vocabulary)
    sample = rng.sample(vocabulary, 50)
    found = {h.word for h in listed.find("text", " | ".join(sample))}
    assert set(sample) <= found

"""The hand-assembled email, parsed back by the standard library's strictest reader.

Every message built here is read with `BytesParser(policy=default)` and its headers and bodies are
compared with what went in; the raw bytes are checked for what the RFCs require of them (ASCII,
CRLF line ends, header lines within 78 characters, no line over 998).
"""

from __future__ import annotations

from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser
from email.utils import parsedate_to_datetime

import pytest
from pydantic import SecretStr

from channels import email_mime
from channels.email_smtp import MESSAGE_ID_HEADER, SmtpEmail
from channels.links import LinkSigner
from channels.templates import RenderedMessage
from records.topics import Dispatch, EventCore

SIGNER = LinkSigner(SecretStr("unit-test-link-secret-0123456789"), "https://notify.uni.example.edu")
DISPATCH = Dispatch(
    message_id="9f2c1a", user_id="u1", channel="email", address="li.wei@uni.example.edu",
    event=EventCore(event_id="e1", app="academic", type="reminder", template="course_reminder",
                    category="notice"),
    rule_id="r1", rule_version="1", step=0,
)
LONG_WORDS = " ".join(f"word{n}" for n in range(80))
LONG_LINE = "x" * 2500
SUBJECTS = {
    "ascii": "Reminder: Linear Algebra at 08:00",
    "chinese": "提醒：线性代数明天 08:00 上课",
    "emoji": "Fee due 💰 by Friday 🎓",
    "long ascii": LONG_WORDS,
    "long chinese": "线性代数" * 60,
    "long emoji": "🎓" * 70,
    "one long word": "a" * 200,
    "spaces kept": "a  b   c\u00a0d",
    "looks encoded": "=?utf-8?q?not_really?= plain",
    "empty": "",
}
BODIES = {
    "ascii": "Dear Li Wei,\nthe class starts at 08:00.",
    "chinese": "李伟同学：\n线性代数明天 08:00 上课。\n" * 5,
    "emoji": "See you there 🎓🎉\n",
    "long ascii line": LONG_LINE,
    "long chinese line": "线" * 1500,
    "trailing spaces and =": "a = b   \nc\t\nd=\n",
    "dots and From": ".\n..\nFrom here\n",
    "crlf and cr": "one\r\ntwo\rthree\n",
}


def parse(raw: bytes) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    return parsed


def check_wire_form(raw: bytes) -> None:
    """ASCII only, CRLF everywhere, header lines ≤ 78 (List-Unsubscribe's links excepted), all ≤ 998."""
    assert raw.isascii()
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    head, _, _ = raw.partition(b"\r\n\r\n")
    lines = raw.split(b"\r\n")
    assert max(map(len, lines)) <= 998
    unsubscribe = False
    for line in head.split(b"\r\n"):
        if not line[:1].isspace():
            unsubscribe = line.startswith(b"List-Unsubscribe:")
        assert unsubscribe or len(line) <= 78, line


def adapter(sender: str = "Academic Affairs <noreply@uni.example.edu>", mailto: str = "") -> SmtpEmail:
    return SmtpEmail("127.0.0.1", 25, sender, links=SIGNER, unsubscribe_mailto=mailto)


def expected_body(text: str) -> str:
    """What a reader gets back: line ends as LF, and a final one."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def content(part: MIMEPart) -> str:
    """A part's text with the wire's CRLF line ends read as LF, as a mail client shows it."""
    return str(part.get_content()).replace("\r\n", "\n")


@pytest.mark.parametrize("subject", SUBJECTS.values(), ids=SUBJECTS.keys())
def test_subjects_read_back_exactly(subject: str) -> None:
    message = RenderedMessage(template="t", channel="email", subject=subject, text="hi")
    raw = adapter().build(message, "li.wei@uni.example.edu", DISPATCH)
    check_wire_form(raw)
    parsed = parse(raw)
    assert parsed["Subject"] == subject
    assert not parsed.defects


@pytest.mark.parametrize("text", BODIES.values(), ids=BODIES.keys())
def test_bodies_read_back_exactly_as_text_and_html(text: str) -> None:
    html = "<p>" + text + "</p>"
    message = RenderedMessage(template="t", channel="email", subject="s", text=text, html=html)
    raw = adapter().build(message, "li.wei@uni.example.edu", DISPATCH)
    check_wire_form(raw)
    parsed = parse(raw)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["MIME-Version"] == "1.0"
    plain, rich = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None and rich is not None
    assert content(plain) == expected_body(text)
    assert content(rich) == expected_body(html)
    assert plain.get_content_charset() == "utf-8"
    for part in parsed.walk():
        assert not part.defects


@pytest.mark.parametrize(("text", "encoding"), [
    ("plain ascii\n", "7bit"),
    (LONG_LINE, "quoted-printable"),
    ("mostly ascii with one 字\n" * 3, "quoted-printable"),
    ("线性代数明天上课\n" * 3, "base64"),
])
def test_transfer_encoding_is_the_cheapest_that_is_7bit_clean(text: str, encoding: str) -> None:
    message = RenderedMessage(template="t", channel="email", subject="s", text=text)
    parsed = parse(adapter().build(message, "a@uni.example.edu", DISPATCH))
    assert parsed.get_content_type() == "text/plain"
    assert parsed["Content-Transfer-Encoding"] == encoding
    assert content(parsed) == expected_body(text)


@pytest.mark.parametrize("name", [
    "Academic Affairs", "教务处", "Zhang, San", 'O"Brien \\ Co.', "Li (CS) <dept>", "Café 🎓 Team",
    "=?utf-8?q?x?=", "a" * 120, "线性代数课程组" * 8, "",
])
def test_display_names_are_quoted_or_encoded(name: str) -> None:
    raw = email_mime.address("From", name, "noreply@uni.example.edu").encode("ascii") + b"\r\nbody\r\n"
    check_wire_form(raw)
    [sender] = parse(raw)["From"].addresses
    assert sender.addr_spec == "noreply@uni.example.edu"
    if not name:
        assert sender.display_name == "" and raw.startswith(b"From: noreply@uni.example.edu\r\n")
        return
    # Python's address parser puts a space between adjacent encoded words (its own builder's long
    # names come back the same way); RFC 2047 6.2 says to drop it, as email.header does:
    phrase = raw.decode().removeprefix("From:").rsplit("<", 1)[0].strip()
    decoded = str(make_header(decode_header(phrase)))
    assert decoded.strip('"').replace('\\"', '"').replace("\\\\", "\\") == name
    if len(name.encode()) <= 40:
        assert sender.display_name == name


def test_the_senders_name_is_encoded_once_for_every_message() -> None:
    channel = adapter(sender='"教务处, Academic Affairs" <noreply@uni.example.edu>')
    raw = channel.build(RenderedMessage(template="t", channel="email", subject="s", text="t"),
                        "a@uni.example.edu", DISPATCH)
    check_wire_form(raw)
    [sender] = parse(raw)["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("教务处, Academic Affairs", "noreply@uni.example.edu")
    assert parse(raw)["To"].addresses[0].addr_spec == "a@uni.example.edu"


@pytest.mark.parametrize("subject", [
    "Hello\r\nBcc: evil@example.com", "Hello\nBcc: evil@example.com", "Hello\rBcc: evil@example.com",
    "线性\r\nBcc: evil@example.com", "tab\tand\x00nul", "line\u2028Bcc: evil@example.com\x85",
])
def test_line_breaks_in_a_subject_cannot_add_headers(subject: str) -> None:
    message = RenderedMessage(template="t", channel="email", subject=subject, text="t")
    raw = adapter().build(message, "a@uni.example.edu", DISPATCH)
    check_wire_form(raw)
    parsed = parse(raw)
    assert parsed["Bcc"] is None
    assert not any(c in parsed["Subject"] for c in "\r\n\u2028\x85")
    assert "Bcc: evil@example.com" in parsed["Subject"] or "nul" in parsed["Subject"]


def test_line_breaks_in_a_display_name_cannot_add_headers() -> None:
    header = email_mime.address("From", "Eve\r\nBcc: evil@example.com", "noreply@uni.example.edu")
    parsed = parse(header.encode() + b"\r\nbody\r\n")
    assert parsed["Bcc"] is None
    assert parsed["From"].addresses[0].display_name == "Eve Bcc: evil@example.com"


@pytest.mark.parametrize("bad", ["a@b.edu\r\nBcc: x@y.edu", "a@b.edu>", "<a@b.edu", "李@b.edu", "a b@c.edu"])
def test_an_address_with_breaks_or_brackets_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a plain ASCII address"):
        email_mime.address("To", "", bad)


def test_sender_with_line_breaks_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="control characters"):
        adapter(sender="Eve <eve@uni.example.edu>\r\nBcc: x@y.edu")
    with pytest.raises(ValueError, match="unsubscribe_mailto"):
        adapter(mailto="u@uni.example.edu\r\nBcc: x@y.edu")


def test_message_id_is_derived_from_the_message_id_and_step() -> None:
    message = RenderedMessage(template="t", channel="email", subject="s", text="t", html="<p>t</p>")
    first = parse(adapter().build(message, "a@uni.example.edu", DISPATCH))
    again = parse(adapter().build(message, "a@uni.example.edu", DISPATCH))
    fallback = parse(adapter().build(message, "a@uni.example.edu", DISPATCH.model_copy(update={"step": 2})))
    assert first["Message-ID"] == again["Message-ID"] == "<9f2c1a.0@uni.example.edu>"
    assert fallback["Message-ID"] == "<9f2c1a.2@uni.example.edu>"
    assert first[MESSAGE_ID_HEADER] == "9f2c1a"
    assert parsedate_to_datetime(first["Date"]).utcoffset() is not None


def test_an_odd_message_id_still_makes_a_valid_message_id() -> None:
    odd = DISPATCH.model_copy(update={"message_id": "a b.c\r\n<x>@线"})
    raw = adapter().build(RenderedMessage(template="t", channel="email", subject="s", text="t"),
                          "a@uni.example.edu", odd)
    check_wire_form(raw)
    parsed = parse(raw)
    assert parsed["Message-ID"] == "<a%20b%2Ec%0D%0A%3Cx%3E%40%E7%BA%BF.0@uni.example.edu>"
    assert not parsed["Message-ID"].defects
    assert parsed[MESSAGE_ID_HEADER] == "a%20b%2Ec%0D%0A%3Cx%3E%40%E7%BA%BF"


def test_encoded_words_never_split_a_character_and_stay_within_75() -> None:
    for value in ("线" * 100, "🎓" * 100, "a线🎓" * 50):
        words = email_mime.encoded_words(value)
        assert all(len(word) <= 75 for word in words)
        assert "".join(str(parse(f"Subject: {w}\r\n\r\n".encode())["Subject"]) for w in words) == value

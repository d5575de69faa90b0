"""RFC 5322 / MIME email assembled by hand: the `email` package's pieces, without its object model.

`EmailMessage` with the default policy costs ~0.9 ms to build and flatten (a header-registry class
per header, a folding parser per value); the same bytes written directly cost a few microseconds
(`bench/email_build.py`). What the package did for us is kept here, and tested by parsing every
message back with `BytesParser(policy=default)`:
- header values are neutralised (control characters, so CR/LF, become spaces: no header injection),
  encoded as RFC 2047 `=?utf-8?b?…?=` words when not plain ASCII (each word a whole number of
  characters, at most 75 long), and folded before whitespace at 78 characters;
- display names are quoted when they hold specials, encoded when not ASCII;
- bodies are UTF-8, sent 7bit only when ASCII with lines of at most 998 octets, otherwise
  quoted-printable or base64, whichever is shorter; every line ends in CRLF.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable, Sequence

CRLF = "\r\n"
MAX_LINE = 78
"""RFC 5322's recommended limit, which every header line here keeps; 998 is the hard one."""
MAX_BODY_LINE = 998
_WORD_PREFIX, _WORD_SUFFIX = "=?utf-8?b?", "?="
# 42 octets are 56 base64 characters: a 68-character encoded word (RFC 2047 allows 75), so that
# `Subject: ` and the first word still fit in 78.
_WORD_OCTETS = 42
# C0 and C1 controls, DEL and the Unicode line and paragraph separators: what can break a line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_CHUNKS = re.compile(r"\s*\S+")
# RFC 5322 specials and quotes: a display name holding any must be a quoted string.
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]+")


def neutral(value: str) -> str:
    """`value` with every run of control characters (CR, LF, tab, NUL, U+2028...) made one space."""
    return _CONTROL.sub(" ", value) if not value.isprintable() else value


def encoded_words(value: str) -> list[str]:
    """`value` as RFC 2047 base64 encoded words, none splitting a character's UTF-8 octets."""
    data = value.encode("utf-8")
    words, start = [], 0
    while start < len(data):
        end = min(start + _WORD_OCTETS, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation octet: back off
            end -= 1
        words.append(_WORD_PREFIX + base64.b64encode(data[start:end]).decode("ascii") + _WORD_SUFFIX)
        start = end
    return words


def fold(name: str, chunks: Sequence[str]) -> str:
    """`Name: chunk chunk…` with CRLF, folded before a chunk that would pass 78 characters.

    Every chunk after the first starts with the whitespace that separates it from the one before,
    so unfolding (removing the CRLFs) gives back exactly the value.
    """
    lines, line = [], f"{name}:"
    for index, chunk in enumerate(chunks):
        piece = chunk if index else " " + chunk
        if len(line) + len(piece) > MAX_LINE and line != f"{name}:":
            lines.append(line)
            line = piece
        else:
            line += piece
    lines.append(line)
    return CRLF.join(lines) + CRLF


def unstructured(name: str, value: str) -> str:
    """A free-text header (Subject): plain ASCII folded at its spaces, anything else encoded."""
    value = neutral(value).strip()
    if value.isascii() and "=?" not in value:
        chunks = _CHUNKS.findall(value)
        # A word too long for a line of its own is encoded instead: encoded words can be split.
        if not chunks or (len(name) + 2 + len(chunks[0]) <= MAX_LINE
                          and all(len(chunk) < MAX_LINE for chunk in chunks)):
            return fold(name, chunks)
    # Whitespace between encoded words is dropped by readers, so the words carry every space.
    return fold(name, [word if i == 0 else " " + word for i, word in enumerate(encoded_words(value))])


def display_name(name: str) -> list[str]:
    """A display name as phrase chunks: as is, quoted when it holds specials, encoded if not ASCII."""
    name = neutral(name).strip()
    if name.isascii() and "=?" not in name and all(len(c) < MAX_LINE - 8 for c in _CHUNKS.findall(name)):
        if not _SPECIALS.search(name):
            return list(_CHUNKS.findall(name))
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(quoted) < MAX_LINE - 8:
            return [quoted]
    # Long or not ASCII: encoded words, which readers join without the spaces between them.
    return [word if i == 0 else " " + word for i, word in enumerate(encoded_words(name))]


def address(name: str, header: str, addr_spec: str) -> str:
    """An address header `Name: display name <addr-spec>`, or the bare addr-spec without a name.

    `addr_spec` must already be a validated ASCII address: one holding CR, LF or `<>` is refused.
    """
    if not addr_spec.isascii() or not addr_spec.isprintable() or any(c in addr_spec for c in "<> "):
        raise ValueError(f"{name}: {addr_spec!r} is not a plain ASCII address")
    phrase = display_name(header)
    if not phrase:
        return fold(name, [addr_spec])
    return fold(name, [*phrase, f" <{addr_spec}>"])


def raw(name: str, value: str) -> str:
    """A header whose value we generate (ids, dates, tokens): checked, not encoded."""
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"{name}: {value!r} must be printable ASCII")
    return f"{name}: {value}{CRLF}"


def listed(name: str, items: Sequence[str]) -> str:
    """A header listing generated items (List-Unsubscribe links), folded only between them."""
    for item in items:
        raw(name, item)
    return f"{name}: " + f",{CRLF} ".join(items) + CRLF


def token(value: str) -> str:
    """`value` as is when it is a plain token (letters, digits, `_`, `-`), else percent-encoded:
    valid inside a Message-ID or any header, and the same for the same value."""
    if _PLAIN_ID.fullmatch(value):
        return value
    return "".join(c if _PLAIN_ID.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode())
                   for c in value) or "%00"


def message_id(local: str, step: int, domain: str) -> str:
    """`<local.step@domain>`: a valid, stable Message-ID from any message id and step."""
    return f"<{token(local)}.{step}@{domain}>"


def body_part(content: str, subtype: str) -> bytes:
    """A `text/<subtype>` UTF-8 part: its two headers, a blank line, the encoded body."""
    text = content.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    data = text.encode("utf-8")
    if data.isascii() and max(map(len, data.split(b"\n"))) <= MAX_BODY_LINE:
        encoding, body = "7bit", data.replace(b"\n", b"\r\n")
    elif 6 * (len(data) - len(text.encode("ascii", "ignore"))) <= len(data):
        # Mostly ASCII: quoted-printable stays readable and is shorter than base64.
        qp = binascii.b2a_qp(data, istext=True)
        encoding, body = "quoted-printable", qp.replace(b"\n", b"\r\n")
    else:
        # Text is encoded in its canonical form, CRLF line ends (RFC 2045 6.8).
        encoded = base64.encodebytes(data.replace(b"\n", b"\r\n"))
        encoding, body = "base64", encoded.replace(b"\n", b"\r\n")
    head = (f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
            f"Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}")
    return head.encode("ascii") + body


def message(headers: Iterable[str], text: str, html: str | None) -> bytes:
    """The whole message: the given header lines (each ending in CRLF), MIME-Version, then the text
    alone, or multipart/alternative with the text and the HTML."""
    head = "".join(headers) + f"MIME-Version: 1.0{CRLF}"
    plain = body_part(text, "plain")
    if html is None:
        return head.encode("ascii") + plain
    rich = body_part(html, "html")
    boundary = "=_" + secrets.token_hex(12)
    # "=_" never occurs in quoted-printable or base64; a 7bit part is checked.
    while boundary.encode() in plain or boundary.encode() in rich:
        boundary = "=_" + secrets.token_hex(12)
    delimiter = f"{CRLF}--{boundary}{CRLF}".encode("ascii")
    return b"".join((
        head.encode("ascii"),
        f'Content-Type: multipart/alternative; boundary="{boundary}"{CRLF}'.encode("ascii"),
        delimiter, plain, delimiter, rich, f"{CRLF}--{boundary}--{CRLF}".encode("ascii"),
    ))

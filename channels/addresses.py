"""Address cleaning before a send: one canonical form per channel, or the reason it is refused.

Phones become E.164 (SMS takes mobile numbers only), emails are validated without DNS and
normalised, push tokens must read `<kind>:<token>`, WeChat openids and robot names their shape.
A refused address is suppressed with the reason, never sent to the provider.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import NumberParseException, PhoneNumberType

PUSH_KINDS: dict[str, re.Pattern[str]] = {
    # APNs device tokens are 32 bytes today, hex-encoded; Apple says not to rely on the length.
    "apns": re.compile(r"^[0-9a-fA-F]{64,200}$"),
    # FCM registration tokens: base64url with a colon, typically ~150-170 characters.
    "fcm": re.compile(r"^[A-Za-z0-9_:\-]{20,4096}$"),
    "jpush": re.compile(r"^[0-9A-Za-z]{6,64}$"),
}
_OPENID = re.compile(r"^[A-Za-z0-9_-]{6,64}$")
_INBOX_USER = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_ROBOT = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_MOBILE = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
# RFC 5322 dot-atom in ASCII: the local parts email_validator accepts unchanged (its DOT_ATOM_TEXT).
_ATEXT = r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+"
_ASCII_LOCAL = re.compile(_ATEXT + r"(?:\." + _ATEXT + r")*\Z")
_EMAIL_MAX = 254
# ASCII domains email_validator accepted, as it normalised them (lower case). Validating the domain
# was ~90 % of its ~60 µs per address, and a campus mails a handful of domains.
_KNOWN_DOMAINS: dict[str, str] = {}
_KNOWN_DOMAINS_MAX = 4096


@dataclass(frozen=True)
class CleanAddress:
    """An address in the form providers, dedup and the blacklist all use."""

    value: str


@dataclass(frozen=True)
class AddressRefused:
    """Why an address cannot be sent to; the text goes into the `suppressed` receipt."""

    reason: str


Cleaned = CleanAddress | AddressRefused
_Cleaner = Callable[[str, str], Cleaned]


def clean(channel: str, address: str, default_region: str = "CN") -> Cleaned:
    """The canonical address for `channel`, or why it is refused; never raises on bad input."""
    text = address.strip()
    if not text:
        return AddressRefused(f"empty {channel} address")
    cleaner = _CLEANERS.get(channel)
    if cleaner is None:
        return AddressRefused(f"unknown channel {channel!r}")
    return cleaner(text, default_region)


def clean_many(items: Iterable[tuple[str, str]], default_region: str = "CN") -> list[Cleaned]:
    """`clean` for each (channel, address), in order: a batch of recipients at once."""
    return [clean(channel, address, default_region) for channel, address in items]


def phone(address: str, default_region: str = "CN", *, mobile_only: bool = True) -> Cleaned:
    """E.164 (`+8613800138000`) for a number written with or without country code."""
    try:
        number = phonenumbers.parse(address, default_region)
    except NumberParseException as exc:
        return AddressRefused(f"not a phone number: {_shown(address)} ({exc})")
    if not phonenumbers.is_valid_number(number):
        return AddressRefused(f"invalid phone number {_shown(address)} for region {default_region}")
    if mobile_only and phonenumbers.number_type(number) not in _MOBILE:
        return AddressRefused(f"{_shown(address)} is not a mobile number: SMS needs one")
    return CleanAddress(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def email(address: str, default_region: str = "CN") -> Cleaned:
    """The validated, normalised address (Unicode domain and local part kept; no DNS lookup)."""
    local, _, domain = address.rpartition("@")
    plain = address.isascii() and len(address) <= _EMAIL_MAX and bool(_ASCII_LOCAL.match(local))
    if plain and domain in _KNOWN_DOMAINS:
        # What email_validator answers for an ASCII dot-atom at a domain it already accepted.
        return CleanAddress(f"{local}@{_KNOWN_DOMAINS[domain]}")
    try:
        valid = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        return AddressRefused(f"invalid email address {_shown(address)}: {exc}")
    if plain:
        if len(_KNOWN_DOMAINS) >= _KNOWN_DOMAINS_MAX:
            _KNOWN_DOMAINS.clear()
        _KNOWN_DOMAINS[domain] = valid.domain
    return CleanAddress(valid.normalized)


def push_token(address: str, default_region: str = "CN") -> Cleaned:
    """`<kind>:<token>` with a known kind and a token of that kind's shape."""
    kind, sep, token = address.partition(":")
    kind = kind.lower()
    shape = PUSH_KINDS.get(kind)
    if not sep or shape is None:
        known = ", ".join(f"{k}:<token>" for k in PUSH_KINDS)
        return AddressRefused(f"push address must be one of {known}; got {_shown(address)}")
    if not shape.match(token):
        return AddressRefused(f"malformed {kind} token {_shown(address)}")
    return CleanAddress(f"{kind}:{token}")


def _pattern(what: str, pattern: re.Pattern[str]) -> _Cleaner:
    def check(address: str, default_region: str = "CN") -> Cleaned:
        if pattern.match(address):
            return CleanAddress(address)
        return AddressRefused(f"malformed {what} {_shown(address)}")

    return check


def _webhook(address: str, default_region: str = "CN") -> Cleaned:
    # Only the shape: which hosts may be called is the webhook channel's allowlist.
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return AddressRefused(f"webhook address must be an http(s) URL, got {_shown(address)}")
    return CleanAddress(address)


def _shown(address: str) -> str:
    # Addresses go into receipts; a pasted blob must not fill a row.
    return repr(address if len(address) <= 64 else address[:61] + "...")


_CLEANERS: dict[str, _Cleaner] = {
    "sms": phone,
    "email": email,
    "push": push_token,
    "wechat_oa": _pattern("WeChat openid", _OPENID),
    "wechat_mp": _pattern("WeChat mini-program openid", _OPENID),
    "inbox": _pattern("inbox user id", _INBOX_USER),
    "webhook": _webhook,
    "robot": _pattern("robot name or token", _ROBOT),
}

"""Address cleaning: a table of good and bad addresses per channel."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.addresses import AddressRefused, CleanAddress, clean, clean_many

APNS = "a" * 64
FCM = "dXkZ3f9qRkS0mYb:APA91bH" + "x" * 130


@pytest.mark.parametrize(
    ("channel", "address", "value"),
    [
        ("sms", "13800138000", "+8613800138000"),
        ("sms", "+86 138-0013-8000", "+8613800138000"),
        ("sms", " 0086 13800138000 ", "+8613800138000"),
        ("sms", "+1 650 253 0000", "+16502530000"),  # US numbers are fixed-line-or-mobile
        ("sms", "+44 7911 123456", "+447911123456"),
        ("email", "Li.Wei@Uni.Example.EDU", "Li.Wei@uni.example.edu"),
        ("email", " wang@example.org ", "wang@example.org"),
        ("email", "张三@例子.中国", "张三@例子.中国"),
        ("push", f"apns:{APNS}", f"apns:{APNS}"),
        ("push", f"FCM:{FCM}", f"fcm:{FCM}"),
        ("push", "jpush:1a0018970a9ff41ddda", "jpush:1a0018970a9ff41ddda"),
        ("wechat_oa", "oLVPpjqs9BhvzwPj5A-vTYAX3GLc", "oLVPpjqs9BhvzwPj5A-vTYAX3GLc"),
        ("wechat_mp", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"),
        ("inbox", "s2024001", "s2024001"),
        ("webhook", "https://hooks.example.edu/notify", "https://hooks.example.edu/notify"),
        ("robot", "ops-oncall", "ops-oncall"),
    ],
)
def test_good_addresses_come_out_canonical(channel: str, address: str, value: str) -> None:
    assert clean(channel, address) == CleanAddress(value)


@pytest.mark.parametrize(
    ("channel", "address", "reason"),
    [
        ("sms", "12345", "invalid phone number '12345' for region CN"),
        ("sms", "010-12345678", "'010-12345678' is not a mobile number"),
        ("sms", "call me", "not a phone number: 'call me'"),
        ("sms", "  ", "empty sms address"),
        ("email", "li.wei@", "invalid email address 'li.wei@'"),
        ("email", "no-at-sign.example.org", "invalid email address"),
        ("email", "a@b", "invalid email address 'a@b'"),
        ("push", APNS, "push address must be one of apns:<token>, fcm:<token>, jpush:<token>"),
        ("push", "hms:abcdef123456", "push address must be one of"),
        ("push", "apns:xyz", "malformed apns token 'apns:xyz'"),
        ("wechat_oa", "o/../etc", "malformed WeChat openid"),
        ("inbox", "s 1", "malformed inbox user id 's 1'"),
        ("webhook", "ftp://files.example.edu/x", "webhook address must be an http(s) URL"),
        ("webhook", "javascript:alert(1)", "webhook address must be an http(s) URL"),
        ("robot", "a b", "malformed robot name or token"),
        ("fax", "+8613800138000", "unknown channel 'fax'"),
    ],
)
def test_bad_addresses_are_refused_with_a_reason(channel: str, address: str, reason: str) -> None:
    refused = clean(channel, address)
    assert isinstance(refused, AddressRefused)
    assert reason in refused.reason


def test_a_long_address_is_cut_in_the_reason() -> None:
    refused = clean("email", "x" * 5000)
    assert isinstance(refused, AddressRefused)
    assert len(refused.reason) < 300


def test_default_region_reads_national_numbers() -> None:
    assert clean("sms", "07911 123456", default_region="GB") == CleanAddress("+447911123456")


def test_clean_many_keeps_order() -> None:
    assert clean_many([("sms", "13800138000"), ("email", "bad"), ("inbox", "u1")]) == [
        CleanAddress("+8613800138000"),
        AddressRefused("invalid email address 'bad': An email address must have an @-sign."),
        CleanAddress("u1"),
    ]


_LOCAL_CHARS = "abcXYZ019._+-!#'~\" ()<>@,;:\\é"
_DOMAINS = [
    "uni.edu", "UNI.Edu", "mail.uni.edu", "x.c", "bad..edu", "-x.edu", "x-.edu", "1.2.3.4", "localhost",
    "a.test", "a.local", "bench.example", "例え.jp", "xn--r8jz45g.jp", "x" * 64 + ".edu", "a_b.edu", "",
]


@settings(max_examples=400, deadline=None)
@given(local=st.text(alphabet=_LOCAL_CHARS, max_size=70), domain=st.sampled_from(_DOMAINS))
def test_an_email_at_a_known_domain_is_cleaned_as_email_validator_cleans_it(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    try:
        expected: str | None = validate_email(address.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        expected = None
    clean("email", f"someone@{domain}")  # the domain is known from now on
    got = clean("email", address)
    if expected is None:
        assert isinstance(got, AddressRefused), (address, got)
    else:
        assert got == CleanAddress(expected), (address, got, expected)


def test_an_email_over_254_characters_is_refused_at_a_known_domain() -> None:
    assert clean("email", "a@uni.edu") == CleanAddress("a@uni.edu")
    assert isinstance(clean("email", "a" * 247 + "@uni.edu"), AddressRefused)
    assert clean("email", "a" * 246 + "@UNI.EDU") == CleanAddress("a" * 246 + "@uni.edu")

"""The SMTP email adapter without a server: the MIME message it builds and the errors it raises."""

from __future__ import annotations

import socket
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from channels.base import PermanentSendError, RetryableSendError
from channels.email_smtp import MESSAGE_ID_HEADER, SmtpEmail, _recipient
from channels.links import LinkSigner
from channels.templates import RenderedMessage
from records.topics import Dispatch, EventCore

DISPATCH = Dispatch(
    message_id="9f2c", user_id="u1", channel="email", address="li.wei@uni.example.edu",
    event=EventCore(event_id="e1", app="academic", type="reminder", template="course_reminder",
                    category="notice"),
    rule_id="r1", rule_version="1", step=1,
)
MESSAGE = RenderedMessage(
    template="course_reminder", channel="email", subject="Reminder: 线性代数 at 08:00",
    text="Dear Li Wei,\n线性代数 starts at 08:00.", html="<p>Dear Li Wei,</p>",
)

SIGNER = LinkSigner(SecretStr("unit-test-link-secret-0123456789"), "https://notify.uni.example.edu")


def adapter(port: int = 2525) -> SmtpEmail:
    sender = "Academic Affairs <noreply@uni.example.edu>"
    return SmtpEmail("127.0.0.1", port, sender, timeout=2.0, links=SIGNER)


def built(message: RenderedMessage, address: str, dispatch: Dispatch) -> EmailMessage:
    parsed = message_from_bytes(adapter().build(message, address, dispatch), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_builds_multipart_text_and_html_with_ids() -> None:
    email = built(MESSAGE, "li.wei@uni.example.edu", DISPATCH)
    assert email["To"] == "li.wei@uni.example.edu"
    assert email["From"] == "Academic Affairs <noreply@uni.example.edu>"
    assert email["Subject"] == "Reminder: 线性代数 at 08:00"
    assert email["Message-ID"] == "<9f2c.1@uni.example.edu>"
    assert email[MESSAGE_ID_HEADER] == "9f2c"
    assert email.get_content_type() == "multipart/alternative"
    text, html = email.get_body(("plain",)), email.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == "Dear Li Wei,\r\n线性代数 starts at 08:00."
    assert html.get_content().strip() == "<p>Dear Li Wei,</p>"


def test_text_only_without_html() -> None:
    email = built(MESSAGE.model_copy(update={"html": None}), "a@uni.example.edu", DISPATCH)
    assert email.get_content_type() == "text/plain"


@pytest.mark.parametrize(
    "address", ["", "not-an-address", "a@", "a@localhost", "a@b.edu, c@d.edu", "a@b.edu\r\nBcc: x@y.edu"]
)
async def test_invalid_addresses_are_permanent(address: str) -> None:
    with pytest.raises(PermanentSendError, match="invalid email address"):
        await adapter().send(MESSAGE, address, DISPATCH)


async def test_nothing_listening_is_retryable() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RetryableSendError, match=f"cannot connect to SMTP 127.0.0.1:{port}"):
        await adapter(port).send(MESSAGE, "li.wei@uni.example.edu", DISPATCH)


def test_constructor_fails_fast() -> None:
    with pytest.raises(ValueError, match="has no address"):
        SmtpEmail("127.0.0.1", 25, "Switchboard", links=SIGNER)
    with pytest.raises(ValueError, match="port"):
        SmtpEmail("127.0.0.1", 0, "a@b.edu", links=SIGNER)
    with pytest.raises(ValueError, match="host is empty"):
        SmtpEmail("", 25, "a@b.edu", links=SIGNER)


# --- List-Unsubscribe (RFC 8058) --------------------------------------------------------------

def with_category(category: str) -> Dispatch:
    return DISPATCH.model_copy(update={"event": DISPATCH.event.model_copy(update={"category": category})})


@pytest.mark.parametrize(
    ("category", "mailto", "expected"),
    [
        ("notice", "", 1),
        ("marketing", "unsubscribe@uni.example.edu", 2),
        ("verification", "unsubscribe@uni.example.edu", 0),
        ("transactional", "", 0),
        ("alert", "", 0),
    ],
)
def test_subscribable_mail_carries_one_click_unsubscribe(category: str, mailto: str, expected: int) -> None:
    channel = SmtpEmail("127.0.0.1", 25, "a@uni.example.edu", links=SIGNER, unsubscribe_mailto=mailto)
    raw = channel.build(MESSAGE, "li.wei@uni.example.edu", with_category(category))
    parsed = message_from_bytes(raw, policy=policy.default)
    header = parsed["List-Unsubscribe"]
    if expected == 0:
        assert header is None and parsed["List-Unsubscribe-Post"] is None
        return
    targets = [t.strip().strip("<>") for t in str(header).split(",")]
    assert len(targets) == expected
    token = targets[0].removeprefix("https://notify.uni.example.edu/u/")
    assert SIGNER.verify("unsubscribe", token).category == category
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert b"=?utf-8?" not in raw.split(b"List-Unsubscribe:")[1].split(b"List-Unsubscribe-Post")[0]
    if mailto:
        assert targets[1] == f"mailto:unsubscribe@uni.example.edu?subject=unsubscribe%20{token}"


def test_the_adapter_cannot_be_built_without_the_signer_of_its_unsubscribe_links() -> None:
    with pytest.raises(TypeError, match="links"):
        SmtpEmail("127.0.0.1", 25, "a@uni.example.edu")  # type: ignore[call-arg]


def test_bad_mailto_and_password_never_shown() -> None:
    with pytest.raises(ValueError, match="unsubscribe_mailto must be an address"):
        SmtpEmail("127.0.0.1", 25, "a@uni.example.edu", links=SIGNER, unsubscribe_mailto="nobody")
    channel = SmtpEmail(
        "127.0.0.1", 25, "a@uni.example.edu", username="relay", password=SecretStr("hunter2-pw"),
        links=SIGNER,
    )
    assert "hunter2-pw" not in repr(channel)


def _parsed_recipient(address: str) -> str | None:
    """What the recipient check answered when every address went through `Address`."""
    try:
        parsed = Address(addr_spec=address.strip())
    except Exception:
        return None
    if not parsed.username or not parsed.domain or "." not in parsed.domain.strip("."):
        return None
    return parsed.addr_spec


@settings(max_examples=500, deadline=None)
@given(
    local=st.text(alphabet="abcXYZ09._+-!#'~/=?^`{|}\" ()<>,;:\\é", min_size=1, max_size=20),
    domain=st.sampled_from(["uni.edu", "x", "a..b", "-a.b", "a.b.", ".a.b", "A-B.Cn", "a_b.c", "例.jp", ""]),
)
def test_a_recipient_is_accepted_or_refused_as_the_address_parser_decides(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    try:
        got: str | None = _recipient(address)
    except PermanentSendError as exc:
        assert repr(address) in str(exc)
        got = None
    assert got == _parsed_recipient(address)

"""The email channel over SMTP (aiosmtplib), keeping a few connections open between messages.

Mail of subscribable categories always carries `List-Unsubscribe` (the signed HTTPS link, and a
mailto when configured) and `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058), so mail
clients offer a one-click unsubscribe that lands on `POST /u/{token}`. The adapter cannot be built
without the LinkSigner that makes the link: a relay configured without it once sent notices bare.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from email.errors import MessageError
from email.headerregistry import Address
from email.utils import formatdate, parseaddr
from urllib.parse import quote

import aiosmtplib
from pydantic import SecretStr

from channels import email_mime
from channels.base import Channel, CredentialsError, PermanentSendError, RetryableSendError, SendResult
from channels.links import LinkSigner
from channels.templates import RenderedMessage
from records.topics import Dispatch

MESSAGE_ID_HEADER = "X-Switchboard-Message-Id"
# Categories a person subscribes to, and so may unsubscribe from; codes, receipts and alerts are not.
UNSUBSCRIBABLE = frozenset({"marketing", "notice"})


class SmtpEmail(Channel):
    """Multipart text+HTML email through one SMTP relay; `status="sent"` once the relay accepts it."""

    channel = "email"
    provider = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        username: str = "",
        password: SecretStr = SecretStr(""),  # noqa: B008 - immutable
        starttls: bool = False,
        timeout: float = 30.0,
        connections: int = 2,
        *,
        links: LinkSigner,
        unsubscribe_mailto: str = "",
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """`links` signs the List-Unsubscribe links; `unsubscribe_mailto` (an address) adds the mailto
        form; `tls_context` trusts a relay's private CA for STARTTLS."""
        if not host:
            raise ValueError("SMTP host is empty")
        if not 0 < port < 65536:
            raise ValueError(f"SMTP port must be 1-65535, got {port}")
        if connections < 1:
            raise ValueError(f"connections must be at least 1, got {connections}")
        if not sender.isprintable():
            raise ValueError(f"email sender {sender!r} holds control characters (CR, LF, tab...)")
        sender_name, sender_address = parseaddr(sender)
        if "@" not in sender_address:
            raise ValueError(f"email sender {sender!r} has no address (e.g. 'Name <noreply@uni.edu>')")
        # The From line is the same for every message: encoded and folded once.
        self._from_header = email_mime.address("From", sender_name, sender_address)
        self._envelope_sender = sender_address
        self.host, self.port, self.sender, self.username = host, port, sender, username
        self._password = password
        self._starttls, self._timeout = starttls, timeout
        self._domain = sender_address.rsplit("@", 1)[1]
        if unsubscribe_mailto and ("@" not in unsubscribe_mailto or not unsubscribe_mailto.isprintable()
                                   or not unsubscribe_mailto.isascii()):
            raise ValueError(f"unsubscribe_mailto must be an address, got {unsubscribe_mailto!r}")
        self._links, self._mailto, self._tls_context = links, unsubscribe_mailto, tls_context
        # A pool of idle clients: an SMTP connection carries one transaction at a time, so each
        # send borrows one; connecting costs a round trip plus EHLO (and TLS/AUTH on real relays).
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(connections)

    def __repr__(self) -> str:
        return (
            f"SmtpEmail(host={self.host!r}, port={self.port}, sender={self.sender!r}, "
            f"username={self.username!r}, password={self._password!r})"
        )

    def build(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> bytes:
        """The message as sent: text, with an HTML alternative when the template has one.

        `address` must be a bare, validated address (`send` checks it first)."""
        message_id = self.message_id(dispatch)
        headers = [
            self._from_header,
            email_mime.address("To", "", address),
            email_mime.unstructured("Subject", message.subject),
            email_mime.raw("Date", _date_now()),
            email_mime.raw("Message-ID", message_id),
            email_mime.raw(MESSAGE_ID_HEADER, email_mime.token(dispatch.message_id)),
        ]
        if dispatch.event.category in UNSUBSCRIBABLE:
            url = self._links.unsubscribe_url(dispatch)
            targets = [f"<{url}>"]
            if self._mailto:
                token = url.rsplit("/", 1)[1]
                targets.append(f"<mailto:{self._mailto}?subject={quote('unsubscribe ' + token)}>")
            # Folded only between the links: a signed URL folded inside would not work once clicked.
            headers.append(email_mime.listed("List-Unsubscribe", targets))
            headers.append(email_mime.raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        return email_mime.message(headers, message.text, message.html)

    def message_id(self, dispatch: Dispatch) -> str:
        """The Message-ID: derived from the message id and step, never random, so a resend of the
        same (message, channel, step) is the same mail to every receiving system that deduplicates."""
        return email_mime.message_id(dispatch.message_id, dispatch.step, self._domain)

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        recipient = _recipient(address)
        mail = self.build(message, recipient, dispatch)
        async with self._slots:
            client = await self._borrow()
            try:
                await client.sendmail(self._envelope_sender, [recipient], mail)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refused = exc.recipients[0]
                self._idle.put_nowait(client)  # aiosmtplib sent RSET: the connection is clean
                raise _by_code(refused.code, f"recipient refused: {refused.code} {refused.message}") from exc
            except aiosmtplib.SMTPResponseException as exc:
                client.close()
                raise _by_code(exc.code, f"SMTP {exc.code} {exc.message}") from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                client.close()
                raise RetryableSendError(f"SMTP connection failed: {type(exc).__name__}: {exc}") from exc
            except BaseException:
                client.close()
                raise
            self._idle.put_nowait(client)
        return SendResult(status="sent", provider_message_id=self.message_id(dispatch))

    async def _borrow(self) -> aiosmtplib.SMTP:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                return client
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self._timeout,
            start_tls=self._starttls, use_tls=False, tls_context=self._tls_context,
        )
        try:
            await client.connect()
            if self.username:
                await client.ehlo()
                if not client.supports_extension("auth"):
                    client.close()
                    hint = "" if self._starttls else " (many relays offer it only after STARTTLS)"
                    raise CredentialsError(
                        f"SMTP {self.host}:{self.port} does not offer AUTH for {self.username!r}{hint}"
                    )
                await client.login(self.username, self._password.get_secret_value())
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            raise PermanentSendError(f"SMTP login as {self.username!r} refused: {exc.code}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise _by_code(exc.code, f"SMTP connect refused: {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            raise RetryableSendError(
                f"cannot connect to SMTP {self.host}:{self.port}: {type(exc).__name__}: {exc}"
            ) from exc
        return client

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    client.close()


_date_cache: tuple[int, str] = (0, "")


def _date_now() -> str:
    """The Date header's value, formatted once per second (formatdate costs ~10 µs)."""
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, formatdate(second, usegmt=True))
    return _date_cache[1]


# An ASCII dot-atom at a dotted domain: `Address` gives such an address back unchanged, and parsing it
# cost ~20 µs a message. Anything else (quoted, Unicode, odd) still goes through the parser.
_PLAIN_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(
    rf"{_PLAIN_ATOM}(?:\.{_PLAIN_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\Z"
)


def _recipient(address: str) -> str:
    """A bare, well-formed address, or PermanentSendError naming the bad one."""
    if _PLAIN_ADDRESS.match(address):
        return address
    try:
        parsed = Address(addr_spec=address.strip())
    except (ValueError, IndexError, MessageError) as exc:
        raise PermanentSendError(f"invalid email address {address!r}") from exc
    if not parsed.username or not parsed.domain or "." not in parsed.domain.strip("."):
        raise PermanentSendError(f"invalid email address {address!r}")
    return parsed.addr_spec


def _by_code(code: int, reason: str) -> PermanentSendError | RetryableSendError:
    """SMTP reply codes: 4xx are transient (greylisting, mailbox busy), 5xx are final."""
    return RetryableSendError(reason) if 400 <= code < 500 else PermanentSendError(reason)

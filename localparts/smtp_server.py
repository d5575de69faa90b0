"""The local SMTP server of the demo and the tests: accepts every message and keeps it in memory."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from localparts.process import free_port, require_loopback


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the server received it: envelope sender, envelope recipients, parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    received_at: float = field(default_factory=time.time)
    """When the server accepted it (time.time()), for latency measured from outside."""


class _Collector:
    """aiosmtpd handler that parses each message and hands it to the server's store."""

    def __init__(self, store: LocalSmtpServer) -> None:
        self._store = store

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        if not isinstance(parsed, EmailMessage):  # policy.default always builds EmailMessage
            return "451 could not parse message"
        self._store._keep(ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


class LocalSmtpServer:
    """An aiosmtpd server on loopback, in its own thread; thread-safe view of what it received."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = require_loopback(host)
        # aiosmtpd's Controller cannot listen on port 0 (it connects to its own port to check it is up).
        self.port = port if port is not None else free_port(host)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._messages: list[ReceivedMail] = []
        self._controller: Controller | None = None

    def start(self) -> None:
        """Start listening; returns when the server accepts connections."""
        if self._controller is not None:
            return
        controller = Controller(_Collector(self), hostname=self.host, port=self.port, enable_SMTPUTF8=True)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening; what was received stays readable."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> LocalSmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _keep(self, mail: ReceivedMail) -> None:
        with self._arrived:
            self._messages.append(mail)
            self._arrived.notify_all()

    @property
    def messages(self) -> list[ReceivedMail]:
        """A copy of every message received since the last clear(), oldest first."""
        with self._lock:
            return list(self._messages)

    @property
    def count(self) -> int:
        """How many messages were received since the last clear()."""
        with self._lock:
            return len(self._messages)

    @property
    def recipients_count(self) -> int:
        """How many envelope recipients all received messages had together."""
        with self._lock:
            return sum(len(mail.rcpt_tos) for mail in self._messages)

    def clear(self) -> None:
        """Forget every received message."""
        with self._lock:
            self._messages.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMail]:
        """Block until at least count messages arrived (from async code: `asyncio.to_thread`)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(
                    f"SMTP server on port {self.port} got {len(self._messages)} of {count} messages "
                    f"within {timeout}s"
                )
            return list(self._messages)

    def __repr__(self) -> str:
        return f"LocalSmtpServer(host={self.host!r}, port={self.port}, count={self.count})"

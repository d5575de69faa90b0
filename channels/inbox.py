"""The in-app inbox channel: storing the message in the user's inbox is delivering it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from channels.base import Channel, PermanentSendError, SendResult
from channels.templates import RenderedMessage
from records.topics import Dispatch
from state.inbox import Inbox, InboxMessage


class InboxChannel(Channel):
    """Writes to `state.inbox.Inbox`; the address is the user id (the dispatch's user by default)."""

    channel = "inbox"
    provider = "switchboard-inbox"

    def __init__(self, inbox: Inbox, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._inbox = inbox
        self._clock = clock

    @property
    def inbox(self) -> Inbox:
        return self._inbox

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        user_id, stored = self.stored(message, address, dispatch)
        # add() is False on a redelivery: the message is already there, which is what we wanted.
        await self._inbox.add(user_id, stored)
        return SendResult(status="delivered", provider_message_id=dispatch.message_id)

    def stored(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> tuple[str, InboxMessage]:
        """The inbox and the message to store in it; the send stage stores a batch in one round trip."""
        user_id = address or dispatch.user_id
        if not user_id:
            raise PermanentSendError(f"message {dispatch.message_id} has no user to put in an inbox")
        if not message.title:
            raise PermanentSendError(f"template {message.template!r} rendered no inbox title")
        event = dispatch.event
        stored = InboxMessage(
            message_id=dispatch.message_id,
            title=message.title,
            body=message.body,
            link=message.link,
            app=event.app,
            event_id=event.event_id,
            template=event.template,
            category=event.category,
            campaign=event.campaign,
            rule_id=dispatch.rule_id,
            rule_version=dispatch.rule_version,
            created_at=self._clock(),
        )
        return user_id, stored

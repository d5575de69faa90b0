"""What the API needs from the rest of Switchboard, passed in so tests can choose real or fake."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from api.publisher import Publisher
from channels.links import LinkSigner
from state.apps import App
from state.consent import ConsentStore
from state.inbox import InboxMessage
from state.provider_messages import ProviderMessages


class AppKeys(Protocol):
    """Authenticates an API key (`state.apps.AppRegistry`)."""

    async def authenticate(self, key: str) -> App | None: ...


class InboxStore(Protocol):
    """The per-user inbox (`state.inbox.Inbox`)."""

    async def list(self, user_id: str, limit: int = 20, offset: int = 0) -> list[InboxMessage]: ...

    async def unread_count(self, user_id: str) -> int: ...

    async def total(self, user_id: str) -> int: ...

    async def mark_read(self, user_id: str, message_id: str) -> tuple[InboxMessage | None, bool]: ...

    async def mark_clicked(self, user_id: str, message_id: str) -> tuple[InboxMessage | None, bool]: ...

    async def delete(self, user_id: str, message_id: str) -> bool: ...


class Pingable(Protocol):
    """A Redis client, as far as the health check is concerned."""

    def ping(self, **kwargs: Any) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class ApiDeps:
    """The API's collaborators: app keys, the inbox, the publisher, and Redis for the health check.

    The optional ones switch on their endpoints: `links` the tracking and unsubscribe links (and,
    with `consent`, the one-click unsubscribe), `consent` the consent endpoints, `provider_messages`
    the provider callbacks.
    """

    apps: AppKeys
    inbox: InboxStore
    publisher: Publisher
    redis: Pingable
    links: LinkSigner | None = None
    consent: ConsentStore | None = None
    provider_messages: ProviderMessages | None = None

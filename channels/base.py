"""The shared base of every channel adapter, and `deliver`: retries with backoff around one send.

An adapter only sends and says how a failure should be treated (`PermanentSendError` or
`RetryableSendError`); whether and when to try again is decided here, once for every channel.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from channels.templates import RenderedMessage
from metrics import catalog
from records.topics import ChannelName, Dispatch

log = logging.getLogger(__name__)


class SendResult(BaseModel):
    """What a provider accepted: `sent` (handed over) or `delivered` (stored where the user reads it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["sent", "delivered"]
    provider_message_id: str
    cost: float = 0.0
    provider: str = ""
    """The configured provider that carried it, when the channel chose among several (failover)."""


class SendError(Exception):
    """A send that did not go through; the message is the reason recorded in the receipt."""


class PermanentSendError(SendError):
    """Trying again cannot help (invalid address, refused recipient, bad request)."""


class InvalidAddressError(PermanentSendError):
    """The provider refused the address itself (malformed, unknown, blacklisted): never retried."""


class RetryableSendError(SendError):
    """Trying again later may work (timeout, connection error, throttling, 5xx)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class ThrottledError(RetryableSendError):
    """The provider's rate or quota limit: try later, or on another provider of the channel."""


class CredentialsError(RetryableSendError):
    """The provider refused our credentials (bad key, expired token that cannot be refreshed).

    An operator must act, so it is logged as an alert; the message may still go out through another
    provider of the channel, hence retryable rather than permanent.
    """


class ProviderOptions(BaseModel):
    """An adapter's configuration from the providers file; secrets are `SecretStr`, masked when printed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Options = TypeVar("Options", bound=ProviderOptions)


class CallbackRejected(Exception):
    """A provider callback that failed verification or cannot be parsed; the API answers 4xx with this."""


@dataclass(frozen=True)
class CallbackRequest:
    """A provider's delivery-status callback as it reached the API, for the adapter to verify and read."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes


@dataclass(frozen=True)
class ProviderReceipt:
    """One status a provider reported for a message it accepted, keyed by the provider's message id."""

    provider_message_id: str
    status: Literal["delivered", "failed", "read", "clicked"]
    reason: str = ""
    recipient: str = ""


@dataclass(frozen=True)
class CallbackReply:
    """What the adapter wants answered to the provider (some insist on a exact body)."""

    receipts: tuple[ProviderReceipt, ...]
    body: bytes = b""
    media_type: str = "application/json"


@dataclass(frozen=True)
class ChannelDeps:
    """Clients an adapter may use, passed in so tests choose real local peers or fakes."""

    http: httpx.AsyncClient
    redis: Redis


class Channel(ABC):
    """One provider of one channel. Subclasses set `channel` and `provider` and write `send`.

    Adapters configured from the providers file also set `options_model` and override `from_options`.
    """

    channel: ClassVar[ChannelName]
    provider: ClassVar[str]
    options_model: ClassVar[type[ProviderOptions]] = ProviderOptions

    @classmethod
    def from_options(cls, options: ProviderOptions, deps: ChannelDeps) -> Channel:
        """Build the adapter from its validated options; raise ValueError naming a bad option."""
        raise NotImplementedError(f"{cls.__name__} is not configured from the providers file")

    @classmethod
    def own_options(cls, options: ProviderOptions, model: type[Options]) -> Options:
        """`options` as this adapter's own options model, or a ValueError naming both."""
        if not isinstance(options, model):
            raise ValueError(f"{cls.__name__} needs {model.__name__}, got {type(options).__name__}")
        return options

    def template_id(self, message: RenderedMessage, what: str = "template id") -> str:
        """The id this provider registered for the message's template (SMS template code, WeChat id);
        `what` is what the provider calls it, for the error."""
        found = message.template_ids.get(self.provider)
        if not found:
            raise PermanentSendError(
                f"{self.provider}: template {message.template!r} has no {what} (template_ids.{self.provider})"
            )
        return found

    @abstractmethod
    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        """Send once, raising PermanentSendError or RetryableSendError on failure."""

    def accepts(self, address: str) -> bool:
        """Whether this provider can carry `address`; push providers accept only their own tokens,
        written `<provider>:<token>` (e.g. `apns:…`, `fcm:…`), so a chain routes by prefix."""
        return True

    def parse_callback(self, request: CallbackRequest) -> CallbackReply:
        """Verify a delivery-status callback and read its receipts; raise CallbackRejected if forged."""
        raise CallbackRejected(f"provider {self.provider} sends no delivery callbacks")

    async def close(self) -> None:
        """Release connections the adapter holds; the default holds none."""
        return None

    def __repr__(self) -> str:
        # Only the channel and provider: adapters hold credentials that must never be printed.
        return f"{type(self).__name__}(channel={self.channel!r}, provider={self.provider!r})"


def idempotency_key(dispatch: Dispatch) -> str:
    """The key a provider deduplicates one send on: the message id and step, the same unit the send
    ledger claims, so a redelivered dispatch repeats the key and another fallback step does not."""
    return f"{dispatch.message_id}.{dispatch.step}"


IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotency_header(dispatch: Dispatch) -> str:
    """The `Idempotency-Key` value for HTTP peers: the key as an RFC 8941 string (quoted, `\\` and
    `"` escaped), the form the IETF httpapi draft gives the header."""
    key = "".join(c if " " <= c <= "~" else "?" for c in idempotency_key(dispatch))
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**(n-1)))."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError(f"delays must not be negative, got {self.base_delay} and {self.max_delay}")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class DeliveryOutcome:
    """How one delivery ended. `retryable` is True when it gave up on errors that may clear later."""

    status: Literal["sent", "delivered", "failed"]
    attempts: int
    provider: str
    reason: str = ""
    cost: float = 0.0
    provider_message_id: str = ""
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.status != "failed"


Sleep = Callable[[float], Awaitable[None]]

# One generator for every send's backoff jitter: seeding a new one from the OS took ~15 µs a send.
_JITTER = random.Random()  # noqa: S311 - jitter, not a secret


async def deliver(
    channel: Channel,
    message: RenderedMessage,
    address: str,
    dispatch: Dispatch,
    retry: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> DeliveryOutcome:
    """Send through the channel, retrying retryable failures up to the policy's attempts; counted and
    timed by channel and provider (a retryable give-up counts as `deferred`: it is tried again later)."""
    started = time.monotonic()
    outcome = await _deliver(channel, message, address, dispatch, retry, sleep=sleep, rng=rng)
    kind = "deferred" if outcome.status == "failed" and outcome.retryable else outcome.status
    catalog.send_outcome(dispatch.channel, outcome.provider, kind, time.monotonic() - started)
    return outcome


async def _deliver(
    channel: Channel,
    message: RenderedMessage,
    address: str,
    dispatch: Dispatch,
    retry: RetryPolicy,
    *,
    sleep: Sleep,
    rng: random.Random | None,
) -> DeliveryOutcome:
    rng = rng or _JITTER
    reason = ""
    for attempt in range(1, retry.max_attempts + 1):
        try:
            result = await channel.send(message, address, dispatch)
        except PermanentSendError as exc:
            return DeliveryOutcome("failed", attempt, channel.provider, reason=str(exc))
        except RetryableSendError as exc:
            reason, wait = str(exc), exc.retry_after
        except (TimeoutError, OSError) as exc:  # an adapter let a network error through
            reason, wait = f"{type(exc).__name__}: {exc}", None
        except Exception as exc:
            # A bug in an adapter: retrying would repeat it; fail this message, keep the worker.
            log.exception("%s raised unexpectedly for message %s", channel, dispatch.message_id)
            return DeliveryOutcome(
                "failed", attempt, channel.provider, reason=f"unexpected {type(exc).__name__}: {exc}"
            )
        else:
            return DeliveryOutcome(
                result.status, attempt, result.provider or channel.provider,
                cost=result.cost, provider_message_id=result.provider_message_id,
            )
        if attempt == retry.max_attempts:
            break
        if wait is not None and wait > retry.max_delay:
            # The provider asks for more patience than this delivery has: hand it back for later.
            return DeliveryOutcome(
                "failed", attempt, channel.provider, retryable=True,
                reason=f"{reason} (provider asked to retry after {wait:g}s, "
                f"over the {retry.max_delay:g}s limit)",
            )
        delay = retry.backoff(attempt, rng)
        await sleep(max(delay, wait) if wait is not None else delay)
    return DeliveryOutcome(
        "failed", retry.max_attempts, channel.provider, retryable=True,
        reason=f"gave up after {retry.max_attempts} attempt(s): {reason}",
    )

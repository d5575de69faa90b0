"""Provider failover: one channel over its configured providers, tried in priority order.

Each provider is rate limited (a token bucket shared by all workers) and guarded by a small circuit
breaker. Throttling, refused credentials and retryable errors move on to the next provider; a
permanent refusal (an invalid number) stops, since another provider cannot help. Retries with backoff
stay in `channels.base.deliver`, around the whole chain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from redis.exceptions import RedisError

from channels.base import (
    CallbackRejected,
    CallbackReply,
    CallbackRequest,
    Channel,
    CredentialsError,
    InvalidAddressError,
    PermanentSendError,
    RetryableSendError,
    SendResult,
    ThrottledError,
)
from channels.templates import RenderedMessage
from metrics import catalog
from records.topics import ChannelName, Dispatch

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter(Protocol):
    """What the chain needs of `state.rate_limit.TokenBucket` (a fake in unit tests)."""

    async def acquire(self, key: str, rate: float, burst: float, tokens: float = 1) -> float: ...


@dataclass(frozen=True)
class Rate:
    """A provider's allowed rate: `per_second` sustained, up to `burst` at once."""

    per_second: float
    burst: float


@dataclass(frozen=True)
class Route:
    """One configured provider of a channel: its name in the providers file and its adapter."""

    name: str
    adapter: Channel
    priority: int = 0
    rate: Rate | None = None
    cost_per_message: float | None = None


@dataclass
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    probe_until: float = 0.0
    """While a probe is out, others wait; it lapses so a cancelled probe cannot wedge the provider."""


@dataclass
class CircuitBreaker:
    """Skips a provider for `cool_down` seconds after `threshold` failures in a row (at once when it
    refuses our credentials); then lets one probe through, which closes it again on success.

    Kept in process, not in Redis: a breaker is a local judgement (this worker's network may be the
    sick part), costs no round trip per send, and each worker learns within `threshold` sends anyway.
    """

    threshold: int = 5
    cool_down: float = 30.0
    clock: Clock = time.monotonic
    _state: dict[str, _Breaker] = field(default_factory=dict)

    def closed_in(self, name: str) -> float:
        """0.0 when `name` may be called now (taking the probe if half open), else seconds to wait."""
        state = self._state.get(name)
        if state is None or state.open_until == 0.0:
            return 0.0
        now = self.clock()
        if state.open_until > now:
            return state.open_until - now
        if state.probe_until > now:
            return state.probe_until - now  # another send is probing: do not pile onto a sick provider
        state.probe_until = now + self.cool_down
        return 0.0

    def succeeded(self, name: str) -> None:
        if self._state.pop(name, None) is not None:
            catalog.provider_out(name, False)

    def released(self, name: str) -> None:
        """The probe taken by `closed_in` was not used (e.g. the rate limit said wait)."""
        state = self._state.get(name)
        if state is not None:
            state.probe_until = 0.0

    def failed(self, name: str, at_once: bool = False) -> None:
        state = self._state.setdefault(name, _Breaker())
        state.failures += 1
        state.probe_until = 0.0
        if at_once or state.failures >= self.threshold or state.open_until:
            state.open_until = self.clock() + self.cool_down
            catalog.provider_out(name, True)


class ProviderChain(Channel):
    """A channel sent through its providers by priority (lowest first, ties in file order)."""

    provider = "failover"

    def __init__(
        self,
        channel: ChannelName,
        routes: Sequence[Route],
        limiter: RateLimiter,
        *,
        breaker: CircuitBreaker | None = None,
        max_wait: float = 0.25,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not routes:
            raise ValueError(f"channel {channel!r}: a provider chain needs at least one provider")
        names = [route.name for route in routes]
        if len(set(names)) != len(names):
            raise ValueError(f"channel {channel!r}: provider names repeat in {names}")
        for route in routes:
            if route.adapter.channel != channel:
                raise ValueError(
                    f"provider {route.name!r} is a {route.adapter.channel} provider, not {channel}"
                )
        # Channel.channel is a class attribute for single-provider adapters; a chain serves any channel.
        self.channel = channel  # type: ignore[misc]
        self.routes = tuple(sorted(routes, key=lambda route: route.priority))
        self._limiter = limiter
        self._breaker = breaker or CircuitBreaker()
        self._max_wait = max_wait
        self._sleep = sleep

    def provider_named(self, name: str) -> Channel:
        """The adapter configured as `name`, e.g. to parse its delivery callbacks."""
        for route in self.routes:
            if route.name == name:
                return route.adapter
        known = ", ".join(route.name for route in self.routes)
        raise LookupError(f"channel {self.channel} has no provider named {name!r} (known: {known})")

    def accepts(self, address: str) -> bool:
        return any(route.adapter.accepts(address) for route in self.routes)

    def parse_callback(self, request: CallbackRequest) -> CallbackReply:
        raise CallbackRejected(
            f"a callback names its provider: use provider_named() on the {self.channel} chain"
        )

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        """Send through the first provider that takes it; raise the most telling error if none did."""
        tried: list[str] = []
        throttled: list[float] = []
        waits: list[float] = []
        retryable = False
        for route in self.routes:
            if not route.adapter.accepts(address):
                continue
            held = self._breaker.closed_in(route.name)
            if held > 0:
                tried.append(f"{route.name}: skipped after repeated failures (for {held:.0f}s more)")
                waits.append(held)
                retryable = True
                continue
            wait = await self._take_token(route)
            if wait > 0:
                self._breaker.released(route.name)
                tried.append(f"{route.name}: over its rate limit")
                throttled.append(wait)
                continue
            try:
                result = await self._call(route, message, address, dispatch)
            except PermanentSendError as exc:
                # The provider answered: it is healthy, the message is not.
                self._breaker.succeeded(route.name)
                kind = InvalidAddressError if isinstance(exc, InvalidAddressError) else PermanentSendError
                raise kind(f"{route.name}: {exc}") from exc
            except ThrottledError as exc:
                self._breaker.succeeded(route.name)  # busy, not sick: it answered
                tried.append(f"{route.name}: {exc}")
                throttled.append(exc.retry_after if exc.retry_after is not None else self._breaker.cool_down)
            except CredentialsError as exc:
                log.error("ALERT: provider %s (%s) refused our credentials: %s", route.name,
                          route.adapter.provider, exc)
                self._breaker.failed(route.name, at_once=True)
                tried.append(f"{route.name}: {exc}")
                retryable = True
            except (RetryableSendError, TimeoutError, OSError) as exc:
                self._breaker.failed(route.name)
                tried.append(f"{route.name}: {_describe(exc)}")
                retryable = True
            except Exception as exc:
                # A bug in that adapter: another provider may still carry the message.
                log.exception(
                    "provider %s raised unexpectedly for message %s", route.name, dispatch.message_id
                )
                self._breaker.failed(route.name)
                tried.append(f"{route.name}: unexpected {_describe(exc)}")
            else:
                self._breaker.succeeded(route.name)
                cost = result.cost or route.cost_per_message or 0.0
                return SendResult(
                    status=result.status, provider_message_id=result.provider_message_id,
                    cost=cost, provider=route.name,
                )
        raise self._failure(tried, throttled, waits, retryable)

    async def close(self) -> None:
        await asyncio.gather(*(route.adapter.close() for route in self.routes))

    async def _call(
        self, route: Route, message: RenderedMessage, address: str, dispatch: Dispatch
    ) -> SendResult:
        """The adapter's send, counted and timed per provider (the alert rules read the counts)."""
        started, outcome = time.monotonic(), "failed"
        try:
            result = await route.adapter.send(message, address, dispatch)
            outcome = "ok"
            return result
        except PermanentSendError:
            outcome = "refused"  # it answered: the message is at fault, not the provider
            raise
        except ThrottledError:
            outcome = "throttled"
            raise
        except CredentialsError:
            outcome = "credentials"
            raise
        finally:
            catalog.provider_call(self.channel, route.name, outcome, time.monotonic() - started)

    async def _take_token(self, route: Route) -> float:
        """0.0 once a token is taken, waiting up to `max_wait` in all; else the provider's wait."""
        if route.rate is None:
            return 0.0
        waited = 0.0
        while True:
            try:
                wait = await self._limiter.acquire(route.name, route.rate.per_second, route.rate.burst)
            except RedisError as exc:
                # Without the shared bucket the provider's quota cannot be kept: wait, do not send.
                raise RetryableSendError(f"rate limiter unavailable: {type(exc).__name__}: {exc}") from exc
            if wait <= 0:
                return 0.0
            if waited + wait > self._max_wait:
                return wait
            await self._sleep(wait)
            waited += wait

    def _failure(
        self, tried: list[str], throttled: list[float], waits: list[float], retryable: bool
    ) -> Exception:
        if not tried:
            names = ", ".join(route.name for route in self.routes)
            return InvalidAddressError(f"no {self.channel} provider ({names}) accepts this address")
        reason = "; ".join(tried)
        if throttled and not retryable:
            return ThrottledError(f"every provider is throttled: {reason}", retry_after=min(throttled))
        if throttled or retryable:
            # Only when every provider asked for patience is there a time worth waiting for.
            everyone_waits = len(throttled) + len(waits) == len(tried)
            return RetryableSendError(reason, retry_after=min(throttled + waits) if everyone_waits else None)
        return PermanentSendError(f"every provider failed unexpectedly: {reason}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RetryableSendError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

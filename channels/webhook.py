"""The webhook channel: POST the rendered JSON, signed, to an allow-listed destination.

Receivers check `X-Switchboard-Signature: sha256=<hex>`, the HMAC-SHA256 with the shared secret of
`{X-Switchboard-Timestamp}.{raw body}` (see `verify`), and reject old timestamps to stop replays.
Every POST carries `Idempotency-Key: "<message id>.<step>"` (a structured-field string, as the IETF
draft defines the header): the same on a retry or a redelivered dispatch, so a receiver that keeps
the keys it has seen processes each message once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from channels.base import (
    IDEMPOTENCY_HEADER,
    Channel,
    PermanentSendError,
    RetryableSendError,
    SendResult,
    idempotency_header,
)
from channels.templates import RenderedMessage
from records.topics import Dispatch

SIGNATURE_HEADER = "X-Switchboard-Signature"
TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
MESSAGE_ID_HEADER = "X-Switchboard-Message-Id"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for a body sent at `timestamp` (seconds since the epoch)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, max_age: float = 300.0) -> bool:
    """What a receiver checks: a matching signature on a timestamp no older than `max_age` seconds."""
    try:
        age = abs(time.time() - float(timestamp))
    except ValueError:
        return False
    return age <= max_age and hmac.compare_digest(sign(secret, timestamp, body), signature)


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address the host resolves to, through the event loop's resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class WebhookAllowlist:
    """Destinations a webhook may reach: networks in CIDR form, or exact host names."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.hosts: set[str] = set()
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                name = entry.strip().lower().rstrip(".")
                if not name or "/" in name or any(c.isspace() for c in name):
                    raise ValueError(
                        f"webhook allowlist entry {entry!r} is neither a CIDR nor a host name"
                    ) from None
                self.hosts.add(name)

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


class Webhook(Channel):
    """Signed JSON POSTs through a shared httpx.AsyncClient; the address is the destination URL."""

    channel = "webhook"
    provider = "webhook"

    def __init__(
        self,
        client: httpx.AsyncClient,
        secret: SecretStr,
        allow: Sequence[str],
        timeout: float = 10.0,
        resolve: Resolver = resolve_host,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret.get_secret_value():
            raise ValueError("webhook secret is empty: set SWITCHBOARD_WEBHOOK_SECRET")
        if timeout <= 0:
            raise ValueError(f"webhook timeout must be positive, got {timeout}")
        self._client = client
        self._secret = secret
        self._allow = WebhookAllowlist(allow)
        self._timeout = httpx.Timeout(timeout)
        self._resolve = resolve
        self._clock = clock

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        await self._check_destination(address)
        body = message.body.encode()
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret.get_secret_value(), timestamp, body),
            TIMESTAMP_HEADER: timestamp,
            MESSAGE_ID_HEADER: dispatch.message_id,
            IDEMPOTENCY_HEADER: idempotency_header(dispatch),
        }
        try:
            # Redirects are not followed: they could lead outside the allowlist.
            response = await self._client.post(
                address, content=body, headers=headers, timeout=self._timeout, follow_redirects=False
            )
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"webhook timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise RetryableSendError(f"webhook connection failed: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            provider_id = response.headers.get("X-Request-Id", dispatch.message_id)
            return SendResult(status="delivered", provider_message_id=provider_id)
        reason = f"webhook answered HTTP {status} {response.reason_phrase}".rstrip()
        if status == 429 or status >= 500:
            raise RetryableSendError(reason, retry_after=_retry_after(response.headers.get("Retry-After")))
        raise PermanentSendError(reason)

    async def _check_destination(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise PermanentSendError(f"webhook address {url!r} is not a valid URL: {exc}") from exc
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise PermanentSendError(f"webhook address {url!r} is not an http(s) URL with a host")
        if self._allow.allows_host(host):
            return
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = await self._resolved(host, port)
        # Every address must be allowed: the HTTP client may connect to any of them. The client
        # resolves again, so a DNS answer changing in between is not covered: allow-list by CIDR
        # destinations whose DNS you control, or list exact host names.
        for address in addresses:
            if not self._allow.allows_address(address):
                raise PermanentSendError(f"destination {address} is not in the webhook allowlist")

    async def _resolved(self, host: str, port: int) -> list[IPAddress]:
        try:
            found = await self._resolve(host, port)
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                raise PermanentSendError(f"webhook host {host!r} does not resolve") from exc
            raise RetryableSendError(f"webhook host {host!r} could not be resolved now: {exc}") from exc
        if not found:
            raise PermanentSendError(f"webhook host {host!r} does not resolve")
        # getaddrinfo may append a scope (fe80::1%eth0) that ip_address does not accept.
        return [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds, from either delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())

"""A local APNs peer: HTTP/2 over TLS (hypercorn), ES256 provider tokens checked as Apple checks them.

Apple's provider API speaks only HTTP/2, so unlike the other peers this one is an ASGI app served by
hypercorn with a self-signed certificate (`write_self_signed_certificate`). It answers with APNs' real
statuses and `{"reason": ...}` bodies; tests script and inspect it through `app.state`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypercorn.asyncio import serve
from hypercorn.config import Config

from localparts.process import free_port

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Every reason APNs gives, with its HTTP status (Apple's "Handling notification responses from APNs").
REASONS: dict[str, int] = {
    "BadCollapseId": 400, "BadDeviceToken": 400, "BadExpirationDate": 400, "BadMessageId": 400,
    "BadPriority": 400, "BadTopic": 400, "DeviceTokenNotForTopic": 400, "DuplicateHeaders": 400,
    "IdleTimeout": 400, "InvalidPushType": 400, "MissingDeviceToken": 400, "MissingTopic": 400,
    "PayloadEmpty": 400, "TopicDisallowed": 400,
    "BadCertificate": 403, "BadCertificateEnvironment": 403, "ExpiredProviderToken": 403,
    "Forbidden": 403, "InvalidProviderToken": 403, "MissingProviderToken": 403,
    "BadPath": 404, "MethodNotAllowed": 405, "ExpiredToken": 410, "Unregistered": 410,
    "PayloadTooLarge": 413, "TooManyProviderTokenUpdates": 429, "TooManyRequests": 429,
    "InternalServerError": 500, "ServiceUnavailable": 503, "Shutdown": 503,
}
PUSH_TYPES = {
    "alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity",
    "pushtotalk",
}
MAX_PAYLOAD = 4096
TOKEN_MAX_AGE = 3600
_PATH = re.compile(r"^/3/device/([^/]*)$")
_DEVICE_TOKEN = re.compile(r"^[0-9a-fA-F]{64,200}$")


@dataclass
class ApnsPeerState:
    """What the peer saw, and what it answers next."""

    script: list[str] = field(default_factory=list)
    """APNs reasons to answer next, one per request whose provider token is valid."""
    received: list[dict[str, Any]] = field(default_factory=list)
    """Each request: http_version, path, headers (lower-case), payload, device_token."""
    unregistered: set[str] = field(default_factory=set)
    provider_tokens: list[str] = field(default_factory=list)
    """Distinct provider tokens accepted, in order: a refresh adds one."""
    min_token_interval: float = 0.0
    """Seconds a new provider token must wait after the previous one (APNs: 20 minutes); 0 = off."""
    last_new_token_at: float = float("-inf")


class ApnsApp:
    """The ASGI app of one APNs key (team, key id, public key) for one topic."""

    def __init__(self, *, team_id: str, key_id: str, public_key_pem: bytes, topic: str) -> None:
        self.team_id, self.key_id, self.topic = team_id, key_id, topic
        self._public_key = serialization.load_pem_public_key(public_key_pem)
        self.state = ApnsPeerState()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, headers, content = self.answer(scope, body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def answer(self, scope: Scope, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        match = _PATH.match(scope["path"])
        device_token = match.group(1) if match else ""
        self.state.received.append({
            "http_version": scope["http_version"], "path": scope["path"], "headers": headers,
            "payload": body, "device_token": device_token,
        })
        apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
        if scope["http_version"] != "2":
            return 505, [], b"APNs speaks HTTP/2 only"
        reason = self._refusal(scope["method"], match, headers, body)
        if reason is None and self.state.script:
            reason = self.state.script.pop(0)
        reply_headers = [(b"apns-id", apns_id.encode())]
        if reason is None:
            return 200, reply_headers, b""
        error: dict[str, Any] = {"reason": reason}
        if reason == "Unregistered":
            error["timestamp"] = int(time.time() * 1000)
        reply_headers.append((b"content-type", b"application/json"))
        return REASONS[reason], reply_headers, json.dumps(error).encode()

    def _refusal(
        self, method: str, match: re.Match[str] | None, headers: dict[str, str], body: bytes
    ) -> str | None:
        """The reason APNs would refuse this request, checked in Apple's order, or None."""
        if method != "POST":
            return "MethodNotAllowed"
        if match is None:
            return "BadPath"
        token_refusal = self._check_provider_token(headers.get("authorization", ""))
        if token_refusal:
            return token_refusal
        device_token = match.group(1)
        if not device_token:
            return "MissingDeviceToken"
        if not _DEVICE_TOKEN.match(device_token):
            return "BadDeviceToken"
        topic = headers.get("apns-topic")
        if not topic:
            return "MissingTopic"
        if topic != self.topic:
            return "TopicDisallowed"
        if headers.get("apns-push-type", "alert") not in PUSH_TYPES:
            return "InvalidPushType"
        if headers.get("apns-priority", "10") not in ("1", "5", "10"):
            return "BadPriority"
        if not headers.get("apns-expiration", "0").isdigit():
            return "BadExpirationDate"
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return "BadCollapseId"
        if "apns-id" in headers and not _is_uuid(headers["apns-id"]):
            return "BadMessageId"
        if device_token in self.state.unregistered:
            return "Unregistered"
        if not body:
            return "PayloadEmpty"
        if len(body) > MAX_PAYLOAD:
            return "PayloadTooLarge"
        return None

    def _check_provider_token(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "MissingProviderToken"
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                return "InvalidProviderToken"
            claims = jwt.decode(
                token, self._public_key, algorithms=["ES256"],  # type: ignore[arg-type]
                options={"require": ["iss", "iat"], "verify_exp": False},
            )
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        if claims["iss"] != self.team_id:
            return "InvalidProviderToken"
        if time.time() - float(claims["iat"]) > TOKEN_MAX_AGE:
            return "ExpiredProviderToken"
        state = self.state
        if token not in state.provider_tokens:
            now = time.monotonic()
            if state.provider_tokens and now - state.last_new_token_at < state.min_token_interval:
                return "TooManyProviderTokenUpdates"
            state.provider_tokens.append(token)
            state.last_new_token_at = now
        return None


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def create_app(*, team_id: str, key_id: str, public_key_pem: bytes, topic: str) -> ApnsApp:
    """The peer's ASGI app; serve it with `ApnsPeer`."""
    return ApnsApp(team_id=team_id, key_id=key_id, public_key_pem=public_key_pem, topic=topic)


def write_self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A P-256 certificate for `host` (and localhost), valid a day; returns (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.push.apple.com (local peer)")])
    now = dt.datetime.now(dt.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(host))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "apns-peer.crt", folder / "apns-peer.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return cert_file, key_file


class ApnsPeer:
    """Serves an `ApnsApp` with hypercorn on 127.0.0.1 over TLS, offering HTTP/2 by ALPN."""

    def __init__(self, app: ApnsApp, certfile: Path, keyfile: Path, port: int = 0) -> None:
        self.app = app
        self.port = port or free_port()
        self._config = Config()
        self._config.bind = [f"127.0.0.1:{self.port}"]
        self._config.certfile, self._config.keyfile = str(certfile), str(keyfile)
        self._config.alpn_protocols = ["h2", "http/1.1"]
        self._config.accesslog = None
        self._config.loglevel = "WARNING"  # no "Running on ..." line in the demo's output
        self._shutdown = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> ApnsPeer:
        self._task = asyncio.create_task(
            serve(self.app, self._config, shutdown_trigger=self._shutdown.wait, mode="asgi")  # type: ignore[arg-type]
        )
        for _ in range(500):  # until the port accepts, at most ~5 s
            if self._task.done():
                self._task.result()  # hypercorn failed to start: raise its error
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            writer.close()
            await writer.wait_closed()
            return self
        raise RuntimeError(f"APNs peer did not open port {self.port}")

    async def stop(self) -> None:
        self._shutdown.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def __aenter__(self) -> ApnsPeer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _ignore_ssl_shutdown_timeouts(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # A client that drops its connection without a TLS close_notify makes hypercorn's close wait time
    # out; that is the client's business, not an error of the peer worth a traceback on the console.
    if isinstance(context.get("exception"), TimeoutError):
        return
    loop.default_exception_handler(context)


class ThreadedApnsPeer:
    """An `ApnsPeer` on its own thread and loop, for callers without an event loop (the demo, benches)."""

    def __init__(self, app: ApnsApp, certfile: Path, keyfile: Path, port: int = 0) -> None:
        self._peer = ApnsPeer(app, certfile, keyfile, port)
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_ignore_ssl_shutdown_timeouts)
        self._thread = threading.Thread(target=self._loop.run_forever, name="apns-peer", daemon=True)

    @property
    def url(self) -> str:
        return self._peer.url

    def start(self) -> ThreadedApnsPeer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._peer.start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._peer.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

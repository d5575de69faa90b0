"""The webhook adapter against httpx.MockTransport: signature, status classes, allowlist."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from channels.base import PermanentSendError, RetryableSendError
from channels.templates import RenderedMessage
from channels.webhook import (
    MESSAGE_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Webhook,
    WebhookAllowlist,
    sign,
    verify,
)
from records.topics import Dispatch, EventCore

SECRET = "s3cret-for-tests"
NOW = 1_780_000_000.0
BODY = '{"type": "fee_due", "amount": "¥5,000"}'
MESSAGE = RenderedMessage(template="fee_due", channel="webhook", body=BODY)
DISPATCH = Dispatch(
    message_id="m-42", user_id="u1", channel="webhook", address="http://127.0.0.1:9/hook",
    event=EventCore(event_id="e1", app="finance", type="fee", template="fee_due", category="transactional"),
    rule_id="r1", rule_version="1",
)
Handler = Callable[[httpx.Request], httpx.Response]


def webhook(
    handler: Handler,
    allow: list[str] | None = None,
    resolved: dict[str, list[str]] | None = None,
) -> tuple[Webhook, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    async def resolve(host: str, port: int) -> list[str]:
        if resolved is None or host not in resolved:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return resolved[host]

    client = httpx.AsyncClient(transport=httpx.MockTransport(record))
    channel = Webhook(client, SecretStr(SECRET), allow or ["127.0.0.1/32", "::1/128"],
                      resolve=resolve, clock=lambda: NOW)
    return channel, seen


async def test_posts_the_body_signed_over_timestamp_and_body() -> None:
    channel, seen = webhook(lambda r: httpx.Response(204, headers={"X-Request-Id": "rq-1"}))
    result = await channel.send(MESSAGE, "http://127.0.0.1:8080/hooks/fees", DISPATCH)
    assert (result.status, result.provider_message_id) == ("delivered", "rq-1")
    [request] = seen
    assert request.method == "POST" and str(request.url) == "http://127.0.0.1:8080/hooks/fees"
    assert request.content == BODY.encode()
    assert json.loads(request.content)["amount"] == "¥5,000"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers[TIMESTAMP_HEADER] == str(int(NOW))
    assert request.headers[MESSAGE_ID_HEADER] == "m-42"
    signature = request.headers[SIGNATURE_HEADER]
    assert signature.startswith("sha256=") and len(signature) == len("sha256=") + 64
    assert signature == sign(SECRET, str(int(NOW)), BODY.encode())
    assert SECRET not in str(request.headers)


def test_verify_checks_secret_body_and_age() -> None:
    now = str(int(time.time()))
    good = sign(SECRET, now, b"{}")
    assert verify(SECRET, now, b"{}", good)
    assert not verify("other", now, b"{}", good)
    assert not verify(SECRET, now, b"{ }", good)
    old = str(int(time.time()) - 3600)
    assert not verify(SECRET, old, b"{}", sign(SECRET, old, b"{}"))
    assert not verify(SECRET, "yesterday", b"{}", good)


@pytest.mark.parametrize(
    ("response", "error", "retry_after"),
    [
        (httpx.Response(429, headers={"Retry-After": "7"}), RetryableSendError, 7.0),
        (httpx.Response(503), RetryableSendError, None),
        (httpx.Response(500, headers={"Retry-After": "soon"}), RetryableSendError, None),
        (httpx.Response(404), PermanentSendError, None),
        (httpx.Response(400), PermanentSendError, None),
        (httpx.Response(302, headers={"Location": "http://10.0.0.5/"}), PermanentSendError, None),
    ],
)
async def test_status_classes(
    response: httpx.Response, error: type[Exception], retry_after: float | None
) -> None:
    channel, seen = webhook(lambda r: response)
    with pytest.raises(error, match=f"HTTP {response.status_code}") as caught:
        await channel.send(MESSAGE, "http://127.0.0.1/hook", DISPATCH)
    assert len(seen) == 1  # the redirect was not followed
    if isinstance(caught.value, RetryableSendError):
        assert caught.value.retry_after == retry_after


async def test_retry_after_as_an_http_date() -> None:
    later = {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}
    channel, _ = webhook(lambda r: httpx.Response(503, headers=later))
    with pytest.raises(RetryableSendError) as caught:
        await channel.send(MESSAGE, "http://127.0.0.1/hook", DISPATCH)
    assert caught.value.retry_after is not None and caught.value.retry_after > 1e9


async def test_timeouts_and_connection_errors_are_retryable() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    for handler, reason in ((timeout, "timed out"), (refused, "connection failed")):
        channel, _ = webhook(handler)
        with pytest.raises(RetryableSendError, match=reason):
            await channel.send(MESSAGE, "http://127.0.0.1/hook", DISPATCH)


@pytest.mark.parametrize(
    ("url", "resolved", "reason"),
    [
        ("http://10.0.0.5/hook", None, "destination 10.0.0.5 is not in the webhook allowlist"),
        ("https://[fd00::1]/hook", None, "destination fd00::1 is not in the webhook allowlist"),
        ("http://hooks.uni.example.edu/x", {"hooks.uni.example.edu": ["127.0.0.1", "10.0.0.5"]},
         "destination 10.0.0.5 is not in the webhook allowlist"),
        ("http://gone.example.edu/x", None, "'gone.example.edu' does not resolve"),
        ("ftp://127.0.0.1/x", None, "not an http(s) URL"),
        ("http:///nohost", None, "not an http(s) URL"),
        ("http://127.0.0.1:99999/x", None, "not a valid URL"),
    ],
)
async def test_destinations_outside_the_allowlist_are_refused_before_any_request(
    url: str, resolved: dict[str, list[str]] | None, reason: str
) -> None:
    channel, seen = webhook(lambda r: httpx.Response(200), resolved=resolved)
    with pytest.raises(PermanentSendError) as caught:
        await channel.send(MESSAGE, url, DISPATCH)
    assert reason in str(caught.value)
    assert seen == []


async def test_allowed_by_resolution_or_by_host_name() -> None:
    resolved = {"hooks.local": ["127.0.0.1"], "v6.local": ["::ffff:127.0.0.1"]}
    channel, seen = webhook(lambda r: httpx.Response(200), resolved=resolved)
    await channel.send(MESSAGE, "http://hooks.local:8080/x", DISPATCH)
    await channel.send(MESSAGE, "http://v6.local/x", DISPATCH)
    by_name, _ = webhook(lambda r: httpx.Response(200), allow=["hooks.partner.example"])
    await by_name.send(MESSAGE, "https://HOOKS.partner.example/x", DISPATCH)
    assert len(seen) == 2


async def test_temporary_dns_failure_is_retryable() -> None:
    async def flaky(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    channel = Webhook(client, SecretStr(SECRET), ["127.0.0.1/32"], resolve=flaky)
    with pytest.raises(RetryableSendError, match="could not be resolved now"):
        await channel.send(MESSAGE, "http://hooks.local/x", DISPATCH)


def test_constructor_fails_fast() -> None:
    client = httpx.AsyncClient()
    with pytest.raises(ValueError, match="webhook secret is empty"):
        Webhook(client, SecretStr(""), ["127.0.0.1/32"])
    with pytest.raises(ValueError, match="'not a host' is neither a CIDR nor a host name"):
        Webhook(client, SecretStr(SECRET), ["not a host"])
    with pytest.raises(ValueError, match="timeout must be positive"):
        Webhook(client, SecretStr(SECRET), [], timeout=0)


def test_allowlist_parses_networks_and_hosts() -> None:
    allow = WebhookAllowlist(["192.168.7.0/24", "::1", "Hooks.Example."])
    assert allow.hosts == {"hooks.example"}
    assert len(allow.networks) == 2

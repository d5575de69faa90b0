"""build_channels: built-ins from the settings, a provider chain per channel from the providers file."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from channels.accounts import AccountAwareChain
from channels.base import PermanentSendError, SendResult
from channels.providers import ProvidersFileError
from channels.registry import build_channels, configured_channels
from channels.templates import RenderedMessage
from localparts.peers import sms_gateway
from localparts.peers.server import PeerServer
from records.topics import Dispatch, EventCore
from settings import Settings

GATEWAY_SECRET = "gateway-secret-registry-91"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.mark.parametrize(("providers", "expected"), [
    (None, {"email", "inbox"}),
    ("# no providers yet\n", {"email", "inbox"}),
    ("sms:\n  - {name: gw, kind: http-sms, options: {url: 'http://127.0.0.1:9/', secret: env:GW_SECRET}}\n",
     {"email", "inbox", "sms"}),
    ("sms:\n  - {name: gw, kind: http-sms, enabled: false, options: {url: 'http://x/', secret: env:NOPE}}\n",
     {"email", "inbox"}),
])
async def test_channels_built(tmp_path: Path, settings: Settings, redis: Redis,
                              monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                              providers: str | None, expected: set[str]) -> None:
    monkeypatch.setenv("GW_SECRET", GATEWAY_SECRET)
    path = write(tmp_path, providers) if providers is not None else tmp_path / "absent.yaml"
    async with httpx.AsyncClient() as http:
        with caplog.at_level(logging.INFO, logger="channels.registry"):
            channels = build_channels(settings.model_copy(update={"providers": path}), redis, http)
    assert set(channels) == expected
    assert configured_channels(settings.model_copy(update={"providers": path})) == expected
    if providers is None:
        assert f"no providers file at {path}" in caplog.text
    if "sms" in channels:
        assert isinstance(channels["sms"], AccountAwareChain)
        assert "channel sms: providers gw" in caplog.text
    assert GATEWAY_SECRET not in caplog.text and GATEWAY_SECRET not in repr(channels)


async def test_a_bad_providers_file_stops_the_start(tmp_path: Path, settings: Settings, redis: Redis) -> None:
    path = write(tmp_path, "sms:\n  - {name: gw, kind: http-smss}\n")
    async with httpx.AsyncClient() as http:
        with pytest.raises(ProvidersFileError,
                           match=r"providers.yaml:2:22: unknown provider kind 'http-smss' "
                                 r"\(did you mean 'http-sms'\?\)"):
            build_channels(settings.model_copy(update={"providers": path}), redis, http)


async def test_the_built_chain_sends_through_the_gateway_peer(
    tmp_path: Path, settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_SECRET", GATEWAY_SECRET)
    peer = sms_gateway.create_app(GATEWAY_SECRET)
    async with PeerServer(peer) as server, httpx.AsyncClient() as http:
        path = write(tmp_path, f"""
            sms:
              - name: campus-gateway
                kind: http-sms
                rate: {{per_second: 50, burst: 100}}
                cost_per_message: 0.07
                options: {{url: "{server.url}/sms", secret: env:GW_SECRET, sender: CAMPUS}}
        """)
        channels = build_channels(settings.model_copy(update={"providers": path}), redis, http)
        sms = channels["sms"]
        message = RenderedMessage(template="fee_due", channel="sms", text="Your fee is due on Friday.")
        dispatch = Dispatch(
            message_id="m-77", user_id="u-1", channel="sms", address="+447700900123",
            event=EventCore(event_id="e-7", app="bursar", type="fee", template="fee_due", category="notice"),
            rule_id="r", rule_version="1",
        )
        result = await sms.send(message, "+447700900123", dispatch)
        with pytest.raises(PermanentSendError):
            await sms.send(message.model_copy(update={"text": ""}), "+447700900123", dispatch)
        await sms.close()
    assert isinstance(result, SendResult)
    assert result.provider == "campus-gateway"
    assert result.cost > 0
    assert await redis.exists("sb:rate:campus-gateway") == 1  # the token came from the shared bucket
    assert [body["to"] for body in peer[sms_gateway.STATE].received] == ["+447700900123"]

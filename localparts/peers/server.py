"""Run an aiohttp app on a free loopback port, in the caller's event loop or on its own thread."""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass, field

from aiohttp import web

from localparts.process import free_port


@dataclass
class PeerServer:
    """An aiohttp app served on 127.0.0.1; `url` is its base URL once started."""

    app: web.Application
    host: str = "127.0.0.1"
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> PeerServer:
        self.port = self.port or free_port()
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> PeerServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class ThreadedPeer:
    """A `PeerServer` on its own thread and loop, for callers without an event loop (the demo, benches)."""

    def __init__(self, app: web.Application, port: int = 0) -> None:
        self._server = PeerServer(app, port=port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="peer", daemon=True)

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> ThreadedPeer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

"""The API's Prometheus metrics: requests by route template and status, and `/metrics` itself.

`/metrics` needs no app key (a scraper holds none) but answers only the networks of
`SWITCHBOARD_API_METRICS_ALLOW` (loopback by default); to others it does not exist (404), like any
path. Routes are counted by their template (`/v1/inbox/{user}`), never the raw path, so neither user
ids nor probing scanners can grow the number of series; a path no route matched counts as `unmatched`.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metrics import catalog
from settings import SwitchboardError


class RequestMetrics:
    """ASGI middleware counting every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started, code = time.monotonic(), 500

        async def sending(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            catalog.API_REQUESTS.labels(route, method, str(code)).inc()
            catalog.API_SECONDS.labels(route).observe(time.monotonic() - started)


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def metrics_router(allow: Sequence[str]) -> APIRouter:
    """GET /metrics for clients in the `allow` networks (CIDR); SwitchboardError names one that is not."""
    networks = []
    for network in allow:
        try:
            networks.append(ipaddress.ip_network(network, strict=False))
        except ValueError:
            raise SwitchboardError(
                f"SWITCHBOARD_API_METRICS_ALLOW: {network!r} is not a network (e.g. 10.0.0.0/8)"
            ) from None
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        client = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            address = None
        if address is None or not any(address in network for network in networks):
            raise HTTPException(status_code=404, detail="Not Found")
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router

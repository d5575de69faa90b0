"""Provider delivery callbacks: verified by the provider's adapter, turned into receipts.

`/v1/callbacks/{provider_name}` takes the provider's name as configured (the route name in the
providers file, the name sends are remembered under). A callback is acknowledged only once its
receipts are on the receipts topic: if the broker is down the API answers 503 and the provider,
which retries unacknowledged callbacks, sends it again.
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import asyncio
import logging
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Path, Request, status
from fastapi.responses import JSONResponse, Response

from api.deps import ApiDeps
from api.problems import TOO_LARGE, Problem
from channels.base import CallbackRejected, CallbackRequest, Channel
from state.provider_messages import EarlyReport, ProviderMessages

log = logging.getLogger(__name__)

ProviderName = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="the provider's name in the providers file")
]


def callbacks_router(
    deps: ApiDeps, providers: Mapping[str, Channel], sent: ProviderMessages
) -> APIRouter:
    router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])

    responses: dict[int | str, dict[str, object]] = {
        403: {"model": Problem, "description": "Signature or token did not verify"},
        404: {"model": Problem, "description": "No provider of that name"},
        **TOO_LARGE,
        503: {
            "model": Problem,
            "description": "Receipts not acknowledged by the broker: the provider should retry",
        },
    }

    # Two operations on one path (each with its own operationId); one handler serves both.
    @router.get(
        "/{provider_name}",
        summary="A provider's URL check (WeChat's echostr handshake) or a report by query",
        operation_id="provider_callback_get",
        responses=responses,
    )
    async def callback_get(provider_name: ProviderName, request: Request) -> Response:
        return await callback(provider_name, request)

    @router.post(
        "/{provider_name}",
        summary="A provider's delivery-status callback",
        operation_id="provider_callback_post",
        responses=responses,
    )
    async def callback_post(provider_name: ProviderName, request: Request) -> Response:
        return await callback(provider_name, request)

    async def callback(provider_name: str, request: Request) -> Response:
        adapter = providers.get(provider_name)
        if adapter is None:
            known = ", ".join(sorted(providers)) or "none configured"
            return _error(status.HTTP_404_NOT_FOUND, f"no provider named {provider_name!r} (known: {known})")
        # Read in chunks under the app's body limit (413 past it), so no upload can exhaust memory.
        body = await request.body()
        incoming = CallbackRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        try:
            reply = adapter.parse_callback(incoming)
        except CallbackRejected as exc:
            log.warning("callback for %s refused: %s", provider_name, exc)
            return _error(status.HTTP_403_FORBIDDEN, f"callback refused: {exc}")
        known_sends = await sent.lookup(provider_name, [r.provider_message_id for r in reply.receipts])
        receipts = [
            known_sends[r.provider_message_id].receipt(r.status, reason=r.reason, provider=provider_name)
            for r in reply.receipts
            if r.provider_message_id in known_sends
        ]
        early = [
            EarlyReport(provider_message_id=r.provider_message_id, status=r.status, reason=r.reason)
            for r in reply.receipts
            if r.provider_message_id not in known_sends
        ]
        # Reports faster than the sender's bookkeeping wait for it (or expire unmatched: not ours).
        receipts += await sent.park_early(provider_name, early)
        unknown = len(reply.receipts) - len(receipts)
        if unknown:
            log.info("callback for %s: %d report(s) wait for their send's record", provider_name, unknown)
        # PublishError propagates to the app's handler: 503, so the provider retries.
        await asyncio.gather(*(deps.publisher.publish_receipt(r) for r in receipts))
        if reply.body:
            return Response(reply.body, media_type=reply.media_type)
        return JSONResponse({"receipts": len(receipts), "unknown": unknown})

    return router


def _error(code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=code)

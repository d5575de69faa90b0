"""Signed links people follow: the open pixel, click redirects and the one-click unsubscribe.

Receipts are published before answering. If the broker does not acknowledge within
`PUBLISH_WAIT_SECONDS`, the person still gets the pixel or the redirect (nobody should be stranded by
an outage) and the receipt is lost, logged as a warning with its message id; the unsubscribe does not
depend on the broker: it is recorded in Redis, and a Redis failure answers 503.
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import asyncio
import base64
import html
import logging
from typing import Annotated

from fastapi import APIRouter, Path, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from api.deps import ApiDeps
from api.problems import Problem
from api.publisher import PublishError
from channels.links import LinkClaims, LinkKind, LinkRejected, LinkSigner
from records.topics import Receipt
from state.consent import ConsentStore

log = logging.getLogger(__name__)

PUBLISH_WAIT_SECONDS = 2.0
LINK_PROVIDER = "link"
"""The `provider` of receipts that come from links rather than from a provider's report."""
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}

Token = Annotated[str, Path(min_length=10, max_length=4096, pattern=r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")]


def links_router(deps: ApiDeps, signer: LinkSigner) -> APIRouter:
    """`/t/o/{token}.gif`, `/t/c/{token}`; `/u/{token}` too when the deps hold a ConsentStore."""
    router = APIRouter(tags=["links"])

    @router.get(
        "/t/o/{token}.gif",
        summary="Open pixel: records `opened`, answers a 1x1 GIF",
        response_class=Response,
        responses={
            200: {"content": {"image/gif": {}}, "description": "A 1x1 transparent GIF"},
            404: {"model": Problem, "description": "Not a valid link"},
        },
    )
    async def opened(token: Token) -> Response:
        claims = _verified(signer, "open", token)
        if isinstance(claims, JSONResponse):
            return claims
        await _publish(deps, claims.receipt("opened", provider=LINK_PROVIDER))
        return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)

    @router.get(
        "/t/c/{token}",
        status_code=status.HTTP_302_FOUND,
        summary="Click redirect: records `clicked`, answers 302 to the signed target",
        response_class=Response,
        responses={
            302: {"description": "To the link's target"},
            404: {"model": Problem, "description": "Not a valid link"},
        },
    )
    async def clicked(token: Token) -> Response:
        claims = _verified(signer, "click", token)
        if isinstance(claims, JSONResponse):
            return claims
        first = True
        if claims.channel == "inbox":
            # Keep the inbox's own state in step; only its first click is a receipt, as in the inbox API.
            message, first = await deps.inbox.mark_clicked(claims.user_id, claims.message_id)
            first = first and message is not None
        if first:
            await _publish(deps, claims.receipt("clicked", provider=LINK_PROVIDER))
        return RedirectResponse(signer.absolute(claims.target), status.HTTP_302_FOUND, headers=_NO_STORE)

    if deps.consent is not None:
        _unsubscribe_routes(router, signer, deps.consent)
    return router


def _unsubscribe_routes(router: APIRouter, signer: LinkSigner, consent: ConsentStore) -> None:
    @router.get(
        "/u/{token}",
        response_class=HTMLResponse,
        summary="Unsubscribe page (changes nothing)",
        responses=_PAGE_REFUSED,
    )
    async def unsubscribe_page(token: Token) -> HTMLResponse:
        # A GET must not unsubscribe: mail scanners and previews follow links on their own.
        try:
            claims = signer.verify("unsubscribe", token)
        except LinkRejected:
            return _page(_INVALID, status.HTTP_404_NOT_FOUND)
        scope = html.escape(f"{claims.category} messages by {claims.channel}")
        return _page(
            f"<h1>Unsubscribe?</h1><p>Stop receiving {scope} from {html.escape(claims.app)}."
            "<br>不再接收此类消息？</p>"
            '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe 退订</button></form>',
            status.HTTP_200_OK,
        )

    @router.post(
        "/u/{token}",
        response_class=HTMLResponse,
        summary="One-click unsubscribe (RFC 8058)",
        responses=_PAGE_REFUSED,
    )
    async def unsubscribe(token: Token) -> HTMLResponse:
        """Unsubscribes the link's user from its category on its channel; the POST itself is the
        consent, whatever its body (mail clients send `List-Unsubscribe=One-Click`)."""
        try:
            claims = signer.verify("unsubscribe", token)
        except LinkRejected:
            return _page(_INVALID, status.HTTP_404_NOT_FOUND)
        await consent.unsubscribe(
            claims.user_id, category=claims.category, channel=claims.channel, source="one-click link"
        )
        log.info("user %s unsubscribed from %s on %s by link", claims.user_id, claims.category,
                 claims.channel)
        scope = html.escape(f"{claims.category} messages by {claims.channel}")
        return _page(
            f"<h1>Unsubscribed</h1><p>You will no longer receive {scope}.<br>已退订。</p>",
            status.HTTP_200_OK,
        )


def _verified(signer: LinkSigner, kind: LinkKind, token: str) -> LinkClaims | JSONResponse:
    try:
        return signer.verify(kind, token)
    except LinkRejected as exc:
        # 404 rather than a redirect anywhere: a refused click link must not send people on.
        return JSONResponse({"detail": f"not a valid {kind} link: {exc}"}, status.HTTP_404_NOT_FOUND)


async def _publish(deps: ApiDeps, receipt: Receipt) -> None:
    try:
        await asyncio.wait_for(deps.publisher.publish_receipt(receipt), PUBLISH_WAIT_SECONDS)
    except (PublishError, TimeoutError) as exc:
        log.warning(
            "receipt %s of message %s lost: the broker did not acknowledge it (%s)",
            receipt.status, receipt.message_id, exc or "timeout",
        )


_PAGE_REFUSED: dict[int | str, dict[str, object]] = {
    # 404 like the other links: a token that does not verify names nothing of ours.
    404: {"content": {"text/html": {}}, "description": "A page saying the link is not valid"},
}
_INVALID = "<h1>Link not valid</h1><p>This link is damaged or not one of ours. 链接无效。</p>"


def _page(body: str, code: int) -> HTMLResponse:
    return HTMLResponse(
        '<!doctype html><html lang="en"><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width"><title>Switchboard</title>'
        f"<body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\">{body}</body></html>",
        status_code=code,
        headers=_NO_STORE,
    )

"""`POST /v1/conversions`: business systems report outcomes (payments, enrolments, orders) for attribution.

A conversion names its own app, which must be the caller's. A link token is verified here, with the
link secret only the API and the worker hold, and published as the message id it names: the topic never
carries a token, and a forged or altered one is refused (422) instead of steering the credit.
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, status
from pydantic import BaseModel

from api.deps import ApiDeps
from api.problems import TOO_LARGE, Problem, invalid
from channels.links import LinkRejected, LinkSigner
from records.conversions import Conversion
from settings.permissions import Principal

MAX_BATCH = 500
CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future `occurred_at` may be: the reporting system's clock may run a little ahead."""


class ConversionsAccepted(BaseModel):
    """Every conversion is on the conversions topic; the analytics service attributes it from there."""

    accepted: Literal[True] = True
    app: str
    count: int
    conversion_ids: list[str]


def conversions_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["conversions"])
    caller = Depends(deps.access.requires("conversions:report"))

    @router.post(
        "/conversions",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=ConversionsAccepted,
        summary="Report one conversion",
        description=_DESCRIPTION,
        responses=_ERRORS,
    )
    async def report_conversion(
        conversion: Conversion, principal: Annotated[Principal, caller]
    ) -> ConversionsAccepted:
        """Check and publish the conversion keyed by its user; answers once the broker acknowledged."""
        [checked] = _checked(deps.links, [conversion], principal, indexed=False)
        await deps.publisher.publish_conversion(checked)
        return ConversionsAccepted(app=checked.app, count=1, conversion_ids=[checked.conversion_id])

    @router.post(
        "/conversions:batch",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=ConversionsAccepted,
        summary=f"Report up to {MAX_BATCH} conversions",
        description=_DESCRIPTION + " All or nothing as far as the answer goes: on any failure resubmit the "
        "whole batch.",
        responses=_ERRORS,
    )
    async def report_conversions(
        conversions: Annotated[list[Conversion], Body(min_length=1, max_length=MAX_BATCH)],
        principal: Annotated[Principal, caller],
    ) -> ConversionsAccepted:
        checked = _checked(deps.links, conversions, principal, indexed=True)
        await asyncio.gather(*(deps.publisher.publish_conversion(c) for c in checked))
        return ConversionsAccepted(
            app=checked[0].app, count=len(checked), conversion_ids=[c.conversion_id for c in checked]
        )

    return router


def _checked(
    links: LinkSigner | None, conversions: Sequence[Conversion], principal: Principal, *, indexed: bool
) -> list[Conversion]:
    """The conversions to publish, tokens resolved to message ids; else 403 or 422 naming the field."""
    latest = datetime.now(UTC) + CLOCK_SKEW
    checked: list[Conversion] = []
    for index, conversion in enumerate(conversions):
        where: tuple[str | int, ...] = ("body", index) if indexed else ("body",)
        prefix = f"conversions[{index}]: " if indexed else ""
        if principal.kind == "app" and conversion.app != principal.name:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"{prefix}the key belongs to app {principal.name!r}, "
                f"the conversion names app {conversion.app!r}",
            )
        if not principal.allows("conversions:report", conversion.app):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"{prefix}{principal.name!r} lacks permission conversions:report on app {conversion.app!r}",
            )
        if conversion.app != conversions[0].app:
            raise invalid((*where, "app"), f"one batch is for one app; conversions[0] is for "
                          f"{conversions[0].app!r}", "mixed_apps")
        if conversion.occurred_at > latest:
            raise invalid((*where, "occurred_at"), "is in the future: a conversion reports what happened",
                          "future_time")
        checked.append(_resolved(links, conversion, where))
    return checked


def _resolved(links: LinkSigner | None, conversion: Conversion, where: tuple[str | int, ...]) -> Conversion:
    if conversion.token is None:
        return conversion
    loc = (*where, "token")
    if links is None:
        raise invalid(loc, "link tokens cannot be verified here (no link secret configured); "
                      "send message_id instead", "token_unverifiable")
    try:
        claims = links.verify("click", conversion.token)
    except LinkRejected as exc:
        raise invalid(loc, f"not a valid click-link token: {exc}", "invalid_token") from None
    if claims.user_id != conversion.user_id:
        # The user is not echoed back in full: the token is the caller's, the claim inside it is ours.
        raise invalid(loc, "the link was sent to another user than user_id", "token_user_mismatch")
    return conversion.model_copy(update={"message_id": claims.message_id, "token": None})


_DESCRIPTION = (
    "A business outcome (payment, enrolment, order...) for one person, identified per app by "
    "`conversion_id` (reporting it again is safe: it is counted once). The analytics service credits "
    "it to the message that led to it: the one named by `message_id` or by the click-link `token` that "
    "brought the person, when it reached them, else per the attribution rules of its `type`. 422 names "
    "the field (`loc`): against the schema, an `occurred_at` in the future, a token that is not a valid "
    "click-link token of this user."
)
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": Problem, "description": "Missing or invalid API key"},
    403: {"model": Problem, "description": "`app` is not the app the key belongs to"},
    **TOO_LARGE,
    503: {"model": Problem, "description": "The broker did not acknowledge; nothing was accepted, retry"},
}

"""Consent for operators and the campus portal: unsubscriptions, the blacklist, a user's standing.

Authorised like the inbox: any valid app key (the portal acts for its signed-in user); each change
records which app made it. Addresses given with their channel are cleaned first, so the blacklist
holds the same form sends are checked against (E.164 phones, normalised emails).
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import re
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api.auth import authenticated_app
from api.deps import ApiDeps
from channels.addresses import AddressRefused, clean
from records.vocabulary import Category, ChannelName
from state.apps import App
from state.consent import BlacklistEntry, Consent, ConsentStore, Unsubscription

_ID = r"^[A-Za-z0-9_.:\-]{1,128}$"
_USER = re.compile(_ID)
UserId = Annotated[str, Path(pattern=_ID, description="The unified user id")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UnsubscribeRequest(_Body):
    """Omit `category` or `channel` to mean every one."""

    user_id: str = Field(pattern=_ID)
    category: Category | None = None
    channel: ChannelName | None = None
    source: str = Field("", max_length=200, description="e.g. 'preference centre'; defaults to the app")


class BlacklistRequest(_Body):
    """A user id, or an address with the channel it belongs to (then cleaned before it is listed)."""

    subject: str = Field(min_length=1, max_length=512)
    reason: str = Field(min_length=1, max_length=500)
    channel: ChannelName | None = None


class Resubscribed(BaseModel):
    removed: int
    """Refusals dropped; a broader one (e.g. every category) still stands and shows in GET."""


def consent_router(deps: ApiDeps, consent: ConsentStore) -> APIRouter:
    router = APIRouter(
        prefix="/v1/consent",
        tags=["consent"],
        responses={401: {"description": "Missing or invalid API key"}},
    )
    Caller = Annotated[App, Depends(authenticated_app(deps.apps))]

    @router.post("/unsubscribes", status_code=status.HTTP_201_CREATED, response_model=Unsubscription)
    async def unsubscribe(request: UnsubscribeRequest, app: Caller) -> Unsubscription:
        return await consent.unsubscribe(
            request.user_id, category=request.category, channel=request.channel,
            source=request.source or f"app {app.name}",
        )

    @router.delete("/unsubscribes", response_model=Resubscribed)
    async def resubscribe(
        app: Caller,
        user_id: Annotated[str, Query(pattern=_ID)],
        category: Category | None = None,
        channel: ChannelName | None = None,
    ) -> Resubscribed:
        """Drop the refusals this scope covers (itself and narrower ones)."""
        return Resubscribed(removed=await consent.resubscribe(user_id, category=category, channel=channel))

    @router.post("/blacklist", status_code=status.HTTP_201_CREATED, response_model=BlacklistEntry)
    async def blacklist(request: BlacklistRequest, app: Caller) -> BlacklistEntry:
        subject = _subject(request.subject, request.channel)
        return await consent.blacklist(subject, f"{request.reason} (by app {app.name})")

    @router.delete(
        "/blacklist", status_code=status.HTTP_204_NO_CONTENT,
        responses={404: {"description": "The subject is not blacklisted"}},
    )
    async def unblacklist(
        app: Caller,
        subject: Annotated[str, Query(min_length=1, max_length=512)],
        channel: ChannelName | None = None,
    ) -> None:
        cleaned = _subject(subject, channel)
        if not await consent.unblacklist(cleaned):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{cleaned!r} is not blacklisted")

    @router.get("/{user_id}", response_model=Consent)
    async def standing(user_id: UserId, app: Caller) -> Consent:
        """The user's unsubscriptions (broadest first) and blacklist entry."""
        return await consent.consent(user_id)

    return router


def _subject(subject: str, channel: str | None) -> str:
    if channel is None:
        if not _USER.match(subject):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"subject {subject[:64]!r} is not a user id; give the channel of an address",
            )
        return subject
    cleaned = clean(channel, subject)
    if isinstance(cleaned, AddressRefused):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"subject: {cleaned.reason}")
    return cleaned.value

"""Consent for operators and the campus portal: unsubscriptions, the blacklist, a user's standing.

Authorised like the inbox: any valid app key (the portal acts for its signed-in user); each change
records which app made it. Addresses given with their channel are cleaned first, so the blacklist
holds the same form sends are checked against (E.164 phones, normalised emails).
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import re
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from api.auth import authenticated_app
from api.deps import ApiDeps
from api.problems import TOO_LARGE, Problem, invalid
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
    """A user id, or an address with the channel it belongs to (then cleaned before it is listed; an
    address not valid for its channel is refused, 422)."""

    # The schema states the rule the handler keeps: without a channel the subject is a user id.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["channel"], "properties": {"channel": {"type": "string"}}},
                {"properties": {"subject": {"pattern": _ID}}},
            ]
        }
    )

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
        responses={401: {"model": Problem, "description": "Missing or invalid API key"}},
    )
    Caller = Annotated[App, Depends(authenticated_app(deps.apps))]

    @router.post(
        "/unsubscribes",
        status_code=status.HTTP_201_CREATED,
        response_model=Unsubscription,
        responses=TOO_LARGE,
    )
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

    @router.post(
        "/blacklist", status_code=status.HTTP_201_CREATED, response_model=BlacklistEntry, responses=TOO_LARGE
    )
    async def blacklist(request: BlacklistRequest, app: Caller) -> BlacklistEntry:
        subject = _subject(request.subject, request.channel, "body")
        return await consent.blacklist(subject, f"{request.reason} (by app {app.name})")

    @router.delete(
        "/blacklist", status_code=status.HTTP_204_NO_CONTENT,
        responses={
            404: {"model": Problem, "description": "The subject is not blacklisted (or cannot be: not a "
                  "user id, or not a valid address for the channel)"},
        },
    )
    async def unblacklist(
        app: Caller,
        subject: Annotated[str, Query(min_length=1, max_length=512)],
        channel: ChannelName | None = None,
    ) -> None:
        try:
            cleaned = _subject(subject, channel, "query")
        except RequestValidationError as exc:
            # What cannot be listed is not listed: nothing to remove.
            reason = exc.errors()[0]["msg"]
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"not blacklisted: {reason}") from None
        if not await consent.unblacklist(cleaned):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{cleaned!r} is not blacklisted")

    @router.get("/{user_id}", response_model=Consent)
    async def standing(user_id: UserId, app: Caller) -> Consent:
        """The user's unsubscriptions (broadest first) and blacklist entry."""
        return await consent.consent(user_id)

    return router


def _subject(subject: str, channel: str | None, where: str) -> str:
    """The subject as consent is kept; `where` names the part of the request it came from."""
    if channel is None:
        if not _USER.match(subject):
            raise invalid(
                (where, "subject"), f"{subject[:64]!r} is not a user id; give the channel of an address"
            )
        return subject
    cleaned = clean(channel, subject)
    if isinstance(cleaned, AddressRefused):
        raise invalid((where, "subject"), cleaned.reason, "invalid_address")
    return cleaned.value

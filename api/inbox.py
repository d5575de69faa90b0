"""The in-app inbox: its user lists, marks read or clicked (emitting receipts) and deletes, with an
end-user token their app minted (`POST /v1/user-tokens`); an operator with `people:read` over every app
may list it, read-only (operators never make `read` receipts); an app key is refused."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from pydantic import BaseModel

from api.deps import ApiDeps
from api.problems import Problem
from records.topics import Receipt
from settings.permissions import Principal
from state.inbox import InboxMessage

_ID = r"^[A-Za-z0-9_.:\-]{1,128}$"
UserId = Annotated[str, Path(pattern=_ID, description="The unified user id")]
MessageId = Annotated[str, Path(pattern=_ID)]
# Far past any inbox (each keeps at most `inbox_max_per_user`), and small enough that Redis never sees
# an out-of-range index: a huge offset is the client's mistake (422), not an outage.
MAX_OFFSET = 1_000_000


class InboxPage(BaseModel):
    """One page of a user's inbox, newest first, with the counts a badge needs."""

    unread: int
    total: int
    messages: list[InboxMessage]


class Unread(BaseModel):
    unread: int


class Marked(BaseModel):
    """The message after marking; `first` says whether this call emitted the receipt."""

    status: Literal["read", "clicked"]
    first: bool
    message: InboxMessage


def inbox_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter(
        prefix="/v1/inbox",
        tags=["inbox"],
        responses={
            401: {"model": Problem, "description": "Missing or invalid credentials"},
            403: {"model": Problem, "description": "Another user's inbox, or an app key"},
        },
    )
    inbox, access = deps.inbox, deps.access
    # Reading: the user, or an operator with people:read; changing: the user only.
    Reader = Annotated[Principal, Depends(access.requires("inbox:own", "people:read"))]
    Owner = Annotated[Principal, Depends(access.requires("inbox:own"))]

    @router.get("/{user_id}", response_model=InboxPage, summary="List a user's inbox")
    async def list_inbox(
        user_id: UserId,
        principal: Reader,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> InboxPage:
        access.authorize_user(principal, user_id, "people:read")
        messages = await inbox.list(user_id, limit=limit, offset=offset)
        return InboxPage(
            unread=await inbox.unread_count(user_id), total=await inbox.total(user_id), messages=messages
        )

    @router.get("/{user_id}/unread", response_model=Unread, summary="A user's unread count (for a badge)")
    async def unread(user_id: UserId, principal: Reader) -> Unread:
        """One Redis read: cheap enough for a portal to poll."""
        access.authorize_user(principal, user_id, "people:read")
        return Unread(unread=await inbox.unread_count(user_id))

    @router.post("/{user_id}/{message_id}/read", response_model=Marked, responses=_NOT_FOUND)
    async def mark_read(user_id: UserId, message_id: MessageId, principal: Owner) -> Marked:
        """Mark read; the first read publishes a `read` receipt."""
        access.authorize_user(principal, user_id, "inbox:own")
        message, first = await inbox.mark_read(user_id, message_id)
        return await _receipted("read", user_id, message_id, message, first)

    @router.post("/{user_id}/{message_id}/click", response_model=Marked, responses=_NOT_FOUND)
    async def mark_clicked(user_id: UserId, message_id: MessageId, principal: Owner) -> Marked:
        """Mark clicked (and read); the first click publishes a `clicked` receipt."""
        access.authorize_user(principal, user_id, "inbox:own")
        message, first = await inbox.mark_clicked(user_id, message_id)
        return await _receipted("clicked", user_id, message_id, message, first)

    @router.delete(
        "/{user_id}/{message_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_NOT_FOUND
    )
    async def delete_message(user_id: UserId, message_id: MessageId, principal: Owner) -> Response:
        access.authorize_user(principal, user_id, "inbox:own")
        if not await inbox.delete(user_id, message_id):
            raise _not_found(user_id, message_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    async def _receipted(
        kind: Literal["read", "clicked"], user_id: str, message_id: str, message: InboxMessage | None,
        first: bool,
    ) -> Marked:
        if message is None:
            raise _not_found(user_id, message_id)
        if first:
            await deps.publisher.publish_receipt(receipt_for(message, user_id, kind))
        return Marked(status=kind, first=first, message=message)

    return router


def receipt_for(message: InboxMessage, user_id: str, status: Literal["read", "clicked"]) -> Receipt:
    """The receipt of an inbox interaction, naming the message the way the sender did."""
    return Receipt(
        message_id=message.message_id,
        event_id=message.event_id,
        app=message.app,
        user_id=user_id,
        channel="inbox",
        provider="inbox",
        status=status,
        rule_id=message.rule_id,
        rule_version=message.rule_version,
        template=message.template,
        campaign=message.campaign,
    )


def _not_found(user_id: str, message_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no message {message_id!r} in the inbox of {user_id!r}")


_NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": Problem, "description": "No such message in this inbox"}
}

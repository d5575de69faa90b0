"""A person's consent: unsubscriptions, opt-ins, their standing; and the blacklist.

Who may: an end user, with a token their app minted (`POST /v1/user-tokens`), reads and changes their
own consent only; an operator reads anyone's with `people:read` and changes it with `people:manage`,
both over every app (a person is no one app's), and every change an operator makes is audited with the
standing before and after. The blacklist is operators' only (`people:manage`). An app key is refused
(403): an app acts for its users through their tokens, so it can no longer unsubscribe, opt in or read
anyone it likes. Addresses given with their channel are cleaned first, so the blacklist holds the form
sends are checked against (E.164 phones, normalised emails). The one-click unsubscribe link
(`api/links.py`) is its own capability and needs none of this.
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import re
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from api.access import audit_record
from api.deps import ApiDeps
from api.problems import TOO_LARGE, Problem, invalid
from channels.addresses import AddressRefused, clean
from records.vocabulary import Category, ChannelName
from settings.permissions import Principal
from state.consent import BlacklistEntry, Consent, ConsentStore, OptIn, Unsubscription

_ID = r"^[A-Za-z0-9_.:\-]{1,128}$"
_USER = re.compile(_ID)
UserId = Annotated[str, Path(pattern=_ID, description="The unified user id")]
REFUSED: dict[int | str, dict[str, object]] = {
    401: {"model": Problem, "description": "Missing or invalid credentials"},
    403: {"model": Problem, "description": "An app key, another user's token, or an operator without "
          "the permission over every app"},
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UnsubscribeRequest(_Body):
    """Omit `category` or `channel` to mean every one."""

    user_id: str = Field(pattern=_ID)
    category: Category | None = None
    channel: ChannelName | None = None
    source: str = Field("", max_length=200, description="e.g. 'preference centre'; defaults to the caller")


class OptInRequest(_Body):
    """An opt-in to one category, on one channel or (omitted) every channel, with where it was given."""

    user_id: str = Field(pattern=_ID)
    category: Category
    channel: ChannelName | None = None
    source: str = Field(
        "", max_length=200, description="where it was given, e.g. 'signup form v3'; defaults to the caller"
    )
    evidence: str = Field("", max_length=2000, description="what proves it, e.g. the form's wording and IP")


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


class Withdrawn(BaseModel):
    withdrawn: list[OptIn]
    """The opt-ins withdrawn; a broader one (the category on every channel) still stands."""


def consent_router(deps: ApiDeps, consent: ConsentStore) -> APIRouter:
    router = APIRouter(prefix="/v1/consent", tags=["consent"], responses=REFUSED)
    access = deps.access
    Reader = Annotated[Principal, Depends(access.requires("consent:own", "people:read"))]
    Changer = Annotated[Principal, Depends(access.requires("consent:own", "people:manage"))]
    Operator = Annotated[Principal, Depends(access.requires("people:manage"))]

    async def audit(
        request: Request, principal: Principal, action: str, user_id: str, before: JsonValue
    ) -> None:
        after = await _standing(consent, principal, user_id)
        await audit_change(deps, request, principal, action, ("user", user_id), before, after)

    @router.post(
        "/unsubscribes", status_code=status.HTTP_201_CREATED, response_model=Unsubscription,
        responses=TOO_LARGE,
    )
    async def unsubscribe(body: UnsubscribeRequest, principal: Changer, request: Request) -> Unsubscription:
        return await unsubscribe_person(deps, consent, request, principal, body)

    @router.delete("/unsubscribes", response_model=Resubscribed)
    async def resubscribe(
        principal: Changer,
        request: Request,
        user_id: Annotated[str, Query(pattern=_ID)],
        category: Category | None = None,
        channel: ChannelName | None = None,
    ) -> Resubscribed:
        """Drop the refusals this scope covers (itself and narrower ones)."""
        removed = await resubscribe_person(deps, consent, request, principal, user_id, category, channel)
        return Resubscribed(removed=removed)

    @router.post("/opt-ins", status_code=status.HTTP_201_CREATED, response_model=OptIn, responses=TOO_LARGE)
    async def opt_in(body: OptInRequest, principal: Changer, request: Request) -> OptIn:
        """Record an opt-in (kept with its source, time and evidence, also after it is withdrawn)."""
        access.authorize_user(principal, body.user_id, "people:manage")
        before = await _standing(consent, principal, body.user_id)
        entry = await consent.opt_in(
            body.user_id, category=body.category, channel=body.channel,
            source=_source(principal, body.source), evidence=body.evidence,
        )
        await audit(request, principal, "consent.opt_in", body.user_id, before)
        return entry

    @router.delete("/opt-ins", response_model=Withdrawn)
    async def withdraw(
        principal: Changer,
        request: Request,
        user_id: Annotated[str, Query(pattern=_ID)],
        category: Category,
        channel: ChannelName | None = None,
    ) -> Withdrawn:
        """Withdraw the opt-ins this scope covers: the category on every channel, or on one channel."""
        access.authorize_user(principal, user_id, "people:manage")
        before = await _standing(consent, principal, user_id)
        by = _source(principal, "")
        withdrawn = await consent.withdraw(user_id, category=category, channel=channel, by=by)
        await audit(request, principal, "consent.withdraw", user_id, before)
        return Withdrawn(withdrawn=withdrawn)

    @router.post(
        "/blacklist", status_code=status.HTTP_201_CREATED, response_model=BlacklistEntry, responses=TOO_LARGE
    )
    async def blacklist(body: BlacklistRequest, principal: Operator, request: Request) -> BlacklistEntry:
        access.authorize(principal, "people:manage", "*")
        subject = _subject(body.subject, body.channel, "body")
        before = await consent.blacklisted(subject)
        entry = await consent.blacklist(subject, f"{body.reason} (by {_source(principal, '')})")
        await audit_change(
            deps, request, principal, "consent.blacklist", ("subject", subject),
            dump_entry(before), dump_entry(entry)
        )
        return entry

    @router.delete(
        "/blacklist", status_code=status.HTTP_204_NO_CONTENT,
        responses={
            404: {"model": Problem, "description": "The subject is not blacklisted (or cannot be: not a "
                  "user id, or not a valid address for the channel)"},
        },
    )
    async def unblacklist(
        principal: Operator,
        request: Request,
        subject: Annotated[str, Query(min_length=1, max_length=512)],
        channel: ChannelName | None = None,
    ) -> None:
        access.authorize(principal, "people:manage", "*")
        cleaned = listed_subject(subject, channel, "blacklisted")
        before = await consent.blacklisted(cleaned)
        if not await consent.unblacklist(cleaned):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{cleaned!r} is not blacklisted")
        await audit_change(
            deps, request, principal, "consent.unblacklist", ("subject", cleaned),
            dump_entry(before), None
        )

    @router.get("/{user_id}", response_model=Consent)
    async def standing(user_id: UserId, principal: Reader) -> Consent:
        """The user's unsubscriptions (broadest first), opt-ins (standing, and every one ever given, with
        when it was withdrawn), blacklist and whitelist entries."""
        access.authorize_user(principal, user_id, "people:read")
        return await consent.consent(user_id)

    return router


async def unsubscribe_person(deps: ApiDeps, consent: ConsentStore, request: Request, principal: Principal,
                             body: UnsubscribeRequest) -> Unsubscription:
    """Record the refusal (checked, audited with the standing before and after); the console calls it too."""
    deps.access.authorize_user(principal, body.user_id, "people:manage")
    before = await _standing(consent, principal, body.user_id)
    entry = await consent.unsubscribe(
        body.user_id, category=body.category, channel=body.channel, source=_source(principal, body.source)
    )
    after = await _standing(consent, principal, body.user_id)
    await audit_change(deps, request, principal, "consent.unsubscribe", ("user", body.user_id), before, after)
    return entry


async def resubscribe_person(deps: ApiDeps, consent: ConsentStore, request: Request, principal: Principal,
                             user_id: str, category: str | None, channel: str | None) -> int:
    """Drop the refusals the scope covers (checked, audited); how many were dropped."""
    deps.access.authorize_user(principal, user_id, "people:manage")
    before = await _standing(consent, principal, user_id)
    removed = await consent.resubscribe(user_id, category=category, channel=channel)
    after = await _standing(consent, principal, user_id)
    await audit_change(deps, request, principal, "consent.resubscribe", ("user", user_id), before, after)
    return removed


async def audit_change(
    deps: ApiDeps,
    request: Request,
    principal: Principal,
    action: str,
    target: tuple[str, str],
    before: JsonValue,
    after: JsonValue,
    app: str = "",
) -> None:
    """Publish the audit record of an operator's change; an end user's own changes are their consent,
    kept with its source, not an administrative action."""
    if principal.kind != "operator":
        return
    await deps.publisher.publish_audit(
        audit_record(
            request, principal, action, target_kind=target[0], target=target[1], app=app, before=before,
            after=after,
        )
    )


async def _standing(consent: ConsentStore, principal: Principal, user_id: str) -> JsonValue:
    """The standing an audit record shows before and after (read only for operators' changes)."""
    if principal.kind != "operator":
        return None
    return (await consent.consent(user_id)).model_dump(mode="json")


def _source(principal: Principal, given: str) -> str:
    """Where a change came from: an operator's name always shows; else the source given, or the app."""
    if principal.kind == "operator":
        return f"operator {principal.name}" + (f" ({given})" if given else "")
    if given:
        return given
    app = principal.name.partition("/")[0] if principal.kind == "user" else principal.name
    return f"user via app {app}"


def dump_entry(entry: BaseModel | None) -> JsonValue:
    return None if entry is None else entry.model_dump(mode="json")


def listed_subject(subject: str, channel: str | None, listed: str) -> str:
    """A subject of a DELETE from a list, as the list keeps it: what cannot be listed is not (404)."""
    try:
        return _subject(subject, channel, "query")
    except RequestValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"not {listed}: {reason}") from None


def clean_subject(subject: str, channel: str | None) -> str:
    """A subject of a body, as the lists keep it: a user id, or an address cleaned for its channel (422)."""
    return _subject(subject, channel, "body")


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

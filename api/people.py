"""People for operators: create, read, update (partially), delete and list the persons of the user
directory with their tags, attributes and addresses (several per channel, each cleaned as at send).
Reading takes `people:read` over every app (`*`), changing `people:write` (global): a person is
not one app's; every
change is an audit record (`person.create|update|remove`) with before and after, addresses shown only
by their pseudo ids (`addr:…`) so the audit log holds no address. The CLI (`switchboard people
add|show|update|remove|addresses|list`, api/people_cli.py) runs the same functions."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.access import audit_record
from api.deps import ApiDeps
from api.problems import Problem, invalid
from channels.addresses import AddressRefused, clean
from records.topics import address_user_id
from records.vocabulary import ChannelName, Name
from settings.errors import SwitchboardError
from settings.permissions import ALL_APPS, Principal
from state.users import Address, AddressChoice, Attribute, AttributeName, User, UserDirectory

_ID = r"^[A-Za-z0-9_.:\-]{1,128}$"
_PREFIX = r"^[A-Za-z0-9_.:\-]{0,128}$"
MAX_PAGE = 500


class AddressIn(BaseModel):
    """An address as an operator gives it; cleaned (E.164, lower-cased domain...) before it is kept."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field(min_length=1, max_length=512, examples=["fcm:dF3x...", "li.lei@uni.example"])
    label: str = Field("", max_length=64, examples=["iPhone", "work"])
    primary: bool = False
    last_active: datetime | None = Field(None, description="When the device or mailbox was last used; "
                                         "a new address without one is taken as active now")


Addresses = dict[ChannelName, list[AddressIn | Annotated[str, Field(min_length=1, max_length=512)]]]


class PersonIn(BaseModel):
    """A person to create. An address may be a bare string (label empty, not primary)."""

    model_config = ConfigDict(extra="forbid")

    user_id: Name
    name: str = Field("", max_length=200)
    timezone: str = "Asia/Shanghai"
    locale: str = Field("zh-CN", max_length=35)
    tags: list[Name] = Field(default_factory=list, max_length=200)
    channel_pref: ChannelName | None = None
    attributes: dict[AttributeName, Attribute] = Field(default_factory=dict, max_length=200)
    addresses: Addresses = Field(default_factory=dict)
    address_choice: dict[ChannelName, AddressChoice] = Field(
        default_factory=dict, description="Per channel: latest (default for push), primary (default "
        "otherwise) or all (every address, e.g. every device gets the push)",
    )


class PersonPatch(BaseModel):
    """A partial change: only the fields given change. `addresses` replaces the addresses of the
    channels it names (an empty list removes the channel); `attributes` are merged, a null removes one;
    `address_choice` is merged, a null goes back to the channel's default."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    timezone: str | None = None
    locale: str | None = Field(None, max_length=35)
    tags: list[Name] | None = Field(None, max_length=200)
    channel_pref: ChannelName | None = None
    attributes: dict[AttributeName, Attribute | None] | None = Field(None, max_length=200)
    addresses: Addresses | None = None
    address_choice: dict[ChannelName, AddressChoice | None] | None = None


class PersonPage(BaseModel):
    people: list[dict[str, Any]]
    next: str | None = Field(description="The cursor of the next page (`after`); null at the end")


class PersonError(SwitchboardError, ValueError):
    """A person's data is refused; `loc` names the field (`addresses`, `push`, 1) for the 422."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(f"{_dotted(loc)}: {message}")
        self.loc = loc
        self.message = message


def cleaned_addresses(user_id: str, given: Addresses, held: User | None, now: datetime) -> dict[str, Any]:
    """The addresses as they will be kept: cleaned as at send, bare strings made objects, a new one
    without `last_active` taken as active `now` (so `latest` moves to the device just added)."""
    known = {(c, a.address): a for c, items in (held.addresses.items() if held else ()) for a in items}
    result: dict[str, Any] = {}
    for channel, items in given.items():
        kept: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            entry = AddressIn(address=item) if isinstance(item, str) else item
            value = _clean(user_id, channel, entry.address, index)
            previous = known.get((channel, value))
            last_active = entry.last_active or (previous.last_active if previous else now)
            kept.append({**entry.model_dump(), "address": value, "last_active": last_active})
        result[channel] = kept
    return result


def _clean(user_id: str, channel: str, address: str, index: int) -> str:
    if channel == "inbox":
        # The inbox is reached by the user id itself; another id would be someone else's inbox.
        if address.strip() != user_id:
            raise PersonError(("addresses", channel, index), f"the inbox address is the user id {user_id!r}")
        return user_id
    checked = clean(channel, address)
    if isinstance(checked, AddressRefused):
        raise PersonError(("addresses", channel, index), checked.reason)
    return checked.value


def new_person(body: PersonIn, now: datetime) -> User:
    """The User `body` describes, its addresses cleaned; PersonError names what is wrong."""
    fields = body.model_dump(exclude={"addresses"})
    fields["addresses"] = cleaned_addresses(body.user_id, body.addresses, None, now)
    return _validated(fields)


def changed_person(user: User, patch: PersonPatch, now: datetime) -> User:
    """`user` with `patch` applied; PersonError names what is wrong."""
    fields = user.model_dump(exclude={"bindings"})
    given = patch.model_dump(exclude_unset=True, exclude={"addresses", "attributes", "address_choice"})
    fields.update(given)
    if patch.attributes is not None:
        merged = {**user.attributes, **patch.attributes}
        fields["attributes"] = {k: v for k, v in merged.items() if v is not None}
    if patch.address_choice is not None:
        choices = {**user.address_choice, **patch.address_choice}
        fields["address_choice"] = {k: v for k, v in choices.items() if v is not None}
    if patch.addresses is not None:
        replaced = cleaned_addresses(user.user_id, patch.addresses, user, now)
        addresses = {**fields["addresses"], **replaced}
        fields["addresses"] = {c: items for c, items in addresses.items() if items}
    return _validated(fields)


def _validated(fields: dict[str, Any]) -> User:
    try:
        return User.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        loc = tuple(error["loc"]) or ("body",)
        if loc == ("body",) and ":" in message:  # the model's own checks name the field in the text
            where, _, message = message.partition(": ")
            parts = where.replace("[", ".").replace("]", "").split(".")
            loc = tuple(int(part) if part.isdigit() else part for part in parts)
        raise PersonError(loc, message) from None


def described(user: User) -> dict[str, Any]:
    """The person as the API and CLI show them: the profile, and who each channel's message reaches."""
    shown = user.model_dump(mode="json")
    shown["recipients"] = {channel: list(user.recipients(channel)) for channel in user.addresses}
    return shown


def audited_view(user: User | None) -> dict[str, Any] | None:
    """The person for the audit log: everything but the addresses, which are shown by pseudo id."""
    if user is None:
        return None
    shown = user.model_dump(mode="json", exclude={"bindings"})
    shown["addresses"] = {
        channel: [
            {**a.model_dump(mode="json"), "address": address_user_id(channel, a.address)} for a in items
        ]
        for channel, items in user.addresses.items()
    }
    return shown


def people_router(deps: ApiDeps, people: UserDirectory) -> APIRouter:
    router = APIRouter(
        prefix="/v1/people",
        tags=["people"],
        responses={
            401: {"model": Problem, "description": "Missing or invalid credentials"},
            403: {"model": Problem, "description": "Lacks people:read or people:write"},
        },
    )
    Reader = Annotated[Principal, Depends(deps.access.requires("people:read"))]
    Writer = Annotated[Principal, Depends(deps.access.requires("people:write"))]
    UserId = Annotated[str, Path(pattern=_ID, description="The unified user id")]
    missing: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such person"}}

    @router.get("", response_model=PersonPage, summary="People in id order, a page at a time")
    async def list_people(
        principal: Reader,
        after: Annotated[str, Query(max_length=128, description="The last id of the previous page")] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        tag: Annotated[str | None, Query(pattern=_ID, description="Only people with this tag")] = None,
        prefix: Annotated[str, Query(pattern=_PREFIX, description="Only ids starting so")] = "",
    ) -> dict[str, Any]:
        deps.access.authorize(principal, "people:read", ALL_APPS)
        ids = await people.listing(after=after, limit=limit + 1, tag=tag, prefix=prefix)
        found = await people.get_many(ids[:limit])
        page = [described(found[i]) for i in ids[:limit] if i in found]
        return {"people": page, "next": ids[limit - 1] if len(ids) > limit else None}

    @router.post("", status_code=status.HTTP_201_CREATED, summary="Create a person",
                 responses={409: {"model": Problem, "description": "The user id is taken"}})
    async def create_person(request: Request, body: PersonIn, principal: Writer) -> dict[str, Any]:
        user = _or_422(lambda: new_person(body, datetime.now(UTC)))
        if await people.get(user.user_id) is not None:
            raise HTTPException(status.HTTP_409_CONFLICT, f"person {user.user_id!r} exists; PATCH it instead")
        await audit_person(deps, request, principal, "person.create", user.user_id, None, user)
        await people.upsert([user])
        return described(user)

    @router.get("/{user_id}", summary="One person", responses=missing)
    async def show_person(principal: Reader, user_id: UserId) -> dict[str, Any]:
        deps.access.authorize(principal, "people:read", ALL_APPS)
        return described(await _found(people, user_id))

    @router.get("/{user_id}/addresses", summary="A person's addresses, and which each channel uses",
                responses=missing)
    async def person_addresses(principal: Reader, user_id: UserId) -> list[dict[str, Any]]:
        deps.access.authorize(principal, "people:read", ALL_APPS)
        return address_rows(await _found(people, user_id))

    @router.patch("/{user_id}", summary="Change some of a person's fields", responses=missing)
    async def update_person(
        request: Request, body: PersonPatch, principal: Writer, user_id: UserId
    ) -> dict[str, Any]:
        before = await _found(people, user_id)
        after = _or_422(lambda: changed_person(before, body, datetime.now(UTC)))
        await audit_person(deps, request, principal, "person.update", user_id, before, after)
        await people.upsert([after])
        return described(after)

    @router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses=missing,
                   summary="Remove a person from the directory (not an erasure: see /erase)")
    async def remove_person(request: Request, principal: Writer, user_id: UserId) -> None:
        before = await _found(people, user_id)
        await audit_person(deps, request, principal, "person.remove", user_id, before, None)
        await people.remove(user_id)

    return router


def address_rows(user: User) -> list[dict[str, Any]]:
    """One row per address: channel, index, address, label, primary, last active, and whether the
    channel's choice sends to it."""
    rows = []
    for channel, items in user.addresses.items():
        used = set(user.recipients(channel))
        for index, item in enumerate(items):
            rows.append({"channel": channel, "index": index, **item.model_dump(mode="json"),
                         "choice": user.choice(channel), "used": item.address in used})
    return rows


def _or_422(build: Any) -> User:
    try:
        user: User = build()
    except PersonError as exc:
        raise invalid(("body", *exc.loc), exc.message) from None
    return user


async def _found(people: UserDirectory, user_id: str) -> User:
    user = await people.get(user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no person {user_id!r}")
    return user


async def audit_person(
    deps: ApiDeps, request: Request, principal: Principal, action: str, user_id: str,
    before: User | None, after: User | None,
) -> None:
    # Published before the change is made: a change the audit log cannot follow is not made (503).
    await deps.publisher.publish_audit(
        audit_record(request, principal, action, target_kind="person", target=user_id,
                     before=audited_view(before), after=audited_view(after))
    )


def _dotted(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


__all__ = ["Address", "PersonIn", "PersonPatch", "people_router"]

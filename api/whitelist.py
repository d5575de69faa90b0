"""The whitelist (白名单) and test mode, for operators.

The whitelist is a list of people and addresses across every app, so reading it needs `people:read` and
changing it `people:manage`, both over every app. Test mode is an app's: switching it needs
`people:manage` on that app, and the listing shows the apps the caller may read people of. Every change
is audited with before and after. Enforcement is in the consent check (`state.consent`).
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from api.consent import REFUSED, audit_change, clean_subject, dump_entry, listed_subject
from api.deps import ApiDeps
from api.problems import TOO_LARGE, Problem
from records.vocabulary import ChannelName
from settings.permissions import ALL_APPS, Principal
from state.whitelist import TestMode, Whitelist, WhitelistEntry

AppName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$", description="The upstream app")]


class WhitelistRequest(BaseModel):
    """A user id, or an address with the channel it belongs to (cleaned first, as for the blacklist)."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=512)
    reason: str = Field(min_length=1, max_length=500)
    channel: ChannelName | None = None


class TestModeRequest(BaseModel):
    __test__ = False  # not a pytest class, whatever its name
    model_config = ConfigDict(extra="forbid")

    test_mode: bool


class TestModes(BaseModel):
    """Which apps are in test mode."""

    __test__ = False
    everywhere: bool
    """Every app is (`SWITCHBOARD_TEST_MODE`), listed or not."""
    apps: list[TestMode]


class TestModeState(BaseModel):
    __test__ = False
    app: str
    test_mode: bool
    everywhere: bool
    """Test mode is on for every app (`SWITCHBOARD_TEST_MODE`), whatever this app's own switch says."""
    since: TestMode | None


def whitelist_router(deps: ApiDeps, whitelist: Whitelist, everywhere: bool) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["whitelist"], responses=REFUSED)
    access = deps.access
    Reader = Annotated[Principal, Depends(access.requires("people:read"))]
    Manager = Annotated[Principal, Depends(access.requires("people:manage"))]

    @router.get("/whitelist", response_model=list[WhitelistEntry])
    async def entries(principal: Reader) -> list[WhitelistEntry]:
        access.authorize(principal, "people:read", ALL_APPS)
        return await whitelist.entries()

    @router.post(
        "/whitelist", status_code=status.HTTP_201_CREATED, response_model=WhitelistEntry, responses=TOO_LARGE
    )
    async def add(body: WhitelistRequest, principal: Manager, request: Request) -> WhitelistEntry:
        access.authorize(principal, "people:manage", ALL_APPS)
        subject = clean_subject(body.subject, body.channel)
        before = await whitelist.get(subject)
        entry = await whitelist.add(subject, f"{body.reason} (by operator {principal.name})")
        await audit_change(
            deps, request, principal, "whitelist.add", ("subject", subject),
            dump_entry(before), dump_entry(entry)
        )
        return entry

    @router.delete(
        "/whitelist", status_code=status.HTTP_204_NO_CONTENT,
        responses={404: {"model": Problem, "description": "The subject is not whitelisted"}},
    )
    async def remove(
        principal: Manager,
        request: Request,
        subject: Annotated[str, Query(min_length=1, max_length=512)],
        channel: ChannelName | None = None,
    ) -> None:
        access.authorize(principal, "people:manage", ALL_APPS)
        cleaned = listed_subject(subject, channel, "whitelisted")
        before = await whitelist.get(cleaned)
        if not await whitelist.remove(cleaned):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{cleaned!r} is not whitelisted")
        await audit_change(
            deps, request, principal, "whitelist.remove", ("subject", cleaned),
            dump_entry(before), None
        )

    @router.get("/test-mode", response_model=TestModes)
    async def in_test_mode(principal: Reader) -> TestModes:
        """Whether every app is in test mode, and the apps switched into it that the caller may read
        people of."""
        readable = principal.apps_for("people:read")
        apps = [m for m in await whitelist.test_mode_apps() if ALL_APPS in readable or m.app in readable]
        return TestModes(everywhere=everywhere, apps=apps)

    @router.put("/test-mode/{app}", response_model=TestModeState, responses=TOO_LARGE)
    async def switch(
        app: AppName, body: TestModeRequest, principal: Manager, request: Request
    ) -> TestModeState:
        """Switch an app's test mode: while on, only whitelisted people receive its messages."""
        access.authorize(principal, "people:manage", app)
        before = await whitelist.test_mode(app)
        after = await whitelist.set_test_mode(app, body.test_mode, by=f"operator {principal.name}")
        await audit_change(
            deps, request, principal, "test_mode.set", ("app", app),
            dump_entry(before), dump_entry(after), app=app
        )
        on = after is not None or everywhere
        return TestModeState(app=app, test_mode=on, everywhere=everywhere, since=after)

    return router

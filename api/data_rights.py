"""Data rights over HTTP: `GET /v1/people/{user_id}/export` (`data_rights:export`) and
`POST /v1/people/{user_id}/erase` (`data_rights:erase`), both global permissions (an administrator's,
or a custom role's over every app), both audited (api/person_rights.py)."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from analytics.erasure import MAX_HISTORY
from api.analytics_reader import AnalyticsUnavailable
from api.deps import ApiDeps
from api.person_rights import HISTORY_LIMIT, Actor, DataRights
from api.problems import Problem
from records.erasure import ErasureMode
from settings.permissions import Principal

UserId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:\-]{1,128}$", description="The unified user id")]


class EraseRequest(BaseModel):
    """Why (kept in the audit log, the person's id and addresses blanked), and how: `anonymise` keeps
    every row under a pseudonym so counts stay right, `delete` removes the person's rows."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=500, examples=["PIPL art. 47 request, ticket 2026-118"])
    mode: ErasureMode = "anonymise"


class Erased(BaseModel):
    pseudonym: str
    request_id: str
    mode: ErasureMode
    removed: dict[str, int]
    """What Redis held, by store; empty on a second request (nothing was left)."""
    kept_refusals: int
    """Unsubscriptions and blacklist entries kept under the addresses' hashes."""
    unknown_keys: list[str]
    """Keys named by the person that no eraser knows (a store added later): left, to be looked at."""
    clickhouse: str


def data_rights_router(deps: ApiDeps, rights: DataRights) -> APIRouter:
    router = APIRouter(
        prefix="/v1/people",
        tags=["people"],
        responses={
            401: {"model": Problem, "description": "Missing or invalid credentials"},
            403: {"model": Problem, "description": "Lacks the data-rights permission"},
        },
    )
    Exporter = Annotated[Principal, Depends(deps.access.requires("data_rights:export"))]
    Eraser = Annotated[Principal, Depends(deps.access.requires("data_rights:erase"))]

    @router.get(
        "/{user_id}/export",
        summary="Everything held about one person, as one JSON document (switchboard.person/1)",
        responses={503: {"model": Problem, "description": "ClickHouse or the broker unavailable"}},
    )
    async def export(
        user_id: UserId,
        principal: Exporter,
        request: Request,
        history_limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = HISTORY_LIMIT,
        history_offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        try:
            return await rights.export(user_id, _actor(principal, request), history_limit, history_offset)
        except AnalyticsUnavailable:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "the message history (ClickHouse) cannot be read now, retry later: an export is whole "
                "or none",
                headers={"Retry-After": "5"},
            ) from None

    @router.post(
        "/{user_id}/erase",
        response_model=Erased,
        summary="Erase one person: Redis cleared, ClickHouse rows anonymised (or deleted)",
        responses={503: {"model": Problem, "description": "The broker or Redis unavailable; nothing lost"}},
    )
    async def erase(user_id: UserId, body: EraseRequest, principal: Eraser, request: Request) -> Erased:
        done = await rights.erase(user_id, _actor(principal, request), body.reason, body.mode)
        return Erased.model_validate(done)

    return router


def _actor(principal: Principal, request: Request) -> Actor:
    host = request.client.host if request.client is not None else ""
    return Actor(principal.name, principal.kind, host)

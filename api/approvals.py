"""Approvals over HTTP: what waits for me, a held message with its audience and a preview, approve or
reject it, and the approval policies. The rules themselves are in `api.approval_service`."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api import approval_service as service
from api.access import client_address
from api.approval_service import DECIDE, MANAGE, MAX_COMMENT, ApprovalRefused, Approvals
from api.deps import ApiDeps
from api.problems import Problem, invalid
from settings.permissions import Principal
from state.approval_policies import ApprovalPolicy
from state.approvals import ApprovalItem, Decision

_T = TypeVar("_T")
StateFilter = Literal["pending", "approved", "rejected", "expired", "all"]


class ApprovalView(BaseModel):
    """A held item as an approver sees it."""

    approval_id: str
    kind: str
    subject: str
    app: str
    policy: str
    state: str
    level: int = Field(description="The level that decides next, from 1 (levels + 1 once approved).")
    levels: list[str]
    waiting_for: str | None = Field(description="The role that decides next; null once decided.")
    submitted_by: str
    created_at: datetime
    expires_at: datetime
    audience: str
    audience_size: int
    decisions: list[Decision]
    reason: str

    @classmethod
    def of(cls, item: ApprovalItem) -> "ApprovalView":
        return cls(
            approval_id=item.approval_id, kind=item.kind, subject=item.subject, app=item.app,
            policy=item.policy, state=item.state, level=item.level + 1, levels=list(item.levels),
            waiting_for=item.role, submitted_by=item.submitted_by, created_at=item.created_at,
            expires_at=item.expires_at, audience=item.audience, audience_size=item.audience_size,
            decisions=list(item.decisions), reason=item.reason,
        )


class ApprovalDetail(ApprovalView):
    """One held item with what it holds: the event and its message rendered per channel."""

    event: dict[str, Any]
    preview: dict[str, dict[str, Any]]


class ApprovalList(BaseModel):
    items: list[ApprovalView]


class VerdictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=MAX_COMMENT)


class PolicyBody(BaseModel):
    """A policy's settings; its name is in the path."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    apps: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)
    campaign: bool = False
    audience_over: int | None = None
    match: Literal["any", "all"] = "any"
    levels: list[str]
    expires_after: str = "72h"
    enabled: bool = True


class PolicyList(BaseModel):
    policies: list[ApprovalPolicy]


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or invalid credentials"},
    403: {"model": Problem, "description": "The permission, the app or the level's role is not yours"},
    404: {"model": Problem, "description": "No such approval or policy"},
    409: {"model": Problem, "description": "Already decided or expired, or you submitted or already "
                                           "decided it: approvers are distinct"},
    422: {"description": "The body is invalid (the field is named)"},
}


def approvals_router(deps: ApiDeps, approvals: Approvals) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["approvals"])
    decider = Depends(deps.access.requires(DECIDE))
    manager = Depends(deps.access.requires(MANAGE))

    @router.get("/approvals", response_model=ApprovalList, summary="List held items", responses=_ERRORS)
    async def list_approvals(
        principal: Annotated[Principal, decider],
        state: StateFilter = "pending",
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> ApprovalList:
        """`pending`: what waits for you (your role at its current level, on an app you decide on, not
        submitted or decided by you). Other states: the items of the apps you decide on."""
        items = await service.listing(approvals, principal, None if state == "all" else state, limit)
        return ApprovalList(items=[ApprovalView.of(item) for item in items])

    @router.get("/approvals/{approval_id}", response_model=ApprovalDetail, summary="Show a held item",
                responses=_ERRORS)
    async def show_approval(approval_id: str, principal: Annotated[Principal, decider]) -> ApprovalDetail:
        item = await _answer(service.show(approvals, principal, approval_id))
        return ApprovalDetail(**ApprovalView.of(item).model_dump(), event=item.payload,
                              preview=service.preview(approvals, item))

    @router.post("/approvals/{approval_id}/approve", response_model=ApprovalView,
                 summary="Approve at your level", responses=_ERRORS)
    async def approve(
        approval_id: str, body: VerdictBody, request: Request, principal: Annotated[Principal, decider]
    ) -> ApprovalView:
        """Approved at the last level, the message is released into the flow (within a second or so)."""
        item = await _answer(service.decide(approvals, deps.publisher, principal, approval_id, "approve",
                                            body.comment, client_address(request)))
        return ApprovalView.of(item)

    @router.post("/approvals/{approval_id}/reject", response_model=ApprovalView, summary="Reject",
                 responses=_ERRORS)
    async def reject(
        approval_id: str, body: VerdictBody, request: Request, principal: Annotated[Principal, decider]
    ) -> ApprovalView:
        """The message is not sent; its `rejected` row carries your comment as the reason."""
        item = await _answer(service.decide(approvals, deps.publisher, principal, approval_id, "reject",
                                            body.comment, client_address(request)))
        return ApprovalView.of(item)

    @router.get("/approval-policies", response_model=PolicyList, summary="List approval policies",
                responses=_ERRORS)
    async def list_policies(principal: Annotated[Principal, manager]) -> PolicyList:
        return PolicyList(policies=await service.visible_policies(approvals, principal))

    @router.put("/approval-policies/{name}", response_model=ApprovalPolicy,
                summary="Create or replace a policy", responses=_ERRORS)
    async def put_policy(
        name: str, body: PolicyBody, request: Request, response: Response,
        principal: Annotated[Principal, manager],
    ) -> ApprovalPolicy:
        """Applies to events ingested from a few seconds later; held items keep their levels."""
        policy = _policy(name, body)
        previous = await _answer(service.put_policy(approvals, deps.publisher, principal, policy,
                                                    client_address(request)))
        response.status_code = status.HTTP_200_OK if previous is not None else status.HTTP_201_CREATED
        return policy

    @router.delete("/approval-policies/{name}", status_code=status.HTTP_204_NO_CONTENT,
                   summary="Remove a policy", responses=_ERRORS)
    async def remove_policy(name: str, request: Request, principal: Annotated[Principal, manager]) -> None:
        source = client_address(request)
        await _answer(service.remove_policy(approvals, deps.publisher, principal, name, source))

    return router


def _policy(name: str, body: PolicyBody) -> ApprovalPolicy:
    try:
        return ApprovalPolicy.model_validate({"name": name, **body.model_dump()})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ("path", "name") if error["loc"][:1] == ("name",) else ("body", *error["loc"])
        raise invalid(where, error["msg"]) from None


async def _answer(pending: Awaitable[_T]) -> _T:
    try:
        return await pending
    except ApprovalRefused as refused:
        raise HTTPException(refused.status, refused.detail) from None

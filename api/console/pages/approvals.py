"""Approvals (`approvals:decide`): what waits for me (my role at its current level, an app I decide on,
not submitted or decided by me), each with the preview the API's approval item shows, approve or reject
with a comment; refusals (409: the submitter, the same approver twice, already decided) are shown on the
page. Deciding goes through `api.approval_service.decide`, as `/v1/approvals` does, audited the same way.
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from collections.abc import Awaitable
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api import approval_service as service
from api.access import client_address
from api.approval_service import DECIDE, MAX_COMMENT, ApprovalRefused, Approvals
from api.console.context import ConsolePage
from api.console.render import render
from api.console.session import ConsoleForbidden, console_principal
from api.deps import ApiDeps
from settings.permissions import Principal
from state.approvals import ApprovalItem

_ID = r"^[A-Za-z0-9_.:\-]{1,160}$"
_SHOWN = 100


def approvals_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter(prefix="/approvals")
    Decider = Annotated[Principal, Depends(console_principal(DECIDE))]
    ApprovalId = Annotated[str, Path(pattern=_ID)]

    def approvals_of() -> Approvals:
        if deps.approvals is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "approvals are not configured")
        return deps.approvals

    def shown(item: ApprovalItem) -> dict[str, object]:
        return {"item": item, "preview": service.preview(approvals_of(), item)}

    async def page(request: Request, principal: Principal, message: str = "", decided: str = "",
                   status_code: int = 200) -> HTMLResponse:
        approvals = approvals_of()
        waiting = await service.listing(approvals, principal, "pending", _SHOWN)
        recent = [i for i in await service.listing(approvals, principal, None, 20) if i.state != "pending"]
        return render(request, "approvals/page.html", principal, status_code=status_code,
                      waiting=[shown(i) for i in waiting], recent=recent, message=message, decided=decided,
                      max_comment=MAX_COMMENT)

    @router.get("", response_class=HTMLResponse, include_in_schema=False)
    async def waiting(request: Request, principal: Decider, decided: str = "") -> HTMLResponse:
        return await page(request, principal, decided=decided[:200])

    @router.get("/{approval_id}", response_class=HTMLResponse, include_in_schema=False)
    async def one(request: Request, principal: Decider, approval_id: ApprovalId) -> HTMLResponse:
        item = await _answered(principal, service.show(approvals_of(), principal, approval_id))
        return render(request, "approvals/item.html", principal, entry=shown(item), event=item.payload,
                      may_decide=service.waits_for(principal, item), max_comment=MAX_COMMENT, message="")

    @router.post("/{approval_id}/{verdict}", response_class=HTMLResponse, include_in_schema=False)
    async def decide(
        request: Request, principal: Decider, approval_id: ApprovalId, verdict: str,
        comment: Annotated[str, Form(max_length=MAX_COMMENT * 4)] = "",
    ) -> Response:
        if verdict not in ("approve", "reject"):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no verdict {verdict!r}")
        try:
            item = await service.decide(approvals_of(), deps.publisher, principal, approval_id,
                                        "approve" if verdict == "approve" else "reject", comment.strip(),
                                        client_address(request))
        except ApprovalRefused as refused:
            if refused.status == status.HTTP_403_FORBIDDEN:
                found = await approvals_of().store.get(approval_id)
                raise ConsoleForbidden(principal, DECIDE, found.app if found else None) from None
            if refused.status == status.HTTP_404_NOT_FOUND:
                raise HTTPException(status.HTTP_404_NOT_FOUND, refused.detail) from None
            return await page(request, principal, refused.detail, status_code=refused.status)
        return RedirectResponse(f"/console/approvals?decided={item.approval_id}", status.HTTP_303_SEE_OTHER)

    return router


async def _answered(principal: Principal, pending: Awaitable[ApprovalItem]) -> ApprovalItem:
    try:
        return await pending
    except ApprovalRefused as refused:
        if refused.status == status.HTTP_403_FORBIDDEN:
            raise ConsoleForbidden(principal, DECIDE) from None
        raise HTTPException(refused.status, refused.detail) from None


PAGE = ConsolePage("approvals", "/console/approvals", DECIDE, approvals_router)

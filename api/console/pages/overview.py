"""Overview (`statistics:read`): reach, delivery and engagement by channel, open alerts, lag."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from api.console.context import ConsolePage
from api.console.render import render
from api.console.session import console_principal
from api.deps import ApiDeps
from settings.permissions import Principal

PERMISSION = "statistics:read"


def overview_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter()
    Readers = Annotated[Principal, Depends(console_principal(PERMISSION))]

    @router.get("/overview", response_class=HTMLResponse, include_in_schema=False)
    async def overview(request: Request, principal: Readers) -> HTMLResponse:
        return render(request, "overview/page.html", principal)

    return router


PAGE = ConsolePage("overview", "/console/overview", PERMISSION, overview_router)

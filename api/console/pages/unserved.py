"""A page whose part this API does not hold (no stored templates, no reports): its address still
asks for the page's permission, then answers 503 saying what is missing, as the API's routers do."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import Response

from api.console.session import console_principal
from settings.permissions import Principal


def unserved_router(prefix: str, permission: str, what: str) -> APIRouter:
    router = APIRouter(prefix=prefix, include_in_schema=False)
    Reader = Annotated[Principal, Depends(console_principal(permission))]

    @router.get("")
    @router.api_route("/{rest:path}", methods=["GET", "POST"])
    async def unserved(request: Request, principal: Reader) -> Response:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"{what} are not served by this API")

    return router

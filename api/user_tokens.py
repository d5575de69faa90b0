"""`POST /v1/user-tokens`: an app's backend mints a short-lived token for its signed-in user, who then
reaches their own inbox and consent with it (`Authorization: Bearer sbu_...`). Only an app key mints,
for its own app: operators act through their permissions, never as a person."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, ConfigDict, Field

from api.access import UserTokens
from api.deps import ApiDeps
from api.problems import Problem
from settings.permissions import Principal
from state.user_tokens import MAX_TTL_SECONDS


class UserTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=r"^[A-Za-z0-9_.:\-]{1,128}$", description="The unified user id")
    ttl_seconds: int = Field(3600, ge=60, le=MAX_TTL_SECONDS, description="At most a day")


class UserToken(BaseModel):
    token: str
    app: str
    user_id: str
    expires_at: int = Field(description="Unix time")


def user_tokens_router(deps: ApiDeps, tokens: UserTokens) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["inbox"])
    Minter = Annotated[Principal, Depends(deps.access.requires("user_tokens:issue"))]

    @router.post(
        "/user-tokens", status_code=status.HTTP_201_CREATED, response_model=UserToken,
        summary="Mint an end-user token for one of your app's users",
        responses={401: {"model": Problem, "description": "Missing or invalid API key"},
                   403: {"model": Problem, "description": "Not an app key"}},
    )
    async def mint(body: UserTokenRequest, principal: Minter) -> UserToken:
        token, expires_at = tokens.mint(principal.name, body.user_id, body.ttl_seconds)
        return UserToken(token=token, app=principal.name, user_id=body.user_id, expires_at=expires_at)

    return router

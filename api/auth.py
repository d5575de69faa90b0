"""Authenticating the calling app by its API key, from `Authorization: Bearer` or `X-Api-Key`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import HTTPException, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.deps import AppKeys
from state.apps import App

_bearer = HTTPBearer(auto_error=False, description="The app's API key: `Authorization: Bearer sbk_...`")
_header = APIKeyHeader(name="X-Api-Key", auto_error=False, description="The app's API key, alternatively")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def authenticated_app(keys: AppKeys) -> Callable[..., Awaitable[App]]:
    """A FastAPI dependency answering 401 unless the request carries a valid app key."""

    async def authenticated(
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        header: Annotated[str | None, Security(_header)],
    ) -> App:
        key = bearer.credentials if bearer is not None else header
        if not key:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing API key: send `Authorization: Bearer <key>` or `X-Api-Key: <key>`",
                headers=_CHALLENGE,
            )
        app = await keys.authenticate(key)
        if app is None:
            # The key is not echoed: a near-miss key is still a secret.
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers=_CHALLENGE)
        return app

    return authenticated

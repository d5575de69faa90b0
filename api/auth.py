"""Logging in and out (`/v1/sessions`): an operator's name and password for a console session."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from api.access import audit_record, client_address, too_many_failures
from api.deps import ApiDeps
from api.problems import Problem
from settings.permissions import Principal
from state.operators import SESSION_PREFIX, Operator, OperatorStore

_bearer = HTTPBearer(auto_error=False, description="The app's API key: `Authorization: Bearer sbk_...`")
_header = APIKeyHeader(name="X-Api-Key", auto_error=False, description="The app's API key, alternatively")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class Session(BaseModel):
    """A console session: send it as `Authorization: Bearer sbs_...`. It ends after `idle_seconds`
    without use, or `max_seconds` after login, or at logout."""

    token: str
    operator: str
    idle_seconds: int
    max_seconds: int


def sessions_router(deps: ApiDeps, operators: OperatorStore) -> APIRouter:
    """`POST /v1/sessions` (log in: name and password) and `DELETE /v1/sessions/current` (log out)."""
    router = APIRouter(prefix="/v1/sessions", tags=["operators"])
    access = deps.access

    @router.post("", status_code=status.HTTP_201_CREATED, response_model=Session, summary="Log in",
                 responses={401: {"model": Problem, "description": "Name or password not accepted"},
                            403: {"model": Problem, "description": "The operator is locked or disabled"},
                            429: {"model": Problem, "description": "Too many failures from this address"}})
    async def login(body: Login, request: Request) -> Session:
        token, operator = await log_in(deps, operators, request, body.name, body.password)
        return Session(token=token, operator=operator.name, idle_seconds=operators.session_idle_seconds,
                       max_seconds=operators.session_max_seconds)

    @router.delete("/current", status_code=status.HTTP_204_NO_CONTENT, summary="Log out",
                   responses={401: {"model": Problem, "description": "Missing or invalid credentials"},
                              400: {"model": Problem, "description": "Not a session"}})
    async def logout(
        request: Request,
        principal: Annotated[Principal, Depends(access.authenticated())],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> None:
        token = bearer.credentials if bearer is not None else ""
        if not token.startswith(SESSION_PREFIX):
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, "only a session logs out; revoke a personal token instead"
            )
        await operators.end_session(token)
        await deps.publisher.publish_audit(audit_record(
            request, principal, "operator.logout", target_kind="operator", target=principal.name
        ))

    return router


async def log_in(deps: ApiDeps, operators: OperatorStore, request: Request, name: str,
                 password: str) -> tuple[str, Operator]:
    """A new session for the operator with this name and password, audited; the API's `POST /v1/sessions`
    and the console's login both go through here, so both keep the same lockout and failure limits.
    Raises HTTPException: 401 name or password not accepted, 403 locked or disabled, 429 too many
    failures from this address."""
    source = client_address(request)
    failures = deps.access.failures

    async def refused(reason: str, source_wait: int) -> HTTPException:
        await deps.publisher.publish_audit(audit_record(
            request, name, "operator.login", target_kind="operator", target=name, outcome="denied",
            reason=reason,
        ))
        if source_wait:
            return too_many_failures(source_wait)
        # One answer for an unknown name, a wrong password and a lockout: none tells an attacker more.
        return HTTPException(status.HTTP_401_UNAUTHORIZED, "name or password not accepted (repeated failures "
                             "lock the account for a while)", headers=_CHALLENGE)

    if failures is not None:
        wait = await failures.source_wait(source)
        if wait:
            raise too_many_failures(wait)
        if await failures.operator_wait(name):
            raise await refused("locked out after failed logins", await failures.source_failed(source))
    operator = await operators.verify_password(name, password)
    if operator is None:
        wait = 0
        if failures is not None:
            wait = await failures.source_failed(source)
            await failures.operator_failed(name)
        raise await refused("wrong name or password", wait)
    if failures is not None:
        await failures.operator_succeeded(operator.name)
    if operator.state != "active":
        # The password was right: telling its owner why is no help to anyone else.
        await deps.publisher.publish_audit(audit_record(
            request, operator.name, "operator.login", target_kind="operator", target=operator.name,
            outcome="denied", reason=f"operator is {operator.state}",
        ))
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"operator {operator.name!r} is {operator.state}")
    token = await operators.start_session(operator.name)
    await deps.publisher.publish_audit(audit_record(
        request, operator.name, "operator.login", target_kind="operator", target=operator.name
    ))
    return token, operator

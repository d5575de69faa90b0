"""The named strategies (补发策略) of the loaded rule files, for the composer to offer by name.

Reading them takes `events:send` or `templates:read`: whoever composes or sends a message (an app's key
included) names a strategy in it, and template editors preview what a message will go through. The
strategies live in the rule files (git), so there is nothing to change here and nothing to audit.
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel

from api.deps import ApiDeps, LoadedRules
from api.problems import Problem
from rules.schema import NamedStrategy
from rules.strategies import strategy_dict
from settings.permissions import Principal


class StrategyStep(BaseModel):
    """One fallback step: after how long, on which condition, on which channels, with which template."""

    step: int
    after: str
    condition: str
    first_of: list[str]
    template: str | None


class StrategyView(BaseModel):
    """A named strategy: the first send's channels (each of `channels`, or the first of `first_of`)."""

    name: str
    description: str
    channels: list[str] | None
    first_of: list[str] | None
    steps: list[StrategyStep]
    origin: str


class StrategyList(BaseModel):
    """The strategies of the rules version the API has loaded."""

    rules_version: str
    strategies: list[StrategyView]


def strategy_view(named: NamedStrategy) -> StrategyView:
    return StrategyView.model_validate(strategy_dict(named))


def strategies_router(deps: ApiDeps, rules: LoadedRules) -> APIRouter:
    router = APIRouter(
        prefix="/v1/strategies",
        tags=["strategies"],
        responses={
            401: {"model": Problem, "description": "Missing or invalid credentials"},
            403: {"model": Problem, "description": "Lacks events:send and templates:read"},
        },
    )
    Reader = Annotated[Principal, Depends(deps.access.requires("events:send", "templates:read"))]

    @router.get(
        "",
        response_model=StrategyList,
        summary="The named strategies of the loaded rules, for an event's or campaign's `strategy`",
        responses={503: {"model": Problem, "description": "The rule files are not loaded yet"}},
    )
    async def list_strategies(principal: Reader) -> StrategyList:
        ruleset = rules.ruleset
        if ruleset is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "the rule files are not loaded yet (SWITCHBOARD_RULES): try again in a few seconds",
            )
        return StrategyList(
            rules_version=ruleset.version, strategies=[strategy_view(s) for s in ruleset.strategies]
        )

    return router

"""What every console request carries: the API's collaborators, the registered pages, cookie settings.

`console_router` binds one `Console` to each request (`request.state.console`) before any page's own
dependency runs, so the module-level dependencies (`console_principal`, `csrf_checked`) and `render`
need no argument but the request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request

from api.deps import ApiDeps
from state.operators import OperatorStore


@dataclass(frozen=True)
class ConsolePage:
    """One page of the console: its name (its navigation label is `nav.<name>`, its templates and words
    are `templates/<name>/` and `i18n/<name>.py`), its address, the permission its navigation entry
    needs, and the factory of its routes."""

    name: str
    path: str
    permission: str
    router: Callable[[ApiDeps], APIRouter]


@dataclass(frozen=True)
class Console:
    deps: ApiDeps
    operators: OperatorStore
    pages: tuple[ConsolePage, ...]
    secure_cookies: bool
    """Cookies only over https when the public URL is https (a local demo over http still works)."""


def console_of(request: Request) -> Console:
    console: Console = request.state.console
    return console

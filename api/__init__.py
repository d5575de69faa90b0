"""The HTTP API: events in, the inbox, signed links (tracking, one-click unsubscribe), consent,
provider callbacks and `/healthz`.

Its names are imported on first use: the command line imports modules of this package (the audit and
dead-letter commands) and should not load FastAPI and every router to print its help."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from api.app import create_api
    from api.deps import ApiDeps
    from api.publisher import KafkaPublisher, Publisher, PublishError

__all__ = ["ApiDeps", "KafkaPublisher", "PublishError", "Publisher", "create_api"]
_HOMES = {
    "create_api": "api.app",
    "ApiDeps": "api.deps",
    "KafkaPublisher": "api.publisher",
    "Publisher": "api.publisher",
    "PublishError": "api.publisher",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'api' has no attribute {name!r}")

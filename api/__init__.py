"""The HTTP API: `POST /v1/events` for business systems, the inbox for the portal, `/healthz`."""

from api.app import create_api
from api.deps import ApiDeps
from api.publisher import KafkaPublisher, Publisher, PublishError

__all__ = ["ApiDeps", "KafkaPublisher", "PublishError", "Publisher", "create_api"]

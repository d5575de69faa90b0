"""The HTTP API: events in, the inbox, signed links (tracking, one-click unsubscribe), consent,
provider callbacks and `/healthz`."""

from api.app import create_api
from api.deps import ApiDeps
from api.publisher import KafkaPublisher, Publisher, PublishError

__all__ = ["ApiDeps", "KafkaPublisher", "PublishError", "Publisher", "create_api"]

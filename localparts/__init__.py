"""The local parts of dev, demo and CI: Tansu broker, Redis and an SMTP server, all on loopback."""

from localparts.broker import LocalBroker
from localparts.process import PartError, free_port
from localparts.redis_server import LocalRedis
from localparts.smtp_server import LocalSmtpServer, ReceivedMail
from localparts.supervisor import LocalParts, PartState, PartStatus

__all__ = [
    "LocalBroker",
    "LocalParts",
    "LocalRedis",
    "LocalSmtpServer",
    "PartError",
    "PartState",
    "PartStatus",
    "ReceivedMail",
    "free_port",
]

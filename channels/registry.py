"""Builds the configured channel adapters from the settings, with the clients passed in."""

from __future__ import annotations

import logging

import httpx
from redis.asyncio import Redis

from app import Settings
from channels.base import Channel
from channels.email_smtp import SmtpEmail
from channels.inbox import InboxChannel
from channels.webhook import Webhook
from state.inbox import Inbox

log = logging.getLogger(__name__)


def build_channels(settings: Settings, redis: Redis, http_client: httpx.AsyncClient) -> dict[str, Channel]:
    """Email and inbox always; webhook only with a signing secret (unsigned webhooks are not sent)."""
    channels: dict[str, Channel] = {
        "email": SmtpEmail(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.email_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
        ),
        "inbox": InboxChannel(Inbox(redis, max_per_user=settings.inbox_max_per_user)),
    }
    if settings.webhook_secret.get_secret_value():
        channels["webhook"] = Webhook(http_client, settings.webhook_secret, settings.webhook_allow)
    else:
        log.warning("webhook channel disabled: SWITCHBOARD_WEBHOOK_SECRET is not set")
    return channels

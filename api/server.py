"""Run the API with real collaborators: Redis from settings, Kafka for events and receipts."""

from __future__ import annotations

import asyncio

import uvicorn
from redis.asyncio import Redis

from api.app import create_api
from api.deps import ApiDeps
from api.publisher import KafkaPublisher
from app import Settings
from state.apps import AppRegistry
from state.connection import open_redis
from state.inbox import Inbox


def build_deps(settings: Settings, redis: Redis) -> ApiDeps:
    """The production wiring, shared by `serve` and the integration tests."""
    return ApiDeps(
        apps=AppRegistry(redis),
        inbox=Inbox(redis, max_per_user=settings.inbox_max_per_user),
        publisher=KafkaPublisher(
            settings.kafka, events_topic=settings.topic("events"), receipts_topic=settings.topic("receipts")
        ),
        redis=redis,
    )


async def run(settings: Settings) -> None:
    """Serve until cancelled or signalled, then close Redis."""
    redis = open_redis(settings.redis)
    try:
        config = uvicorn.Config(
            create_api(build_deps(settings, redis)), host=settings.api_host, port=settings.api_port
        )
        await uvicorn.Server(config).serve()
    finally:
        await redis.aclose()


def serve(settings: Settings) -> None:
    """Blocking entry point for the command line."""
    asyncio.run(run(settings))

"""Real local parts for the integration tests: started once per test run on free ports, always stopped."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from redis.asyncio import Redis

from analytics.connection import open_clickhouse
from analytics.migrate import apply_migrations
from localparts import LocalParts, LocalSmtpServer, free_port
from localparts.redis_cluster import LocalRedisCluster
from settings import Settings
from state.connection import open_redis
from tests.integration.console_support import browser  # noqa: F401  the console tests' Chromium

HERE = Path(__file__).resolve().parent


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `redis_cluster_too` runs on the single Redis and again on the local Redis Cluster."""
    marked = metafunc.definition.get_closest_marker("redis_cluster_too")
    if marked and "redis_backend" in metafunc.fixturenames:
        metafunc.parametrize("redis_backend", ["redis", "redis-cluster"], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration is an integration test (this hook sees the whole session)."""
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalParts]:
    """The Tansu broker and redis-server on free loopback ports; stopped at the end even on failure."""
    var_dir = tmp_path_factory.mktemp("parts")
    kafka_port = free_port()
    redis_port = free_port()
    while redis_port == kafka_port:
        redis_port = free_port()
    with LocalParts(var_dir, kafka_port=kafka_port, redis_port=redis_port) as parts:
        yield parts


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """Three redis-server primaries in cluster mode, started once, on the first test that needs them."""
    with LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis_backend(request: pytest.FixtureRequest) -> str:
    """`redis` (the single local Redis) unless the test is parametrised over the cluster too, or the
    whole run is on the cluster (SWITCHBOARD_TEST_REDIS=cluster)."""
    default = "redis-cluster" if os.environ.get("SWITCHBOARD_TEST_REDIS") == "cluster" else "redis"
    return str(getattr(request, "param", default))


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_backend: str, local_parts: LocalParts) -> str:
    if redis_backend == "redis-cluster":
        cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    return local_parts.redis_url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client on the test Redis (or Redis Cluster), its data emptied before the test."""
    client = open_redis(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[LocalSmtpServer]:
    with LocalSmtpServer() as server:
        yield server


@pytest.fixture
def smtp(smtp_server: LocalSmtpServer) -> LocalSmtpServer:
    """The session's SMTP server with nothing received yet."""
    smtp_server.clear()
    return smtp_server


@pytest.fixture(scope="session")
def clickhouse_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One chdb data folder for the whole pytest process: chdb allows one folder per process."""
    return f"chdb://{tmp_path_factory.mktemp('clickhouse')}"


@pytest.fixture(scope="session")
def clickhouse(clickhouse_dsn: str) -> Iterator[Client]:
    """The session's client on the shared chdb folder, migrated; tests tell their rows apart by ids."""
    client = open_clickhouse(clickhouse_dsn)
    apply_migrations(client)
    yield client
    client.close()


@pytest.fixture
def settings(
    local_parts: LocalParts, redis_url: str, smtp_server: LocalSmtpServer, clickhouse_dsn: str, tmp_path: Path
) -> Settings:
    """Settings on the test parts (the Redis Cluster for a test run on it too), with topics and Faust
    app id of this test only."""
    unique = uuid.uuid4().hex[:10]
    return Settings(
        kafka=local_parts.kafka_url,
        redis=redis_url,
        clickhouse=clickhouse_dsn,
        var_dir=tmp_path / "var",
        app_id=f"test-{unique}",
        topic_prefix=f"t{unique}-",
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        env="test",  # links signed with a key made for this test's var_dir
        analytics_port=free_port(),  # each test's analytics service serves its own HTTP interface
        metrics_port=0,  # parallel workers would contend for one port; test_watch.py picks its own
        analytics_metrics_port=0,
        alerts=tmp_path / "no-alerts.yaml",  # alerts off unless a test writes its own file
    )

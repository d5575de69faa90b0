"""SWITCHBOARD_REDIS for a Redis Cluster: the nodes are read from the URL, a bad one is named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from settings import Settings
from state.connection import ClusterScript, cluster_nodes, is_cluster, is_cluster_url, open_redis


def test_a_cluster_url_names_every_node() -> None:
    url = "redis+cluster://:pw@10.0.0.1:6379,10.0.0.2:6380, [::1]:6381"
    assert is_cluster_url(url) and not is_cluster_url("redis://10.0.0.1:6379/0")
    assert cluster_nodes(url) == [("10.0.0.1", 6379), ("10.0.0.2", 6380), ("::1", 6381)]
    assert Settings(redis=url).redis == url


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis+cluster://10.0.0.1", "'10.0.0.1' must be host:port"),
        ("redis+cluster://10.0.0.1:6379,:6380", "':6380' must be host:port"),
        ("redis+cluster://10.0.0.1:99999", "'10.0.0.1:99999' must be host:port"),
    ],
)
def test_a_node_without_a_port_is_named(url: str, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(redis=url)


def test_a_cluster_has_database_zero_only() -> None:
    with pytest.raises(ValueError, match="database 0 only"):
        cluster_nodes("redis+cluster://10.0.0.1:6379/3")


def test_the_client_is_a_cluster_client_with_pipeline_safe_scripts() -> None:
    # Building the clients does not connect.
    cluster = open_redis("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
    assert is_cluster(cluster) and isinstance(cluster.register_script("return 1"), ClusterScript)
    single = open_redis("redis://127.0.0.1:1/0")
    assert not is_cluster(single) and isinstance(single, Redis)

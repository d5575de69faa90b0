"""Metric helpers: bounded labels, the watched tally, stages of dead letters, the API's /metrics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from api import create_api
from metrics import catalog
from settings import SwitchboardError
from tests.unit.test_api import SIGNER, FakeInbox, FakePublisher, FakeRedis, deps_of


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_provider_call_is_counted_timed_and_watched() -> None:
    catalog.WATCHED.drain()
    labels = {"channel": "sms", "provider": "unit-gw"}
    before = sample("switchboard_provider_calls_total", {**labels, "result": "credentials"})
    catalog.provider_call("sms", "unit-gw", "credentials", 0.02)
    catalog.provider_call("sms", "unit-gw", "ok", 0.01)
    assert sample("switchboard_provider_calls_total", {**labels, "result": "credentials"}) == before + 1
    assert sample("switchboard_provider_call_seconds_count", labels) >= 2
    assert catalog.WATCHED.drain() == {"calls|sms|unit-gw": 2, "failed|sms|unit-gw": 1,
                                       "credentials|sms|unit-gw": 1}
    assert catalog.WATCHED.drain() == {}


def test_a_tally_that_could_not_be_kept_is_put_back() -> None:
    tally = catalog.Tally()
    tally.add("a", 2)
    drained = tally.drain()
    tally.add("a")
    tally.restore(drained)
    assert tally.drain() == {"a": 3}


def test_labels_are_bounded() -> None:
    values = [catalog.bounded("unit-test-label", f"v{n}") for n in range(catalog.MAX_LABEL_VALUES + 5)]
    assert values[: catalog.MAX_LABEL_VALUES] == [f"v{n}" for n in range(catalog.MAX_LABEL_VALUES)]
    assert set(values[catalog.MAX_LABEL_VALUES:]) == {"other"}
    assert catalog.bounded("unit-test-label", "v0") == "v0"  # known values stay


@pytest.mark.parametrize(
    ("source", "stage"),
    [
        ("events:0:12", "ingest"), ("t1a2b-events:3:1", "ingest"), ("events.urgent:0:1", "ingest"),
        ("prod-deliveries:1:5", "decide"), ("dispatch:0:0", "send"), ("receipts:2:9", "track"),
        ("schedule", "schedule"), ("fallback", "fallback"), ("something:else:1", "other"),
        ("u123-msg-456", "other"),
    ],
)
def test_a_dead_letter_is_counted_under_its_stage(source: str, stage: str) -> None:
    assert catalog.stage_of(source) == stage


def test_infrastructure_errors_are_named_by_their_system() -> None:
    from redis.exceptions import ConnectionError as RedisDown

    before = sample("switchboard_infrastructure_errors_total", {"system": "redis", "where": "unit"})
    catalog.infrastructure_error(RedisDown("gone"), "unit")
    catalog.infrastructure_error(ConnectionRefusedError(), "unit")
    after = sample("switchboard_infrastructure_errors_total", {"system": "redis", "where": "unit"})
    assert after == before + 1
    assert sample("switchboard_infrastructure_errors_total", {"system": "network", "where": "unit"}) >= 1


@pytest.fixture
def api() -> Iterator[TestClient]:
    deps = deps_of(FakeInbox(), FakePublisher(), FakeRedis())
    app = create_api(deps, metrics_allow=["127.0.0.1/32"])
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        yield client


def test_the_api_counts_requests_by_route_template_and_serves_metrics(api: TestClient) -> None:
    labels = {"route": "/v1/inbox/{user_id}", "method": "GET", "status": "200"}
    before = sample("switchboard_api_requests_total", labels)
    for user in ("s1", "s2"):
        token = SIGNER.mint("campus", user, 600)[0]
        assert api.get(f"/v1/inbox/{user}", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    api.get("/no/such/path/s3")
    scraped = api.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    line = 'switchboard_api_requests_total{method="GET",route="/v1/inbox/{user_id}",status="200"}'
    assert line in scraped.text
    assert sample("switchboard_api_requests_total", labels) == before + 2
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert sample("switchboard_api_requests_total", unmatched) >= 1
    routes = {s.labels.get("route", "") for m in REGISTRY.collect() for s in m.samples}
    assert not any("s1" in route or "s3" in route for route in routes)  # ids never become labels


def test_api_metrics_answer_only_the_allowed_networks() -> None:
    deps = deps_of(FakeInbox(), FakePublisher(), FakeRedis())
    app = create_api(deps, metrics_allow=["10.0.0.0/8"])
    with TestClient(app, client=("192.168.1.9", 50000)) as client:
        assert client.get("/metrics").status_code == 404  # not in 10/8
    app = create_api(deps_of(FakeInbox(), FakePublisher(), FakeRedis()))
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        assert client.get("/metrics").status_code == 404  # not served at all by default
    with pytest.raises(SwitchboardError, match="'ten' is not a network"):
        create_api(deps_of(FakeInbox(), FakePublisher(), FakeRedis()), metrics_allow=["ten"])


def test_consumer_lag_is_what_lies_past_the_committed_offsets_per_topic() -> None:
    from aiokafka import TopicPartition

    committed = {TopicPartition("unit-receipts", 0): 10, TopicPartition("unit-receipts", 1): 5,
                 TopicPartition("unit-accepted", 0): 7}
    highwaters = {TopicPartition("unit-receipts", 0): 12, TopicPartition("unit-receipts", 1): 9}
    catalog.consumer_lag("analytics", committed, highwaters.get)
    assert sample("switchboard_consumer_lag", {"stage": "analytics", "topic": "unit-receipts"}) == 6
    assert REGISTRY.get_sample_value(
        "switchboard_consumer_lag", {"stage": "analytics", "topic": "unit-accepted"}
    ) is None  # no high watermark known yet: no figure rather than a wrong one

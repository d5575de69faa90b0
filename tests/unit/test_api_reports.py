"""The report endpoints with fakes: ClickHouse opened only by a valid report, 4xx for bad calls, 503 with
no details (and no secret) when ClickHouse cannot be opened."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis.asyncio import Redis

from analytics.connection import ClickHouseUnavailable
from api import create_api
from api.analytics_reader import LazyReader
from api.deps import Analytics
from api.trace import Tracer
from tests.unit.test_api import LMS_KEY, FakeInbox, FakePublisher, FakeRedis, auth, deps_of


class FakeReader:
    """Stands in for clickhouse-connect: counts opens, answers every query with no rows."""

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.opened = 0
        self.queries: list[str] = []

    def open(self) -> Any:
        self.opened += 1
        if self.fails:
            raise ClickHouseUnavailable("cannot open ClickHouse at http://reader:s3cret@10.0.0.9:8123")
        return self

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        if "getSetting('readonly')" in sql:  # the funnel asks once whether it may add its SETTINGS
            return type("Result", (), {"result_rows": [["1"]]})()
        self.queries.append(sql)
        return type("Result", (), {"result_rows": []})()


def client_with(reader: FakeReader) -> Iterator[TestClient]:
    lazy = LazyReader(reader.open)  # type: ignore[arg-type]
    # Never reached here: only the funnel and bad calls are made. Redis.from_url does not connect.
    redis = Redis.from_url("redis://127.0.0.1:1/0")
    deps = deps_of(FakeInbox(), FakePublisher(), FakeRedis())
    deps = type(deps)(**{**deps.__dict__, "analytics": Analytics(lazy, Tracer(lazy, redis))})
    with TestClient(create_api(deps)) as test_client:
        yield test_client


@pytest.fixture
def reader() -> FakeReader:
    return FakeReader()


@pytest.fixture
def client(reader: FakeReader) -> Iterator[TestClient]:
    yield from client_with(reader)


def test_nothing_is_opened_until_a_valid_report_is_asked(client: TestClient, reader: FakeReader) -> None:
    for params in ({"by": "chanel"}, {"since": "last week"}, {"interval": "minute"}, {"app": "campus"}):
        assert client.get("/v1/reports/funnel", params=params, headers=auth()).status_code in (403, 422)
    assert client.get("/v1/reports/funnel").status_code == 401
    assert client.get("/v1/reports/funnel", headers=auth("sbk_wrong")).status_code == 401
    assert reader.opened == 0
    answer = client.get("/v1/reports/funnel", params={"by": "channel,rule"}, headers=auth())
    assert answer.status_code == 200
    assert answer.json()["rows"] == [] and answer.json()["app"] == "lms"
    assert reader.opened == 1 and "d_rule" in reader.queries[0]


def test_parameters_past_their_length_are_refused(client: TestClient) -> None:
    answer = client.get("/v1/reports/funnel", params={"by": "channel," * 40}, headers=auth())
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "by"]


def test_unreachable_clickhouse_is_503_without_details() -> None:
    reader = FakeReader(fails=True)
    for client in client_with(reader):
        answer = client.get("/v1/reports/funnel", headers={"Authorization": f"Bearer {LMS_KEY}"})
        assert answer.status_code == 503
        assert answer.json() == {"detail": "analytics unavailable, retry later"}
        assert "s3cret" not in answer.text and answer.headers["Retry-After"] == "5"

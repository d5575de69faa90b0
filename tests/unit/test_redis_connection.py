"""The Redis client's outage reporting and retry settings, without a server."""

from __future__ import annotations

import copy
import logging

import pytest
from redis.exceptions import BusyLoadingError, ConnectionError

from state.connection import OutageRetry, RedisOutage, open_redis


def test_an_outage_is_one_warning_when_it_starts_and_one_when_it_ends(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr("state.connection.time.monotonic", lambda: clock[0])
    outage = RedisOutage("redis://127.0.0.1:6379/0")
    with caplog.at_level(logging.WARNING, logger="switchboard.redis"):
        for _ in range(50):  # every waiting command and connection reports its failure
            outage.failed(ConnectionError("Connection refused"))
        clock[0] += 0.5
        outage.succeeded()  # a connection still answering while Redis shuts down: not back yet
        outage.failed(BusyLoadingError("Redis is loading the dataset in memory"))
        clock[0] += 2.0
        outage.succeeded()
        outage.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "unreachable (ConnectionError: Connection refused)" in lines[0]
    assert "back after 2.5 s" in lines[1]
    assert outage.outages == 1 and not outage.down


def test_every_connection_reports_to_the_same_outage() -> None:
    outage = RedisOutage("redis://127.0.0.1:6379/0")
    retry = OutageRetry(outage, retries=-1)
    assert copy.deepcopy(retry).outage is outage  # redis-py deep-copies the retry per connection


def test_the_password_never_reaches_the_outage_line(caplog: pytest.LogCaptureFixture) -> None:
    client = open_redis("redis://:s3cret-pw@127.0.0.1:1/0", patient=True)
    with caplog.at_level(logging.WARNING, logger="switchboard.redis"):
        client.outage.failed(ConnectionError("Connection refused"))
    assert "s3cret-pw" not in caplog.text and "***" in caplog.text


def test_a_worker_waits_out_an_outage_and_other_callers_give_up() -> None:
    patient = open_redis("redis://127.0.0.1:1/0", patient=True).get_retry()
    impatient = open_redis("redis://127.0.0.1:1/0").get_retry()
    assert patient is not None and patient.get_retries() == -1  # redis-py: below 0 retries forever
    assert impatient is not None and 0 < impatient.get_retries() < 5


async def test_a_connection_closed_while_idle_is_no_outage_but_a_second_failure_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = RedisOutage("redis://127.0.0.1:6379/0")
    retry = OutageRetry(outage, retries=-1)
    errors = [ConnectionError("Connection closed by server.")]

    async def command() -> str:
        if errors:
            raise errors.pop()
        return "OK"

    async def disconnect(error: Exception) -> None:
        return None

    with caplog.at_level(logging.WARNING, logger="switchboard.redis"):
        assert await retry.call_with_retry(command, disconnect) == "OK"  # a stale connection, reconnected
        assert not outage.down and caplog.records == []
        errors.extend([ConnectionError("Connection refused"), ConnectionError("Connection refused")])
        assert await retry.call_with_retry(command, disconnect) == "OK"
    assert outage.outages == 1 and "unreachable" in caplog.text

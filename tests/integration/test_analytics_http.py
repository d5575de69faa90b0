"""The analytics service's ClickHouse HTTP interface, served by uvicorn over the test's chdb folder and
spoken to by clickhouse-connect's ordinary HTTP client and by plain HTTP (httpx)."""

# ruff: noqa: S608 -- every query names this module's own table; the interface's point is to run SQL
from __future__ import annotations

import csv
import gzip
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import httpx
import pytest
import uvicorn
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from pydantic import SecretStr

from analytics.analysts import Analysts, hash_password
from analytics.connection import READER_USER, open_clickhouse
from analytics.funnel import funnel_query, funnel_report
from analytics.http_interface import chdb_engine, create_http_interface
from analytics.sink import ReceiptSink
from localparts.process import free_port
from tests.integration.test_reports import campaign

READER_PASSWORD = "reader-" + uuid.uuid4().hex
ANALYST_PASSWORD = "analyst-" + uuid.uuid4().hex
WRITER_PASSWORD = "writer-" + uuid.uuid4().hex
ROWS = 5000


@pytest.fixture(scope="module")
def table(clickhouse_dsn: str) -> Iterator[str]:
    """A table of this module in the test process's one chdb folder, written by the service's own client."""
    name = f"http_{uuid.uuid4().hex[:10]}"
    owner = open_clickhouse(clickhouse_dsn)
    owner.command(
        f"CREATE TABLE {name} (id UInt64, channel String, cost Float64) ENGINE = MergeTree ORDER BY id"
    )
    owner.command(
        f"INSERT INTO {name} SELECT number, ['sms', 'email', 'inbox'][number % 3 + 1], number / 100 "
        f"FROM numbers({ROWS})"
    )
    yield name
    owner.command(f"DROP TABLE {name}")
    owner.close()


@pytest.fixture(scope="module")
def endpoint(clickhouse_dsn: str, table: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The interface under uvicorn on a free port, with analysts `growth` (read-only, 1 s, 3000 rows:
    clickhouse-connect reads ~1900 settings rows on connecting) and `etl` (may write)."""
    users = tmp_path_factory.mktemp("users") / "analytics_users.yaml"
    users.write_text(
        "analysts:\n"
        f"  - {{name: growth, password_hash: '{hash_password(ANALYST_PASSWORD, 1000)}',"
        " max_execution_time: 1, max_result_rows: 3000}\n"
        "  - {name: etl, password_env: TEST_ETL_PASSWORD, readonly: false}\n"
    )
    analysts = Analysts.load(
        users, SecretStr(READER_PASSWORD), environ={"TEST_ETL_PASSWORD": WRITER_PASSWORD}
    )
    engine = chdb_engine(clickhouse_dsn)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_http_interface(engine, analysts), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the interface did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    engine.close()


def connect(endpoint: str, username: str, password: str) -> Client:
    port = int(endpoint.rsplit(":", 1)[1])
    return clickhouse_connect.get_client(host="127.0.0.1", port=port, username=username, password=password)


@pytest.fixture(scope="module")
def analyst(endpoint: str) -> Iterator[Client]:
    client = connect(endpoint, "growth", ANALYST_PASSWORD)
    yield client
    client.close()


def test_clickhouse_connect_queries_rows_arrow_numpy_and_dataframes(analyst: Client, table: str) -> None:
    result = analyst.query(f"SELECT channel, count() AS n FROM {table} GROUP BY channel ORDER BY channel")
    assert result.column_names == ("channel", "n")
    assert result.result_rows == [("email", 1667), ("inbox", 1666), ("sms", 1667)]
    bound = analyst.query(
        f"SELECT sum(cost) FROM {table} WHERE id < {{limit:UInt64}}", parameters={"limit": 10}
    )
    assert bound.result_rows[0][0] == pytest.approx(0.45)
    arrow = analyst.query_arrow(f"SELECT id, channel FROM {table} WHERE id < 5 ORDER BY id")
    assert arrow.column("id").to_pylist() == [0, 1, 2, 3, 4]
    assert arrow.column("channel").to_pylist()[:2] == ["sms", "email"]
    frame = analyst.query_df(f"SELECT id, cost FROM {table} WHERE id BETWEEN 100 AND 109 ORDER BY id")
    assert list(frame["id"]) == list(range(100, 110))
    assert frame["cost"].sum() == pytest.approx(sum(range(100, 110)) / 100)
    array = analyst.query_np(f"SELECT id FROM {table} WHERE id < 3 ORDER BY id")
    assert [row[0] for row in array.tolist()] == [0, 1, 2]


def test_an_analyst_cannot_insert_and_a_writer_can(endpoint: str, analyst: Client, table: str) -> None:
    with pytest.raises(DatabaseError) as refused:
        analyst.insert(table, [[ROWS + 1, "sms", 1.0]], column_names=["id", "channel", "cost"])
    assert refused.value.code == 164
    for statement in (
        f"DROP TABLE {table}",
        f"ALTER TABLE {table} DELETE WHERE 1",
        "CREATE TABLE x (a UInt8) ENGINE = Memory",
    ):
        with pytest.raises(DatabaseError) as denied:
            analyst.command(statement)
        assert denied.value.code == 164, statement
    assert analyst.query(f"SELECT count() FROM {table}").result_rows == [(ROWS,)]

    writer = connect(endpoint, "etl", WRITER_PASSWORD)
    scratch = f"scratch_{uuid.uuid4().hex[:8]}"
    writer.command(f"CREATE TABLE {scratch} (id UInt64, note String) ENGINE = MergeTree ORDER BY id")
    writer.insert(scratch, [[1, "one"], [2, "two"]], column_names=["id", "note"])  # Native, lz4-compressed
    assert writer.query(f"SELECT id, note FROM {scratch} ORDER BY id").result_rows == [(1, "one"), (2, "two")]
    writer.command(f"DROP TABLE {scratch}")
    writer.close()


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("SELECT 1 SETTINGS readonly = 0", {}),
        ("SELECT 1 SETTINGS max_result_rows = 0", {}),
        ("SET max_execution_time = 0", {}),
        ("SELECT 1", {"readonly": "0"}),
        ("SELECT 1", {"max_result_rows": "0"}),
        ("SELECT 1", {"max_execution_time": "100"}),
    ],
)
def test_readonly_and_limits_cannot_be_lifted_by_the_client(
    endpoint: str, query: str, params: dict[str, str]
) -> None:
    response = httpx.post(endpoint, params=params, content=query, auth=("growth", ANALYST_PASSWORD))
    assert response.status_code == 403, response.text
    assert response.headers["X-ClickHouse-Exception-Code"] == "164"
    assert response.text.startswith("Code: 164. DB::Exception:") and "readonly" in response.text


def test_output_settings_stay_open_to_an_analyst(endpoint: str) -> None:
    response = httpx.get(
        endpoint,
        params={
            "query": "SELECT toUInt64(7) AS n FORMAT JSONEachRow",
            "output_format_json_quote_64bit_integers": "1",
        },
        auth=("growth", ANALYST_PASSWORD),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"n": "7"}


def test_the_server_files_are_out_of_reach(endpoint: str, tmp_path: Path) -> None:
    target = tmp_path / "stolen.tsv"
    for query in (
        f"SELECT 1 INTO OUTFILE '{target}'",
        "SELECT 1; SELECT 2",
    ):
        response = httpx.post(endpoint, content=query, auth=("etl", WRITER_PASSWORD))
        assert response.status_code >= 400, (query, response.text)
        assert response.text.startswith("Code: "), response.text
    for query in (
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "SELECT * FROM Python(READER_PASSWORD)",
    ):
        response = httpx.post(endpoint, content=query, auth=("growth", ANALYST_PASSWORD))
        assert response.status_code >= 400, (query, response.text)
        assert response.text.startswith("Code: "), response.text
    assert not target.exists()


def test_get_is_read_only_even_for_a_writer(endpoint: str) -> None:
    response = httpx.get(
        endpoint,
        params={"query": "CREATE TABLE nope (a UInt8) ENGINE = Memory"},
        auth=("etl", WRITER_PASSWORD),
    )
    assert response.status_code == 403
    assert response.headers["X-ClickHouse-Exception-Code"] == "164"


def test_a_bad_password_is_516(endpoint: str) -> None:
    with pytest.raises(DatabaseError) as refused:
        connect(endpoint, "growth", "not-" + ANALYST_PASSWORD)
    assert refused.value.code == 516
    response = httpx.post(endpoint, content="SELECT 1", auth=("growth", "wrong"))
    assert response.status_code == 403
    assert response.headers["X-ClickHouse-Exception-Code"] == "516"
    assert "growth: Authentication failed" in response.text and "wrong" not in response.text
    nobody = httpx.post(
        endpoint, content="SELECT 1"
    )  # ClickHouse's `default` user, which does not exist here
    assert nobody.status_code == 403 and nobody.headers["X-ClickHouse-Exception-Code"] == "516"


def test_every_clickhouse_way_of_logging_in(endpoint: str) -> None:
    ways = [
        {"auth": ("switchboard", READER_PASSWORD)},
        {"headers": {"X-ClickHouse-User": "switchboard", "X-ClickHouse-Key": READER_PASSWORD}},
        {"params": {"user": "switchboard", "password": READER_PASSWORD}},
    ]
    for way in ways:
        response = httpx.post(endpoint, content="SELECT currentDatabase()", **way)  # type: ignore[arg-type]
        assert (response.status_code, response.text) == (200, "default\n"), way
    mixed = httpx.post(
        endpoint, content="SELECT 1", auth=("switchboard", READER_PASSWORD), params={"user": "switchboard"}
    )
    assert mixed.status_code == 403 and "simultaneously" in mixed.text


def test_an_unknown_table_is_60_and_404_and_bad_syntax_62_and_400(endpoint: str, analyst: Client) -> None:
    with pytest.raises(DatabaseError) as missing:
        analyst.query("SELECT * FROM no_such_table")
    assert missing.value.code == 60
    response = httpx.post(endpoint, content="SELECT * FROM no_such_table", auth=("growth", ANALYST_PASSWORD))
    assert (response.status_code, response.headers["X-ClickHouse-Exception-Code"]) == (404, "60")
    assert response.text.startswith("Code: 60. DB::Exception:")
    syntax = httpx.post(endpoint, content="SELEC 1", auth=("growth", ANALYST_PASSWORD))
    assert (syntax.status_code, syntax.headers["X-ClickHouse-Exception-Code"]) == (400, "62")


def test_formats_by_clause_and_by_default_format(endpoint: str, table: str) -> None:
    auth = ("growth", ANALYST_PASSWORD)
    query = f"SELECT id, channel FROM {table} WHERE id < 3 ORDER BY id"
    as_csv = httpx.post(endpoint, content=f"{query} FORMAT CSV", auth=auth)
    assert as_csv.headers["X-ClickHouse-Format"] == "CSV"
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(as_csv.text))) == [["0", "sms"], ["1", "email"], ["2", "inbox"]]
    as_json = httpx.post(endpoint, content=f"{query} FORMAT JSONEachRow", auth=auth)
    assert [json.loads(line) for line in as_json.text.splitlines()][1] == {"id": 1, "channel": "email"}
    as_tsv = httpx.get(
        endpoint, params={"query": query, "default_format": "TabSeparatedWithNames"}, auth=auth
    )
    assert as_tsv.headers["X-ClickHouse-Format"] == "TabSeparatedWithNames"
    assert as_tsv.text.splitlines()[:2] == ["id\tchannel", "0\tsms"]
    summary = json.loads(as_tsv.headers["X-ClickHouse-Summary"])
    assert int(summary["result_bytes"]) == len(as_tsv.content)
    assert as_tsv.headers["X-ClickHouse-Query-Id"]
    named = httpx.get(endpoint, params={"query": "SELECT 1", "query_id": "mine-1"}, auth=auth)
    assert named.headers["X-ClickHouse-Query-Id"] == "mine-1"


def test_gzip_when_asked(endpoint: str, table: str) -> None:
    with httpx.Client() as client:
        request = client.build_request(
            "POST",
            endpoint,
            params={"enable_http_compression": "1"},
            content=f"SELECT id FROM {table} WHERE id < 3000 ORDER BY id FORMAT TSV",
            headers={
                "Accept-Encoding": "gzip",
                "Authorization": httpx.BasicAuth("growth", ANALYST_PASSWORD)._auth_header,
            },
        )
        response = client.send(request, stream=True)
        raw = b"".join(response.iter_raw())
    assert response.headers.get("Content-Encoding") == "gzip", (
        response.status_code,
        response.headers,
        raw[:200],
    )
    assert gzip.decompress(raw).decode().splitlines()[:1000] == [str(n) for n in range(1000)]
    assert len(raw) < len(gzip.decompress(raw)) / 2
    plain = httpx.post(
        endpoint, content="SELECT 1", auth=("growth", ANALYST_PASSWORD), headers={"Accept-Encoding": "gzip"}
    )
    assert "Content-Encoding" not in plain.headers  # only with enable_http_compression=1, as ClickHouse


def test_a_gzip_request_body_is_read(endpoint: str) -> None:
    response = httpx.post(
        endpoint,
        content=gzip.compress(b"SELECT 40 + 2"),
        headers={"Content-Encoding": "gzip"},
        auth=("growth", ANALYST_PASSWORD),
    )
    assert (response.status_code, response.text) == (200, "42\n")


def test_limits_cut_off_a_long_query_and_a_large_result(endpoint: str, analyst: Client, table: str) -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseError) as slow:
        analyst.query("SELECT count() FROM numbers(1000000000000)")
    assert slow.value.code == 159  # TIMEOUT_EXCEEDED after the analyst's 1 s
    assert time.monotonic() - started < 15
    with pytest.raises(DatabaseError) as large:
        analyst.query(f"SELECT id FROM {table}")  # 5000 rows, over the analyst's 3000
    assert large.value.code == 396
    assert len(analyst.query(f"SELECT id FROM {table} LIMIT 3000").result_rows) == 3000


def test_ping(endpoint: str) -> None:
    assert httpx.get(f"{endpoint}/ping").text == "Ok.\n"


def test_the_funnel_reads_through_the_interface_as_switchboards_reader(
    endpoint: str, clickhouse: Client
) -> None:
    """The API and the CLI read reports as the read-only `switchboard` user, whose engine refuses any
    SETTINGS clause: the funnel leaves its own out for such a client, with the same rows."""
    app = f"http_{uuid.uuid4().hex[:8]}"
    ReceiptSink(clickhouse).write(campaign(app))
    query = funnel_query(since="3d", until=None, by="channel", app=app)
    reader = connect(endpoint, READER_USER, READER_PASSWORD)
    try:
        through = funnel_report(reader, query).as_records()
    finally:
        reader.close()
    direct = funnel_report(clickhouse, query).as_records()
    assert through == direct
    assert {record["channel"]: record["sent"] for record in through}["sms"] == 2

"""Migration files: naming, ordering, checksums and statement splitting, without ClickHouse."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics.migrate import MIGRATIONS, MigrationError, load_migrations, split_statements


def test_split_respects_quotes_and_comments() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE a (x String DEFAULT 'semi;colon', y String DEFAULT 'it''s; fine');
    /* block; comment */ CREATE VIEW "we;ird" AS SELECT `c;ol` FROM a;
    ;
    """
    statements = split_statements(sql)
    assert len(statements) == 2
    assert statements[0] == "CREATE TABLE a (x String DEFAULT 'semi;colon', y String DEFAULT 'it''s; fine')"
    assert statements[1].startswith("CREATE VIEW \"we;ird\" AS SELECT `c;ol` FROM a")


def test_split_rejects_an_unterminated_quote() -> None:
    with pytest.raises(MigrationError, match="unterminated ' quote"):
        split_statements("SELECT 'oops")


def test_shipped_migrations_are_numbered_and_start_with_message_events() -> None:
    migrations = load_migrations(MIGRATIONS)
    names = [m.name for m in migrations]
    assert names[0] == "001_message_events.sql"
    assert names == sorted(names)
    assert all(len(m.checksum) == 64 for m in migrations)
    assert any("message_events" in s for s in migrations[0].statements())


def test_files_load_in_number_order(tmp_path: Path) -> None:
    (tmp_path / "010_later.sql").write_text("SELECT 10")
    (tmp_path / "002_sooner.sql").write_text("SELECT 2")
    assert [m.name for m in load_migrations(tmp_path)] == ["002_sooner.sql", "010_later.sql"]


@pytest.mark.parametrize(
    ("files", "says"),
    [
        (["1_short.sql"], "1_short.sql: migration files are named NNN_lowercase_words.sql"),
        (["001_a.sql", "001_b.sql"], "001_b.sql: number 001 is already used by 001_a.sql"),
    ],
)
def test_bad_file_names_are_named(tmp_path: Path, files: list[str], says: str) -> None:
    for name in files:
        (tmp_path / name).write_text("SELECT 1")
    with pytest.raises(MigrationError, match=says):
        load_migrations(tmp_path)

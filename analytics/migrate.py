"""Numbered plain-SQL migrations: applied in order, each recorded with its checksum, drift refused.

ClickHouse has no DDL transactions, so statements are written to be re-runnable (IF NOT EXISTS): two
workers migrating at once, or a retry after a half-applied file, then do no harm.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
LEDGER = "schema_migrations"

_FILE_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class MigrationError(RuntimeError):
    """A migration file is misnamed, or one of its statements failed."""


class MigrationDriftError(MigrationError):
    """An applied migration file changed or vanished since it was applied."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file and the sha256 of its bytes."""

    name: str
    path: Path
    checksum: str

    def statements(self) -> list[str]:
        return split_statements(self.path.read_text(encoding="utf-8"))


def load_migrations(folder: Path = MIGRATIONS) -> list[Migration]:
    """The `NNN_name.sql` files of `folder`, in number order; any other .sql file is an error."""
    found: dict[str, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNN_lowercase_words.sql")
        number = match.group(1)
        if number in found:
            raise MigrationError(f"{path}: number {number} is already used by {found[number].path.name}")
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        found[number] = Migration(name=path.name, path=path, checksum=checksum)
    return [found[number] for number in sorted(found)]


def split_statements(sql: str) -> list[str]:
    """Split SQL on `;` outside quotes and comments; ClickHouse over HTTP takes one statement per request."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char in "'\"`":
            end = _end_of_quoted(sql, i)
            current.append(sql[i:end])
            i = end
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
            current.append("\n")
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end == -1:
                raise MigrationError("unterminated /* comment")
            i = end + 2
            current.append(" ")
        elif char == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(char)
            i += 1
    statements.append("".join(current))
    return [statement.strip() for statement in statements if statement.strip()]


def _end_of_quoted(sql: str, start: int) -> int:
    quote = sql[start]
    i = start + 1
    while i < len(sql):
        if sql[i] == "\\":
            i += 2
        elif sql[i] == quote:
            if sql.startswith(quote * 2, i):  # a doubled quote is an escaped quote
                i += 2
            else:
                return i + 1
        else:
            i += 1
    raise MigrationError(f"unterminated {quote} quote starting at character {start}")


def applied_migrations(client: Client, ledger: str = LEDGER) -> dict[str, str]:
    """Name → checksum of every migration recorded in the ledger (empty when there is no ledger)."""
    _check_identifier(ledger)
    exists = client.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {ledger:String}",
        parameters={"ledger": ledger},
    ).result_rows[0][0]
    if not exists:
        return {}
    rows = client.query(
        "SELECT name, argMax(checksum, applied_at) FROM {ledger:Identifier} GROUP BY name",
        parameters={"ledger": ledger},
    ).result_rows
    return {str(name): str(checksum) for name, checksum in rows}


def check_drift(client: Client, folder: Path = MIGRATIONS, ledger: str = LEDGER) -> None:
    """Raise MigrationDriftError naming every applied file that changed or is missing."""
    on_disk = {migration.name: migration for migration in load_migrations(folder)}
    problems: list[str] = []
    for name, checksum in sorted(applied_migrations(client, ledger).items()):
        migration = on_disk.get(name)
        if migration is None:
            problems.append(f"{folder / name}: applied but the file is missing")
        elif migration.checksum != checksum:
            problems.append(
                f"{migration.path}: changed after it was applied (checksum {checksum[:12]} recorded, "
                f"{migration.checksum[:12]} now); add a new numbered migration instead"
            )
    if problems:
        raise MigrationDriftError("migration drift: " + "; ".join(problems))


def apply_migrations(client: Client, folder: Path = MIGRATIONS, ledger: str = LEDGER) -> list[str]:
    """Apply the pending migrations in order after a drift check; the names applied now."""
    _check_identifier(ledger)
    client.command(
        f"CREATE TABLE IF NOT EXISTS {ledger} ("
        "name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)"
        ") ENGINE = MergeTree ORDER BY name"
    )
    check_drift(client, folder, ledger)
    done = applied_migrations(client, ledger)
    applied_now: list[str] = []
    for migration in load_migrations(folder):
        if migration.name in done:
            continue
        for index, statement in enumerate(migration.statements(), start=1):
            try:
                client.command(statement)
            except Exception as exc:
                raise MigrationError(f"{migration.path}: statement {index} failed: {exc}") from exc
        client.insert(ledger, [[migration.name, migration.checksum]], column_names=["name", "checksum"])
        applied_now.append(migration.name)
    return applied_now


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.match(name):
        raise MigrationError(f"ledger table name {name!r} is not a plain identifier")

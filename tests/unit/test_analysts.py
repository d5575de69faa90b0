"""Analysts of the HTTP interface: the file's shape, passwords never in plain text, the built-in reader."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from analytics.analysts import Analysts, AnalystsFileError, hash_password


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "analytics_users.yaml"
    path.write_text(text)
    return path


def test_the_builtin_reader_is_read_only_and_always_present(tmp_path: Path) -> None:
    analysts = Analysts.load(tmp_path / "absent.yaml", SecretStr("reader-secret"))
    reader = analysts.authenticate("switchboard", "reader-secret")
    assert reader is not None and reader.readonly
    assert analysts.authenticate("switchboard", "reader-secre") is None
    assert analysts.authenticate("default", "") is None


def test_hashed_and_environment_passwords(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"analysts:\n  - {{name: growth, password_hash: '{hash_password('s3cret', 1000)}',"
        " max_result_rows: 5}\n"
        "  - {name: etl, password_env: ETL_PASSWORD, readonly: false}\n",
    )
    analysts = Analysts.load(path, SecretStr("r"), environ={"ETL_PASSWORD": "from-env"})
    growth = analysts.authenticate("growth", "s3cret")
    assert growth is not None and growth.readonly and growth.limits()["max_result_rows"] == "5"
    assert analysts.authenticate("growth", "s3cret") == growth  # the second check comes from the cache
    assert analysts.authenticate("growth", "S3cret") is None
    etl = analysts.authenticate("etl", "from-env")
    assert etl is not None and not etl.readonly


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("analysts:\n  - {name: a, password: plain}\n", "analysts.0.password"),
        ("analysts:\n  - {name: a}\n", "exactly one of password_hash or password_env"),
        ("analysts:\n  - {name: a, password_hash: md5$1$2}\n", "pbkdf2_sha256$ITERATIONS$SALT$HASH"),
        ("analysts:\n  - {name: switchboard, password_env: X}\n", "defined twice (the built-in user)"),
        ("analysts:\n  - {name: a, password_env: MISSING_PASSWORD}\n", "$MISSING_PASSWORD, which is not set"),
        ("analysts: [\n", "not valid YAML"),
    ],
)
def test_a_bad_file_names_the_file_and_the_problem(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(AnalystsFileError) as refused:
        Analysts.load(path, SecretStr("r"), environ={"X": "x"})
    assert str(path) in str(refused.value) and named in str(refused.value)


def test_a_hash_never_holds_the_password() -> None:
    hashed = hash_password("correct horse", 1000)
    assert hashed.startswith("pbkdf2_sha256$1000$") and "correct horse" not in hashed
    assert hash_password("correct horse", 1000) != hashed  # salted

"""Settings: URL schemes, the ClickHouse data under var_dir, and a link secret nobody else knows."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from channels.links import LinkSigner
from settings import Settings, SwitchboardError

PUBLISHED = "dev-only-link-secret-change-me"


def test_var_dir_moves_the_clickhouse_data_too(tmp_path: Path) -> None:
    assert Settings(var_dir=tmp_path).clickhouse == f"chdb://{tmp_path / 'clickhouse'}"
    assert Settings(var_dir=tmp_path, clickhouse="http://ch:8123").clickhouse == "http://ch:8123"


def test_settings_nothing_reads_are_gone() -> None:
    assert {"web_port", "sink_batch_rows", "sink_flush_seconds"}.isdisjoint(Settings.model_fields)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kafka", "127.0.0.1:9092"),
        ("redis", "localhost:6379"),
        ("clickhouse", "/srv/ch"),
        ("public_url", "x.cn"),
    ],
)
def test_a_url_without_its_scheme_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=r"needs a .*:// URL, e\.g\."):
        Settings(**{field: value})


@pytest.mark.parametrize("connections", [0, 65])
def test_smtp_connections_out_of_range_are_refused_naming_the_setting(connections: int) -> None:
    with pytest.raises(ValidationError, match=r"smtp_connections\n  Input should be"):
        Settings(smtp_connections=connections)
    assert Settings(smtp_connections=64).smtp_connections == 64


def test_production_refuses_to_sign_without_a_secret(tmp_path: Path) -> None:
    with pytest.raises(SwitchboardError, match="SWITCHBOARD_LINK_SECRET is not set"):
        Settings(var_dir=tmp_path).signing_secret()
    assert not (tmp_path / "link_secret").exists()


@pytest.mark.parametrize("env", ["production", "dev", "test"])
def test_the_published_secret_is_never_accepted(tmp_path: Path, env: str) -> None:
    settings = Settings(var_dir=tmp_path, env=env, link_secret=SecretStr(PUBLISHED))
    with pytest.raises(SwitchboardError, match="published development value") as refused:
        settings.signing_secret()
    assert PUBLISHED not in str(refused.value)
    with pytest.raises(ValueError, match="published"):
        LinkSigner(SecretStr(PUBLISHED), "http://127.0.0.1:18080")


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SwitchboardError, match="shorter than 16 bytes"):
        Settings(var_dir=tmp_path, link_secret=SecretStr("short")).signing_secret()


def test_a_given_secret_is_used_as_it_is(tmp_path: Path) -> None:
    given = SecretStr("a-real-secret-of-enough-length-0123")
    assert Settings(var_dir=tmp_path, link_secret=given).signing_secret() == given


def test_dev_makes_one_random_secret_and_keeps_it_private(tmp_path: Path) -> None:
    first = Settings(var_dir=tmp_path / "var", env="dev").signing_secret().get_secret_value()
    again = Settings(var_dir=tmp_path / "var", env="test").signing_secret().get_secret_value()
    other = Settings(var_dir=tmp_path / "elsewhere", env="dev").signing_secret().get_secret_value()
    assert first == again != other and len(first) >= 32 and first != PUBLISHED
    assert stat.S_IMODE((tmp_path / "var" / "link_secret").stat().st_mode) == 0o600

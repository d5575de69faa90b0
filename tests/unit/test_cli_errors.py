"""Mistaken invocations of the real command line: one or two lines saying what to do, never a traceback.

No service runs here: Redis and Kafka settings point at ports nothing listens on."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app import cli
from localparts.process import free_port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Settings on a var_dir of this test and on ports where nothing answers."""
    return {
        "SWITCHBOARD_VAR_DIR": str(tmp_path / "var"),
        "SWITCHBOARD_KAFKA": f"kafka://127.0.0.1:{free_port()}",
        "SWITCHBOARD_REDIS": f"redis://127.0.0.1:{free_port()}/0",
        "SWITCHBOARD_ENV": "dev",
        "SWITCHBOARD_LINK_SECRET": "",
    }


def mistake(args: list[str], env: dict[str, str], status: int = 1) -> str:
    """Run the CLI; assert it failed with `status` in one or two lines and no traceback; return them."""
    result = CliRunner().invoke(cli, args, env=env)
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == status, result.output
    assert 1 <= len(lines) <= 2, result.output
    assert lines[0].startswith("error: "), result.output
    return result.output


def test_users_import_of_a_missing_file(env: dict[str, str], tmp_path: Path) -> None:
    out = mistake(["users", "import", str(tmp_path / "nobody.csv")], env)
    assert "nobody.csv: cannot read it: No such file or directory" in out


def test_users_import_of_a_folder(env: dict[str, str], tmp_path: Path) -> None:
    assert "is a folder" in mistake(["users", "import", str(tmp_path)], env)


def test_users_import_of_a_gbk_file_names_the_line_and_the_fix(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes("user_id,name\nu1,王芳\n".encode("gb18030"))
    out = mistake(["users", "import", str(path)], env)
    assert "people.csv:2: not UTF-8 text (byte 0xcd)" in out and "iconv" in out


def test_users_import_of_a_headerless_file(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("u1,wang@example.edu,+8613800138000\n")
    assert "people.csv:1: no header row" in mistake(["users", "import", str(path)], env)


def test_users_import_with_redis_down(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("user_id\nu1\n")
    out = mistake(["users", "import", str(path)], env)
    assert f"cannot reach Redis at {env['SWITCHBOARD_REDIS']}" in out and "switchboard parts up" in out


def test_apps_add_with_a_misspelt_channel(env: dict[str, str]) -> None:
    out = mistake(["apps", "add", "lms", "--channels", "inbox,emial"], env)
    assert "unknown channel 'emial' (did you mean 'email'?)" in out


def test_apps_add_with_a_bad_name(env: dict[str, str]) -> None:
    assert "app name 'my app' must be" in mistake(["apps", "add", "my app", "--channels", "inbox"], env)


@pytest.mark.parametrize(
    "args", [["apps", "add", "lms", "--channels", "inbox"], ["apps", "list"], ["apps", "rotate", "lms"]]
)
def test_apps_commands_with_redis_down(env: dict[str, str], args: list[str]) -> None:
    out = mistake(args, env)
    assert f"cannot reach Redis at {env['SWITCHBOARD_REDIS']}" in out and "switchboard parts up" in out


@pytest.mark.parametrize("command", ["worker", "api"])
def test_worker_and_api_with_the_parts_down(env: dict[str, str], command: str) -> None:
    out = mistake([command], env)
    assert f"cannot reach Redis at {env['SWITCHBOARD_REDIS']}" in out and "switchboard parts up" in out


@pytest.mark.parametrize("command", ["worker", "api"])
def test_worker_and_api_refuse_production_without_a_link_secret(env: dict[str, str], command: str) -> None:
    out = mistake([command], {**env, "SWITCHBOARD_ENV": "production"})
    assert "SWITCHBOARD_LINK_SECRET is not set" in out


@pytest.mark.parametrize("environment", ["production", "dev", "test"])
def test_the_published_link_secret_is_refused_everywhere(env: dict[str, str], environment: str) -> None:
    published = "dev-only-link-secret-change-me"
    out = mistake(["api"], {**env, "SWITCHBOARD_ENV": environment, "SWITCHBOARD_LINK_SECRET": published})
    assert "published development value" in out and published not in out


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SWITCHBOARD_KAFKA", "127.0.0.1:9092", "SWITCHBOARD_KAFKA: needs a kafka:// URL"),
        ("SWITCHBOARD_REDIS", "127.0.0.1:6379", "SWITCHBOARD_REDIS: needs a redis:// or rediss://"),
        ("SWITCHBOARD_CLICKHOUSE", "/srv/ch", "SWITCHBOARD_CLICKHOUSE: needs a chdb:// or http://"),
        ("SWITCHBOARD_PUBLIC_URL", "notify.example.edu", "SWITCHBOARD_PUBLIC_URL: needs a http://"),
        ("SWITCHBOARD_PARTITIONS", "four", "SWITCHBOARD_PARTITIONS: Input should be a valid integer"),
        ("SWITCHBOARD_WEBHOOK_ALLOW", "[10.0.0.0/8", "SWITCHBOARD_WEBHOOK_ALLOW: cannot be parsed"),
        ("SWITCHBOARD_ENV", "prod", "SWITCHBOARD_ENV: Input should be 'production', 'dev' or 'test'"),
    ],
)
def test_a_bad_setting_names_its_variable(
    env: dict[str, str], variable: str, value: str, expected: str
) -> None:
    for args in (["parts", "status"], ["report"], ["apps", "list"]):
        assert expected in mistake(args, {**env, variable: value}, status=2)


def test_credentials_in_a_setting_are_not_echoed(env: dict[str, str]) -> None:
    out = mistake(["parts", "status"], {**env, "SWITCHBOARD_REDIS": "user:s3cret@host:6379"}, status=2)
    assert "SWITCHBOARD_REDIS" in out and "s3cret" not in out
    out = mistake(["parts", "status"], {**env, "SWITCHBOARD_REDIS": "redis://:s3cret@example.org:6379/0"})
    assert "s3cret" not in out
    dead = env["SWITCHBOARD_REDIS"].replace("redis://", "redis://:s3cret@")
    out = mistake(["apps", "list"], {**env, "SWITCHBOARD_REDIS": dead})
    assert "s3cret" not in out and "redis://:***@127.0.0.1" in out


def test_report_before_the_analytics_service_ran(env: dict[str, str]) -> None:
    out = mistake(["report"], env)
    assert "no analytics yet" in out and "switchboard analytics" in out


def test_parts_down_with_nothing_running_says_so(env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["parts", "down"], env=env)
    assert result.exit_code == 0 and result.output.startswith("nothing to stop")


def test_providers_list_says_when_none_is_enabled(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text("# nothing configured yet\n")
    result = CliRunner().invoke(cli, ["providers", "list", str(path)], env=env)
    assert result.exit_code == 0 and "no provider is enabled" in result.output

"""The providers file: schema, environment secrets, positions of errors, masking, and the CLI."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from typer.testing import CliRunner

from channels.base import Channel, ChannelDeps, ProviderOptions, SendResult
from channels.kinds import KINDS, KindUnavailable, adapter_for
from channels.providers import (
    ProvidersFileError,
    check_providers,
    load_providers,
    providers_cli,
)
from channels.templates import RenderedMessage
from records.topics import Dispatch

SECRET = "s3cr3t-from-env-0042"


class GatewayOptions(ProviderOptions):
    endpoint: str
    api_key: SecretStr
    timeout: float = 5.0
    account: int = 0


class FakeGateway(Channel):
    channel = "sms"
    provider = "fake-gw"
    options_model: ClassVar[type[ProviderOptions]] = GatewayOptions

    def __init__(self, options: GatewayOptions) -> None:
        self.options = options

    @classmethod
    def from_options(cls, options: ProviderOptions, deps: ChannelDeps) -> FakeGateway:
        assert isinstance(options, GatewayOptions)
        return cls(options)

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        return SendResult(status="sent", provider_message_id="x")


class FakePush(FakeGateway):
    channel = "push"
    provider = "fake-push"


@pytest.fixture(autouse=True)
def fake_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KINDS, "fake-gw", f"{__name__}:FakeGateway")
    monkeypatch.setitem(KINDS, "fake-push", f"{__name__}:FakePush")
    monkeypatch.setitem(KINDS, "not-built", "channels.sms_nowhere:Nothing")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


GOOD = """
sms:
  - name: gw-backup
    kind: fake-gw
    priority: 2
    options: {endpoint: "http://127.0.0.1:1", api_key: "${GW_KEY}"}
  - name: gw-main
    kind: fake-gw
    priority: 1
    rate: {per_second: 100, burst: 200}
    cost_per_message: 0.045
    options:
      endpoint: http://127.0.0.1:18103
      api_key: env:GW_KEY
      timeout: 2
  - name: gw-off
    kind: fake-gw
    enabled: ${GW_OFF:-false}
    options: {endpoint: "${GW_OFF_URL:-http://127.0.0.1:18103}", api_key: env:GW_OFF_KEY}
push:
  - name: push-main
    kind: fake-push
    options: {endpoint: "http://127.0.0.1:2", api_key: "${GW_KEY}"}
"""


def test_a_good_file_loads_with_secrets_from_the_environment(tmp_path: Path) -> None:
    specs = load_providers(write(tmp_path, GOOD), {"GW_KEY": SECRET})
    assert [(s.channel, s.name, s.priority) for s in specs] == [
        ("sms", "gw-backup", 2), ("sms", "gw-main", 1), ("push", "push-main", 0)
    ]
    main = specs[1]
    assert main.rate is not None and (main.rate.per_second, main.rate.burst) == (100, 200)
    assert main.cost_per_message == 0.045
    options = main.options
    assert isinstance(options, GatewayOptions)
    assert options.api_key.get_secret_value() == SECRET
    assert options.timeout == 2.0
    assert SECRET not in repr(specs) and SECRET not in str(main.masked())
    adapter = main.build(ChannelDeps(http=httpx.AsyncClient(), redis=Redis()))
    assert isinstance(adapter, FakeGateway) and adapter.options is options


def test_a_disabled_provider_is_enabled_by_its_variable(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    specs = load_providers(path, {"GW_KEY": SECRET, "GW_OFF": "true", "GW_OFF_KEY": "k2"})
    off = next(s for s in specs if s.name == "gw-off")
    assert isinstance(off.options, GatewayOptions)
    assert off.options.endpoint == "http://127.0.0.1:18103"  # the default, as GW_OFF_URL is not set
    assert off.from_env == frozenset({"api_key", "endpoint"})  # written as references: masked
    # Disabled, its variables need not be set; enabled, they must.
    errors = check_providers(path, {"GW_KEY": SECRET, "GW_OFF": "yes"})
    assert [e.message for e in errors] == [
        "provider 'gw-off' option 'api_key': environment variable GW_OFF_KEY is not set"
    ]


ERRORS = [
    ("unknown channel", "smss: []\n", "1:1: unknown field 'smss' (did you mean 'sms'?)"),
    ("not a list", "sms: {name: a}\n", "1:6: 'sms' must be a list of providers"),
    ("missing kind", "sms:\n  - name: a\n", "2:5: missing required field 'kind'"),
    ("unknown entry field", "sms:\n  - name: a\n    kind: fake-gw\n    prio: 1\n",
     "4:5: unknown field 'prio' (did you mean 'priority'?)"),
    ("bad name", "sms:\n  - name: Aliyun Main\n    kind: fake-gw\n",
     "2:11: provider name 'Aliyun Main' may only hold lowercase letters, digits and _ . -"),
    ("unknown kind", "sms:\n  - name: a\n    kind: fake-gx\n",
     "3:11: unknown provider kind 'fake-gx' (did you mean 'fake-gw'?)"),
    ("kind not installed", "sms:\n  - name: a\n    kind: not-built\n",
     "3:11: provider kind 'not-built' is not installed (no module channels.sms_nowhere)"),
    ("wrong channel", "push:\n  - name: a\n    kind: fake-gw\n",
     "3:11: kind 'fake-gw' is a sms provider, not push"),
    ("rate zero", "sms:\n  - name: a\n    kind: fake-gw\n    rate: {per_second: 0, burst: 5}\n",
     "4:24: field 'per_second': Input should be greater than 0"),
    ("unknown option",
     "sms:\n  - name: a\n    kind: fake-gw\n    options: {endpoint: x, api_key: k, tmeout: 1}\n",
     "4:40: provider 'a': unknown option 'tmeout' (did you mean 'timeout'?)"),
    ("missing option", "sms:\n  - name: a\n    kind: fake-gw\n    options:\n      endpoint: x\n",
     "5:7: provider 'a': missing required option 'api_key'"),
    ("missing variable",
     "sms:\n  - name: a\n    kind: fake-gw\n    options: {endpoint: x, api_key: env:NOPE}\n",
     "4:37: provider 'a' option 'api_key': environment variable NOPE is not set"),
    ("duplicate name", "sms:\n  - {name: a, kind: fake-gw, options: {endpoint: x, api_key: k}}\n"
     "push:\n  - {name: a, kind: fake-push, options: {endpoint: x, api_key: k}}\n",
     "4:12: duplicate provider name 'a' (first at line 2)"),
    ("duplicate key", "sms: []\nsms: []\n", "2:1: duplicate key 'sms'"),
    ("bad yaml", "sms:\n  - name: [a\n", "invalid YAML"),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in ERRORS], ids=[c[0] for c in ERRORS])
def test_errors_name_the_place(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(text, encoding="utf-8")
    errors = [str(error) for error in check_providers(path, {})]
    assert any(error.startswith(f"{path}:") and expected in error for error in errors), errors
    with pytest.raises(ProvidersFileError):
        load_providers(path, {})


def test_every_error_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, """
        sms:
          - {name: a, kind: fake-gx}
          - {name: b, kind: fake-gw, options: {endpoint: x}}
          - {name: c, kind: fake-gw, rate: {per_second: 1}}
    """)
    lines = [error.line for error in check_providers(path, {})]
    assert lines == [2, 3, 4]


@pytest.mark.parametrize("text", [
    # a secret read into a field of the wrong type must not be quoted back
    "sms:\n  - {name: a, kind: fake-gw, options: {endpoint: x, api_key: k, account: '${GW_KEY}'}}\n",
    "sms:\n  - {name: a, kind: fake-gw, priority: '${GW_KEY}', options: {endpoint: x, api_key: k}}\n",
    "sms:\n  - {name: a, kind: '${GW_KEY}', options: {endpoint: x, api_key: k}}\n",
])
def test_errors_never_show_a_value_from_the_environment(tmp_path: Path, text: str) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProvidersFileError) as caught:
        load_providers(path, {"GW_KEY": SECRET})
    assert caught.value.errors
    assert SECRET not in str(caught.value)


def test_checking_without_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert check_providers(path, {}, require_env=False) == []
    assert len(check_providers(path, {})) == 3  # GW_KEY is referenced three times


def test_unavailable_kinds_can_be_skipped_with_a_reason(tmp_path: Path) -> None:
    path = write(tmp_path, """
        sms:
          - {name: a, kind: not-built}
          - {name: b, kind: fake-gw, options: {endpoint: x, api_key: k}}
    """)
    skipped: list[str] = []
    specs = load_providers(path, {}, skip_unavailable=skipped.append)
    assert [s.name for s in specs] == ["b"]
    assert skipped == ["provider 'a' left out: provider kind 'not-built' is not installed "
                       "(no module channels.sms_nowhere)"]


def test_an_empty_file_has_no_providers(tmp_path: Path) -> None:
    assert load_providers(write(tmp_path, "# nothing yet\n"), {}) == []


def test_adapter_for_reports_unknown_kinds() -> None:
    assert adapter_for("fake-gw") is FakeGateway
    with pytest.raises(KindUnavailable, match="unknown provider kind 'nope'"):
        adapter_for("nope")


def test_cli_check_and_list_mask_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("GW_KEY", SECRET)
    runner = CliRunner()
    checked = runner.invoke(providers_cli, ["check", str(path)])
    assert checked.exit_code == 0, checked.output
    assert "3 provider(s) ok" in checked.output
    listed = runner.invoke(providers_cli, ["list", str(path)])
    assert listed.exit_code == 0, listed.output
    assert "gw-main" in listed.output and "api_key=**********" in listed.output
    assert "100/s burst 200" in listed.output
    assert SECRET not in listed.output
    monkeypatch.delenv("GW_KEY")
    failed = runner.invoke(providers_cli, ["check", str(path)])
    assert failed.exit_code == 1
    assert "environment variable GW_KEY is not set" in failed.output


ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_example_checks_without_its_secrets() -> None:
    assert check_providers(ROOT / "config" / "providers.example.yaml", {}, require_env=False) == []
    assert len(load_providers(ROOT / "config" / "providers.example.yaml", {}, require_env=False)) == 11


def test_the_demo_file_is_off_until_its_peers_run_and_then_loads() -> None:
    demo = ROOT / "config" / "providers.yaml"
    assert load_providers(demo, {}) == []
    on = {"SWITCHBOARD_DEMO_PEERS": "true", "SWITCHBOARD_DEMO_PUSH": "true",
          "SWITCHBOARD_DEMO_FCM_PRIVATE_KEY": "pem", "SWITCHBOARD_DEMO_APNS_PRIVATE_KEY": "pem",
          "SWITCHBOARD_DEMO_APNS_CA_FILE": "peer-ca.pem"}
    specs = load_providers(demo, on)
    assert {s.channel for s in specs} == {"sms", "push", "wechat_oa", "wechat_mp", "robot"}
    assert all(s.rate is not None and s.rate.burst >= 2 for s in specs)
    assert all("127.0.0.1:181" in str(s.options.model_dump()) for s in specs)  # only local peers

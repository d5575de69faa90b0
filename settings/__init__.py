"""Switchboard's settings: one per part, from the environment (prefix SWITCHBOARD_)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from settings import link_secret, secret_box
from settings.errors import SwitchboardError

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / ".var"
DEFAULT_MAX_EVENT_BYTES = 256 * 1024  # a quarter of Kafka's default 1 MB record limit

# `dev` and `test` may sign links with a key made on the spot; anything else must be given a real one.
Environment = Literal["production", "dev", "test"]
LOCAL_ENVIRONMENTS: frozenset[str] = frozenset({"dev", "test"})

# The URL schemes each part accepts, with an example for the error message.
_SCHEMES: dict[str, tuple[tuple[str, ...], str]] = {
    "kafka": (("kafka",), "kafka://127.0.0.1:19092"),
    "redis": (
        ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"),
        "redis://127.0.0.1:16379/0 or redis+cluster://10.0.0.1:6379,10.0.0.2:6379",
    ),
    "clickhouse": (("chdb", "http", "https"), "chdb:///srv/switchboard/clickhouse or http://host:8123"),
    "public_url": (("http", "https"), "https://notify.example.edu"),
}

__all__ = ["LOCAL_ENVIRONMENTS", "ROOT", "VAR", "Environment", "Settings", "SwitchboardError", "redact_url"]


def _cluster_nodes(nodes: str, example: str) -> None:
    """Each node of a Redis Cluster URL is host:port (the cluster client needs a port to start from)."""
    for node in nodes.split(","):
        host, _, port = node.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"Redis Cluster node {node!r} must be host:port, e.g. {example}")


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, fit for messages and logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if not password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@", 1)))


class Settings(BaseSettings):
    """Every setting comes from the environment (prefix SWITCHBOARD_); defaults are the local parts."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    env: Environment = Field(
        "production", description="production, or dev/test: may sign links with a key kept under var_dir"
    )
    kafka: str = Field("kafka://127.0.0.1:19092", description="Kafka-protocol bootstrap servers")
    redis: str = Field(
        "redis://127.0.0.1:16379/0",
        description="Redis URL; redis+cluster://host:port,... for a Redis Cluster",
    )
    clickhouse: str = Field(
        "", description="chdb:///path or http(s)://host:8123; default: chdb in var_dir/clickhouse"
    )
    rules: Path = Field(ROOT / "rules", description="rule file, or folder of rule files (*.yaml, by order:)")
    templates: Path = Field(ROOT / "templates", description="folder of message templates")
    var_dir: Path = Field(VAR, description="pid files, logs, link secret and data of the local parts")
    app_id: str = "switchboard"
    topic_prefix: str = ""
    partitions: int = 4
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 12525
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = False
    # Connections kept open to the relay: one SMTP transaction per connection at a time, so this bounds
    # the emails in flight; with 2, four round trips per message held a worker to ~100 emails/s.
    smtp_connections: int = Field(8, ge=1, le=64, description="SMTP connections kept open per worker")
    email_from: str = "Switchboard <noreply@switchboard.local>"
    webhook_secret: SecretStr = SecretStr("")
    providers: Path = Field(
        ROOT / "config" / "providers.yaml",
        description="channel providers, their priorities, limits and secrets",
    )
    sensitive_words: Path = Field(
        ROOT / "config" / "sensitive_words.txt", description="words to block or mask in every message"
    )
    public_url: str = Field(
        "http://127.0.0.1:18080", description="where recipients reach the API: tracking, unsubscribe links"
    )
    link_secret: SecretStr = Field(
        SecretStr(""),
        description="signs tracking and unsubscribe links; required outside dev/test (see signing_secret)",
    )
    webhook_allow: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    # Channel accounts (settings/secret_box.py, state/channel_accounts.py): their secrets' master keys.
    master_keys: SecretStr = Field(
        SecretStr(""), description="Fernet keys, newest first, comma-separated; required outside dev/test"
    )
    channel_account_quota: int = Field(10, ge=1, description="channel accounts allowed per channel type")
    # The analytics service (`switchboard analytics`) is the one process that writes ClickHouse; for the
    # embedded engine it also serves ClickHouse's HTTP interface here, for analysts and for
    # Switchboard's own reports.
    analytics_host: str = "127.0.0.1"
    analytics_port: int = Field(18123, description="the analytics service's ClickHouse HTTP interface")
    analytics_password: SecretStr = Field(
        SecretStr(""),
        description="password of the read-only `switchboard` user that Switchboard's own commands and "
        "the API read analytics as; required outside dev/test",
    )
    analytics_users: Path = Field(
        ROOT / "config" / "analytics_users.yaml", description="analysts of the HTTP interface, their limits"
    )
    attribution: Path = Field(
        ROOT / "config" / "attribution.yaml", description="conversion attribution per conversion type"
    )
    alerts: Path = Field(
        ROOT / "config" / "alerts.yaml",
        description="alert rules the worker evaluates and sends to on-call; a missing file turns alerts off",
    )
    # Prometheus /metrics: the worker and the analytics service serve it on their own port (0: off),
    # bound to metrics_host (loopback unless the scraper is elsewhere); the API serves it on its own
    # port to the networks of api_metrics_allow only.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(19100, ge=0, le=65535, description="the worker's /metrics port; 0: off")
    analytics_metrics_port: int = Field(
        19101, ge=0, le=65535, description="the analytics service's /metrics port; 0: off"
    )
    api_metrics_allow: list[str] = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"],
        description="networks that may read the API's /metrics; empty: /metrics is not served",
    )
    inbox_max_per_user: int = 200
    # Campaigns (docs/operators/campaigns.md): a campaign's inbox messages can be recalled for this long
    # after its last one arrived; a cancelled campaign is known to the stages for this many days.
    inbox_recall_seconds: int = Field(
        30 * 24 * 3600, gt=0, description="how long a campaign's inbox messages can be recalled"
    )
    campaign_cancel_days: int = Field(
        30, gt=0, description="how long the stages know a campaign was cancelled"
    )
    api_host: str = "127.0.0.1"
    api_port: int = 18080
    dedup_ttl_seconds: int = 7 * 24 * 3600
    # How long a send's claim holds if its worker dies mid-send; must outlast one send with its retries.
    send_claim_seconds: int = 600
    # Garbage collection and logging tuned for a long-running worker (processors/tuning.py); off only
    # to measure what the tuning is worth (bench/flow.py --no-tuning).
    runtime_tuning: bool = True
    # Events above this are refused by the API (413) and dead-lettered by ingest: an event is copied
    # into each of its deliveries and dispatches, which must stay well inside the broker's record limit.
    max_event_bytes: int = Field(
        DEFAULT_MAX_EVENT_BYTES, gt=0, description="largest event accepted, in bytes of its JSON"
    )
    # The largest body of every other API endpoint (batches, consent, callbacks); a batch's events each
    # keep max_event_bytes too.
    max_body_bytes: int = Field(1024 * 1024, gt=0, description="largest body of every other endpoint")
    # Uploaded recipient lists (api/uploads.py): the largest file (the request body of POST /v1/uploads;
    # 413 above it), how many row errors an upload's answer shows, and how many it keeps for
    # GET /v1/uploads/{id}/errors (the rest are counted only).
    upload_max_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="largest uploaded recipient list (CSV or XLSX), in bytes"
    )
    upload_errors_shown: int = Field(20, ge=0, le=1000, description="row errors in an upload's answer")
    upload_errors_kept: int = Field(
        100_000, ge=0, description="row errors kept per upload for GET /v1/uploads/{id}/errors"
    )

    # Consent (state/consent.py): categories that reach only people with a recorded opt-in (PIPL and
    # GDPR ask it for marketing), and test mode for every app (only whitelisted people receive anything).
    # (Checked against the categories by ConsentStore: settings sit below the records' vocabulary.)
    consent_opt_in: list[str] = Field(
        default_factory=lambda: ["marketing"],
        description="categories that need a recorded opt-in, as a JSON list",
    )
    test_mode: bool = Field(False, description="every app in test mode: only whitelisted people receive")

    # Broadcasts (`all`, tags, segments) are expanded by a worker timer a page at a time from a
    # cursor in Redis; an audience of at most one page is expanded at ingest directly.
    broadcast_page: int = Field(1000, gt=0, le=100_000, description="recipients per expansion page")
    broadcast_backlog: int = Field(
        20_000,
        gt=0,
        description="deliveries produced but not yet decided above which expansion waits: bounds the "
        "broker's backlog, so urgent work and other events never queue behind a whole broadcast",
    )
    broadcast_lease_seconds: float = Field(
        15.0, gt=0, description="how long a job stays with a worker that stopped renewing it (died)"
    )

    # Access (api/access.py, state/operators.py): failed authentication of any kind is counted per
    # source address; failed passwords per operator lock it out for a while. Windows are Redis's clock.
    access_failures_per_source: int = Field(
        20, ge=1, description="failed authentications from one address within the window before it is refused"
    )
    access_failure_window_seconds: int = Field(300, ge=1, description="window of the per-address count")
    access_operator_failures: int = Field(5, ge=1, description="failed passwords that lock an operator out")
    access_operator_window_seconds: int = Field(900, ge=1, description="window of the per-operator count")
    access_lockout_seconds: int = Field(900, ge=1, description="how long an operator stays locked out")
    access_session_idle_seconds: int = Field(
        1800, ge=60, description="a console session ends unused this long"
    )
    access_session_max_seconds: int = Field(
        43200, ge=60, description="a console session ends this long after login"
    )
    user_token_secret: SecretStr = Field(
        SecretStr(""), description="signs end-user tokens (`sbu_...`); required outside dev/test, >= 32 bytes"
    )
    events_signatures: Literal["required", "off"] = Field(
        "required", description="whether ingest requires each `events` record to be signed by its app's key"
    )

    @field_validator("kafka", "redis", "clickhouse", "public_url")
    @classmethod
    def _has_scheme(cls, value: str, info: ValidationInfo) -> str:
        name = str(info.field_name)
        schemes, example = _SCHEMES[name]
        if name == "clickhouse" and not value:
            return value  # filled in from var_dir below
        try:
            parts = urlsplit(value)
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc}); expected e.g. {example}") from None
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            wanted = " or ".join(f"{scheme}://" for scheme in schemes)
            raise ValueError(f"needs a {wanted} URL, e.g. {example}")
        if parts.scheme.endswith("+cluster"):
            _cluster_nodes(parts.netloc.rpartition("@")[2], example)
        return value

    @model_validator(mode="after")
    def _clickhouse_in_var_dir(self) -> Settings:
        # Derived here, not at import, so SWITCHBOARD_VAR_DIR moves the analytics data with everything else.
        if not self.clickhouse:
            self.clickhouse = f"chdb://{self.var_dir.absolute() / 'clickhouse'}"
        return self

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def signing_secret(self) -> SecretStr:
        """The key for tracking and unsubscribe links; SwitchboardError when there is none to trust."""
        return link_secret.signing_secret(
            self.link_secret, local=self.env in LOCAL_ENVIRONMENTS, var_dir=self.var_dir
        )

    def secret_box(self) -> secret_box.SecretBox:
        """The box channel secrets are sealed in; SwitchboardError when there is no usable master key."""
        keys = secret_box.master_keys(self.master_keys, local=self.env in LOCAL_ENVIRONMENTS,
                                      var_dir=self.var_dir)
        return secret_box.SecretBox(keys)

    def user_token_key(self) -> SecretStr:
        """The key end-user tokens are signed with; kept under var_dir in dev/test, required in production."""
        value = self.user_token_secret.get_secret_value()
        if value:
            if len(value.encode()) < 32:
                raise SwitchboardError("SWITCHBOARD_USER_TOKEN_SECRET is shorter than 32 bytes")
            return self.user_token_secret
        if self.env not in LOCAL_ENVIRONMENTS:
            raise SwitchboardError(
                "SWITCHBOARD_USER_TOKEN_SECRET is not set: end-user tokens need a key outside dev/test "
                "(e.g. `openssl rand -base64 48`)"
            )
        return SecretStr(link_secret.kept_secret(self.var_dir / "user_token_secret"))

    def reader_password(self) -> SecretStr:
        """The password of the built-in read-only `switchboard` analytics user; kept under var_dir in
        dev/test, required in production."""
        value = self.analytics_password.get_secret_value()
        if value:
            return self.analytics_password
        if self.env not in LOCAL_ENVIRONMENTS:
            raise SwitchboardError(
                "SWITCHBOARD_ANALYTICS_PASSWORD is not set: the read-only `switchboard` analytics user "
                "needs one outside dev/test (e.g. `openssl rand -base64 24`)"
            )
        return SecretStr(link_secret.kept_secret(self.var_dir / "analytics_password"))

    def to_env(self) -> dict[str, str]:
        """These settings as SWITCHBOARD_* variables, to hand to a child process."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"SWITCHBOARD_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
        return env

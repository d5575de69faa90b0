"""Switchboard's settings: one per part, from the environment (prefix SWITCHBOARD_)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / ".var"
DEFAULT_MAX_EVENT_BYTES = 256 * 1024  # a quarter of Kafka's default 1 MB record limit


class Settings(BaseSettings):
    """Every setting comes from the environment (prefix SWITCHBOARD_); defaults are the local parts."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    kafka: str = Field("kafka://127.0.0.1:19092", description="Kafka-protocol bootstrap servers")
    redis: str = Field("redis://127.0.0.1:16379/0", description="Redis URL")
    clickhouse: str = Field(f"chdb://{VAR / 'clickhouse'}", description="chdb:///path or http(s)://host:8123")
    rules: Path = Field(ROOT / "rules", description="rule file, or folder of rule files (*.yaml, by order:)")
    templates: Path = Field(ROOT / "templates", description="folder of message templates")
    var_dir: Path = Field(VAR, description="pid files, logs and data of the local parts")
    app_id: str = "switchboard"
    topic_prefix: str = ""
    partitions: int = 4
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 12525
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = False
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
        SecretStr("dev-only-link-secret-change-me"),
        description="signs tracking and unsubscribe links; set a long random value in production",
    )
    webhook_allow: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    inbox_max_per_user: int = 200
    api_host: str = "127.0.0.1"
    api_port: int = 18080
    web_port: int = 16066
    dedup_ttl_seconds: int = 7 * 24 * 3600
    # How long a send's claim holds if its worker dies mid-send; must outlast one send with its retries.
    send_claim_seconds: int = 600
    # Events above this are refused by the API (413) and dead-lettered by ingest: an event is copied
    # into each of its deliveries and dispatches, which must stay well inside the broker's record limit.
    max_event_bytes: int = Field(
        DEFAULT_MAX_EVENT_BYTES, gt=0, description="largest event accepted, in bytes of its JSON"
    )
    sink_batch_rows: int = 5000
    sink_flush_seconds: float = 0.5

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def to_env(self) -> dict[str, str]:
        """These settings as SWITCHBOARD_* variables, to hand to a child process."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"SWITCHBOARD_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
        return env

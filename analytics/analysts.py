"""Who may query the analytics service's ClickHouse HTTP interface, and within which limits.

Users come from `config/analytics_users.yaml` (setting `SWITCHBOARD_ANALYTICS_USERS`); passwords are kept
there only as a PBKDF2 hash or as the name of an environment variable, never in plain text. The built-in
read-only `switchboard` user, whose password is `settings.reader_password()`, is always present.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from analytics.connection import READER_USER
from settings.errors import SwitchboardError

HASH_SCHEME = "pbkdf2_sha256"
HASH_ITERATIONS = 310_000  # OWASP's figure for PBKDF2-HMAC-SHA256
_VERIFIED_CACHE_SIZE = 256


class AnalystsFileError(SwitchboardError, ValueError):
    """The analysts file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Analyst:
    """A user of the HTTP interface: read-only or not, and the limits the server applies to every query."""

    name: str
    readonly: bool = True
    max_execution_time: int = 60  # seconds; 0 means none
    max_result_rows: int = 0  # 0 means none
    max_result_bytes: int = 0  # 0 means none

    def limits(self) -> dict[str, str]:
        """The limits as ClickHouse settings, in the order the engine applies them."""
        limits = {
            "max_execution_time": str(self.max_execution_time),
            "max_result_rows": str(self.max_result_rows),
            "max_result_bytes": str(self.max_result_bytes),
        }
        # An overflow always fails the query: a silently cut result would mislead the analyst.
        limits["result_overflow_mode"] = "throw"
        limits["timeout_overflow_mode"] = "throw"
        return limits


class _AnalystEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    password_hash: SecretStr | None = Field(None, description="pbkdf2_sha256$iterations$salt$hash")
    password_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    readonly: bool = True
    max_execution_time: int = Field(60, ge=0)
    max_result_rows: int = Field(10_000_000, ge=0)
    max_result_bytes: int = Field(1 << 30, ge=0)

    @model_validator(mode="after")
    def _one_password(self) -> _AnalystEntry:
        if (self.password_hash is None) == (self.password_env is None):
            raise ValueError("give exactly one of password_hash or password_env")
        if self.password_hash is not None:
            _parse_hash(self.password_hash.get_secret_value())
        return self


class _AnalystsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    analysts: list[_AnalystEntry] = Field(default_factory=list)


def hash_password(password: str, iterations: int = HASH_ITERATIONS) -> str:
    """A PBKDF2-SHA256 hash of `password` to write into the analysts file as `password_hash`."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{HASH_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _parse_hash(value: str) -> tuple[int, bytes, bytes]:
    parts = value.split("$")
    if len(parts) != 4 or parts[0] != HASH_SCHEME:
        raise ValueError(f"password_hash must look like {HASH_SCHEME}$ITERATIONS$SALT$HASH")
    try:
        iterations = int(parts[1])
        salt, digest = base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3], validate=True)
    except ValueError:
        raise ValueError("password_hash has a non-numeric iteration count or bad base64") from None
    if iterations < 1 or not salt or not digest:
        raise ValueError("password_hash has no iterations, salt or digest")
    return iterations, salt, digest


@dataclass(frozen=True)
class _Credential:
    analyst: Analyst
    password: SecretStr | None = None  # compared directly (the built-in user, environment passwords)
    pbkdf2: tuple[int, bytes, bytes] | None = None


class Analysts:
    """The users of the HTTP interface; `authenticate` answers who a request is, or None."""

    def __init__(self, credentials: Mapping[str, _Credential]) -> None:
        self._credentials = dict(credentials)
        # PBKDF2 costs ~0.3 s by design and clients send the password with every request: remember
        # a successful check under a keyed digest (never the password) so only the first one pays.
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[bytes, None] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, path: Path, reader_password: SecretStr, environ: Mapping[str, str] | None = None
    ) -> Analysts:
        """The analysts of `path` (none if it does not exist) and the built-in read-only `switchboard`."""
        env = os.environ if environ is None else environ
        credentials: dict[str, _Credential] = {
            READER_USER: _Credential(
                Analyst(READER_USER, readonly=True, max_execution_time=600), password=reader_password
            )
        }
        for entry in _read_file(path):
            if entry.name in credentials:
                which = "the built-in user" if entry.name == READER_USER else "an earlier entry"
                raise AnalystsFileError(f"{path}: analyst {entry.name!r} is defined twice ({which})")
            analyst = Analyst(
                entry.name,
                readonly=entry.readonly,
                max_execution_time=entry.max_execution_time,
                max_result_rows=entry.max_result_rows,
                max_result_bytes=entry.max_result_bytes,
            )
            if entry.password_env is not None:
                value = env.get(entry.password_env, "")
                if not value:
                    raise AnalystsFileError(
                        f"{path}: analyst {entry.name!r} takes its password from ${entry.password_env}, "
                        "which is not set"
                    )
                credentials[entry.name] = _Credential(analyst, password=SecretStr(value))
            else:
                assert entry.password_hash is not None  # noqa: S101 -- the model requires one of the two
                credentials[entry.name] = _Credential(
                    analyst, pbkdf2=_parse_hash(entry.password_hash.get_secret_value())
                )
        return cls(credentials)

    def names(self) -> list[str]:
        return sorted(self._credentials)

    def authenticate(self, user: str, password: str) -> Analyst | None:
        """The analyst if `password` is theirs; None for an unknown user or a wrong password."""
        credential = self._credentials.get(user)
        if credential is None:
            return None
        if credential.password is not None:
            expected = credential.password.get_secret_value().encode()
            return credential.analyst if hmac.compare_digest(expected, password.encode()) else None
        assert credential.pbkdf2 is not None  # noqa: S101 -- every credential has one kind
        iterations, salt, digest = credential.pbkdf2
        token = hmac.digest(self._cache_key, b"\0".join((user.encode(), salt, password.encode())), "sha256")
        with self._lock:
            if token in self._verified:
                return credential.analyst
        if not hmac.compare_digest(
            hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations), digest
        ):
            return None
        with self._lock:
            if len(self._verified) >= _VERIFIED_CACHE_SIZE:
                self._verified.pop(next(iter(self._verified)))
            self._verified[token] = None
        return credential.analyst


def _read_file(path: Path) -> list[_AnalystEntry]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise AnalystsFileError(f"{path}: cannot read the analysts file: {exc}") from None
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AnalystsFileError(f"{path}: not valid YAML: {exc}") from None
    try:
        return _AnalystsFile.model_validate(raw or {}).analysts
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise AnalystsFileError(f"{path}: {problems}") from None

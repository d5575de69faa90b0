"""The key that signs tracking and unsubscribe links: a real one in production, never the published one.

Anyone holding the key can forge a link that unsubscribes a person or redirects anywhere, so a value
printed in any release (`PUBLISHED`) is refused everywhere, and production refuses to start without one.
On a development machine and in tests a random key is made once and kept under var_dir, so a worker
and an API started separately sign and verify with the same key.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from settings.errors import SwitchboardError

# Development defaults that shipped in a release; anyone can read them, so they sign nothing.
PUBLISHED: frozenset[str] = frozenset({"dev-only-link-secret-change-me"})
MIN_BYTES = 16
KEPT_FILE = "link_secret"
_HOW = "set SWITCHBOARD_LINK_SECRET to a long random value, e.g. `openssl rand -base64 32`"


def signing_secret(given: SecretStr, *, local: bool, var_dir: Path) -> SecretStr:
    """The secret to sign links with, or a SwitchboardError saying why there is none to trust."""
    value = given.get_secret_value()
    if value:
        check(value)
        return given
    if not local:
        raise SwitchboardError(
            "SWITCHBOARD_LINK_SECRET is not set, and links signed without it could be forged: "
            f"{_HOW} (or SWITCHBOARD_ENV=dev on a development machine)"
        )
    return SecretStr(kept_secret(var_dir / KEPT_FILE))


def check(value: str) -> None:
    """Refuse a published or short key; the message never repeats the key."""
    if value in PUBLISHED:
        raise SwitchboardError(
            f"SWITCHBOARD_LINK_SECRET is the published development value, so anyone could forge links: {_HOW}"
        )
    if len(value.encode()) < MIN_BYTES:
        raise SwitchboardError(f"SWITCHBOARD_LINK_SECRET is shorter than {MIN_BYTES} bytes: {_HOW}")


def kept_secret(path: Path) -> str:
    """A random secret kept at `path`, made at random the first time; two processes starting at once agree."""
    with contextlib.suppress(FileNotFoundError):
        return _read(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    try:
        os.link(scratch, path)  # fails if another process kept its key first: then that one wins
    except FileExistsError:
        pass
    finally:
        scratch.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> str:
    value = path.read_text().strip()
    if len(value.encode()) < MIN_BYTES:
        raise SwitchboardError(f"{path} holds no usable secret; delete it to have a new one made")
    return value

"""The secret box: channel credentials given through the API are kept encrypted at rest.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under MultiFernet: the first master key
of `SWITCHBOARD_MASTER_KEYS` encrypts, every listed key decrypts, so a new key goes first, stored
secrets are re-encrypted (`switchboard channels rotate-secrets`), and then the old key is dropped.
On a development machine and in tests one key is made once and kept under var_dir; production refuses
to start without the variable. No message here ever holds a key or a plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from settings.errors import SwitchboardError
from settings.link_secret import kept_secret

KEPT_FILE = "master_keys"
_HOW = ("set SWITCHBOARD_MASTER_KEYS to one or more Fernet keys, newest first, comma-separated; make one "
        "with `python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`")


class SecretBoxError(SwitchboardError):
    """Master keys that cannot be used, or a ciphertext none of them opens."""


class SecretBox:
    """Encrypts with the newest master key; decrypts with any of them."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretBoxError(f"no master key: {_HOW}")
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode()))
            except (ValueError, binascii.Error):
                # Name the position, never the value: a half-typed key is still most of a key.
                raise SecretBoxError(
                    f"SWITCHBOARD_MASTER_KEYS: key {position} of {len(keys)} is not a Fernet key "
                    f"(32 bytes, URL-safe base64): {_HOW}"
                ) from None
        self._box = MultiFernet(fernets)
        self._newest = fernets[0]
        self.key_count = len(fernets)

    def seal(self, plaintext: str) -> str:
        """The plaintext encrypted and authenticated under the newest key, as text."""
        return self._box.encrypt(plaintext.encode()).decode()

    def open(self, ciphertext: str, what: str) -> SecretStr:
        """The plaintext of `ciphertext`; `what` names the secret in the error if no key opens it."""
        try:
            return SecretStr(self._box.decrypt(ciphertext.encode()).decode())
        except InvalidToken:
            raise SecretBoxError(
                f"{what}: none of the {self.key_count} master key(s) opens it (a key was removed before "
                "`switchboard channels rotate-secrets` ran, or SWITCHBOARD_MASTER_KEYS is another "
                "deployment's); set the secret again or restore the old key"
            ) from None

    def is_newest(self, ciphertext: str) -> bool:
        """Whether `ciphertext` is sealed under the newest key (rotation skips those)."""
        try:
            self._newest.decrypt(ciphertext.encode())
        except InvalidToken:
            return False
        return True

    def reseal(self, ciphertext: str, what: str) -> str:
        """`ciphertext` sealed again under the newest key."""
        try:
            return self._box.rotate(ciphertext.encode()).decode()
        except InvalidToken:
            self.open(ciphertext, what)  # raises the error naming `what`
            raise


def master_keys(given: SecretStr, *, local: bool, var_dir: Path) -> list[str]:
    """The master keys, newest first: from the setting, else (dev/test only) one kept under var_dir."""
    value = given.get_secret_value().strip()
    if value:
        return [key.strip() for key in value.split(",") if key.strip()]
    if not local:
        raise SecretBoxError(f"SWITCHBOARD_MASTER_KEYS is not set, so channel secrets cannot be kept: {_HOW} "
                             "(or SWITCHBOARD_ENV=dev on a development machine)")
    # kept_secret keeps 32 random bytes as text; a Fernet key is 32 bytes in URL-safe base64.
    seed = hashlib.sha256(kept_secret(var_dir / KEPT_FILE).encode()).digest()
    return [base64.urlsafe_b64encode(seed).decode()]

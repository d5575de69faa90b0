"""The secret box: sealed with the newest master key, opened with any, errors that name no secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from settings import Settings
from settings.secret_box import SecretBox, SecretBoxError, master_keys

SECRET = "wx-app-secret-4f1c9a77e2"


def test_sealed_text_holds_no_fragment_of_the_secret_and_opens_again() -> None:
    box = SecretBox([Fernet.generate_key().decode()])
    sealed = box.seal(SECRET)
    assert all(SECRET[i:i + 6] not in sealed for i in range(len(SECRET) - 5))
    assert box.open(sealed, "account 'oa' secret 'secret'").get_secret_value() == SECRET
    assert box.seal(SECRET) != sealed  # a fresh nonce each time: equal secrets do not look equal


def test_a_new_key_first_seals_while_the_old_key_still_opens_then_reseal_frees_it() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed_old = SecretBox([old]).seal(SECRET)
    rotated = SecretBox([new, old])
    assert not rotated.is_newest(sealed_old)
    assert rotated.open(sealed_old, "x").get_secret_value() == SECRET
    resealed = rotated.reseal(sealed_old, "x")
    assert rotated.is_newest(resealed)
    assert SecretBox([new]).open(resealed, "x").get_secret_value() == SECRET


def test_a_removed_key_gives_an_error_naming_the_account_never_the_secret() -> None:
    sealed = SecretBox([Fernet.generate_key().decode()]).seal(SECRET)
    what = "channel account 'campus-oa' secret 'secret'"
    with pytest.raises(SecretBoxError, match=f"{what}: none of the 1") as caught:
        SecretBox([Fernet.generate_key().decode()]).open(sealed, what)
    assert SECRET not in str(caught.value) and sealed not in str(caught.value)


def test_a_malformed_key_is_named_by_position_not_by_value() -> None:
    bad = "not-a-fernet-key-but-secret-anyway"
    with pytest.raises(SecretBoxError, match="key 2 of 2 is not a Fernet key") as caught:
        SecretBox([Fernet.generate_key().decode(), bad])
    assert bad not in str(caught.value)


def test_production_refuses_to_start_without_master_keys(tmp_path: Path) -> None:
    with pytest.raises(SecretBoxError, match="SWITCHBOARD_MASTER_KEYS is not set"):
        Settings(var_dir=tmp_path, env="production").secret_box()


def test_dev_keeps_one_key_under_var_dir_so_worker_and_api_agree(tmp_path: Path) -> None:
    sealed = Settings(var_dir=tmp_path, env="dev").secret_box().seal(SECRET)
    again = Settings(var_dir=tmp_path, env="test").secret_box()
    assert again.open(sealed, "x").get_secret_value() == SECRET
    with pytest.raises(SecretBoxError):
        Settings(var_dir=tmp_path / "elsewhere", env="dev").secret_box().open(sealed, "x")


def test_keys_come_newest_first_from_the_setting(tmp_path: Path) -> None:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    keys = master_keys(SecretStr(f" {new} , {old},"), local=False, var_dir=tmp_path)
    assert keys == [new, old]

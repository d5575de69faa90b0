"""Channel accounts in real Redis: the quota, secrets sealed at rest and opened only for the worker,
rotation to a new master key, optimistic changes, and the app grants they add."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from settings.secret_box import SecretBox, SecretBoxError
from state.apps import AppRegistry, UnknownAppError
from state.channel_accounts import (
    AccountExistsError,
    ChannelAccount,
    ChannelAccountError,
    ChannelAccounts,
    QuotaFullError,
    UnknownAccountError,
)
from state.channel_grants import AppChannelGrants

SECRET = "9c1f0e7a5b3dQx84Lm2Zt7KpW"  # no word in it, so any fragment found is a leak
KEY_OLD, KEY_NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def account(code: str, kind: str = "wechat_oa", **fields: object) -> ChannelAccount:
    now = datetime.now(UTC)
    return ChannelAccount.model_validate({
        "code": code, "name": f"校园服务号 {code}", "type": kind,
        "platform": "wechat-oa" if kind == "wechat_oa" else "aliyun",
        "settings": {"appid": "wx5f3a1c9e2b7d4086"}, "created_at": now, "created_by": "x",
        "updated_at": now, "updated_by": "x", **fields,
    })


async def every_value(redis: Redis) -> str:
    """Every key and value in the database, as one text to search."""
    parts = []
    async for key in redis.scan_iter(match="*"):
        kind = await redis.type(key)
        if kind in (b"string", "string"):
            parts.append(f"{key!r} {await redis.get(key)!r}")
        elif kind in (b"set", "set"):
            parts.append(f"{key!r} {await redis.smembers(key)!r}")
        else:
            parts.append(f"{key!r} ({kind!r})")
    return "\n".join(parts)


async def test_redis_holds_only_ciphertext_and_only_the_worker_opens_it(redis: Redis) -> None:
    accounts = ChannelAccounts(redis, SecretBox([KEY_OLD]))
    created = await accounts.create(account("campus-oa"), {"secret": SECRET}, "alice")
    stored = await every_value(redis)
    assert "campus-oa" in stored and "wx5f3a1c9e2b7d4086" in stored
    assert all(SECRET[i:i + 6] not in stored for i in range(len(SECRET) - 5))
    assert created.secrets["secret"].updated_by == "alice"
    assert SECRET not in created.model_dump_json() and SECRET not in repr(created)
    assert (await accounts.secrets_of("campus-oa"))["secret"].get_secret_value() == SECRET
    assert SECRET not in repr(await accounts.live())


async def test_quota_per_type_in_the_requirements_words_and_codes_are_unique(redis: Redis) -> None:
    accounts = ChannelAccounts(redis, SecretBox([KEY_OLD]), quota=2)
    await accounts.create(account("oa-1"), {}, "alice")
    with pytest.raises(AccountExistsError, match="'oa-1' exists already"):
        await accounts.create(account("oa-1"), {}, "alice")
    results = await asyncio.gather(*(accounts.create(account(f"oa-{n}"), {}, "bob") for n in (2, 3, 4)),
                                   return_exceptions=True)
    refused = [r for r in results if isinstance(r, QuotaFullError)]
    assert len(refused) == 2  # two creates at once cannot both take the last place
    assert "创建数量已满, 请联系商务提高上限" in str(refused[0])
    assert "quota of wechat_oa accounts, 2" in str(refused[0])
    await accounts.create(account("sms-1", "sms"), {}, "alice")  # another type has its own quota
    taken = [a.code for a in await accounts.list("wechat_oa")]
    assert len(taken) == 2 and taken[0] == "oa-1"
    await accounts.delete(taken[1])
    await accounts.create(account("oa-5"), {}, "alice")  # a deleted account frees its place


async def test_rotation_reseals_under_the_new_key_so_the_old_one_can_go(redis: Redis) -> None:
    await ChannelAccounts(redis, SecretBox([KEY_OLD])).create(account("oa"), {"secret": SECRET}, "alice")
    before = await redis.get("sb:{chacc}:account:oa")
    rotating = ChannelAccounts(redis, SecretBox([KEY_NEW, KEY_OLD]))
    assert (await rotating.secrets_of("oa"))["secret"].get_secret_value() == SECRET
    assert (await rotating.rotate_secrets("root")).codes == ["oa"]
    assert (await rotating.rotate_secrets("root")).codes == []  # nothing left under the old key
    assert await redis.get("sb:{chacc}:account:oa") != before
    only_new = ChannelAccounts(redis, SecretBox([KEY_NEW]))
    assert (await only_new.secrets_of("oa"))["secret"].get_secret_value() == SECRET
    with pytest.raises(SecretBoxError, match="channel account 'oa' secret 'secret': none of the 1") as caught:
        await ChannelAccounts(redis, SecretBox([KEY_OLD])).secrets_of("oa")
    assert SECRET not in str(caught.value)
    # A rotation under keys that do not open an account leaves it and names it; the others go on.
    await only_new.create(account("oa-2"), {"secret": SECRET}, "alice")
    other = Fernet.generate_key().decode()
    done = await ChannelAccounts(redis, SecretBox([other, KEY_OLD])).rotate_secrets("root")
    assert done.codes == [] and set(done.unopened) == {"oa", "oa-2"}
    assert "channel account 'oa' secret 'secret': none of the 2" in done.unopened["oa"]
    assert SECRET not in str(done.unopened)


async def test_changes_keep_revisions_and_refuse_unknown_accounts_and_apps(redis: Redis) -> None:
    accounts = ChannelAccounts(redis, SecretBox([KEY_OLD]))
    await accounts.create(account("oa"), {}, "alice")
    before, after = await accounts.update("oa", "bob", enabled=True, priority=3)
    assert (before.enabled, after.enabled, after.priority, after.updated_by) == (False, True, 3, "bob")
    assert after.revision == before.revision + 1
    with pytest.raises(ChannelAccountError, match="account 'oa': priority: Input should be greater"):
        await accounts.update("oa", "bob", priority=-1)
    with pytest.raises(UnknownAccountError, match="no channel account with code 'nope'"):
        await accounts.update("nope", "bob", enabled=True)
    with pytest.raises(UnknownAppError, match="no app named 'ghost'"):
        await accounts.authorise("oa", "ghost", "bob")


async def test_an_enabled_account_widens_the_channels_of_the_apps_it_authorises(redis: Redis) -> None:
    registry = AppRegistry(redis)
    await registry.register("bursar", ["email"])
    await registry.register("library", ["email"])
    accounts = ChannelAccounts(redis, SecretBox([KEY_OLD]))
    await accounts.create(account("oa", enabled=True), {}, "alice")
    await accounts.authorise("oa", "bursar", "alice")
    grants = AppChannelGrants(registry, accounts, cache_seconds=0)
    assert (await grants.get("bursar")).channels == {"email", "wechat_oa"}  # type: ignore[union-attr]
    assert (await grants.get("library")).channels == {"email"}  # type: ignore[union-attr]
    await accounts.update("oa", "alice", enabled=False)
    assert (await grants.get("bursar")).channels == {"email"}  # type: ignore[union-attr]
    assert await grants.get("ghost") is None

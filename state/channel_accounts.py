"""Downstream channel accounts (通道账号): a WeChat official account, an SMS signature... managed
through the API beside the providers file, with their secrets sealed and write-only.

Redis layout, one hash tag `{chacc}` (a handful of records changed together): `sb:{chacc}:account:{code}`
JSON of the account with its secrets as ciphertexts; `sb:{chacc}:codes` every code;
`sb:{chacc}:type:{type}` the codes of one channel type (the quota counts it). A secret's plaintext is
never stored, returned by a listing, or logged: only `LiveAccount.secrets` (and `secrets_of`) open
them, for the worker.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError
from redis.asyncio import Redis

from records.topics import Name
from settings.errors import SwitchboardError
from settings.secret_box import SecretBox, SecretBoxError
from state.apps import AppRegistry, UnknownAppError

_ACCOUNT = "sb:{{chacc}}:account:{}"
_CODES = "sb:{chacc}:codes"
_TYPE = "sb:{{chacc}}:type:{}"

# The channel types an account can serve: those of the providers file (email, inbox and webhook are
# configured by the settings).
AccountType = Literal["sms", "push", "wechat_oa", "wechat_mp", "robot"]
ACCOUNT_TYPES: tuple[AccountType, ...] = get_args(AccountType)
# A code is the route's provider name in receipts, so it has the providers file's shape.
AccountCode = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
]
SettingValue = str | int | float | bool | None
MAX_SECRET_CHARS = 8192
QUOTA_FULL = ("创建数量已满, 请联系商务提高上限 "
              "(the quota of {type} accounts, {quota}, is used up: ask to raise it)")

# Create unless the code is taken or the type's quota is used up: one step, so two creates cannot
# both take the last place.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[3]) then return -2 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""
# Replace the record only if nobody changed it since it was read (its revision).
_REPLACE = """
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if cjson.decode(current)['revision'] ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


class ChannelAccountError(SwitchboardError, ValueError):
    """A request about accounts that cannot be done; the message says why and never holds a secret."""


class UnknownAccountError(ChannelAccountError, LookupError):
    """No account has that code."""


class AccountExistsError(ChannelAccountError):
    """The code is taken."""


class QuotaFullError(ChannelAccountError):
    """The channel type has as many accounts as the quota allows."""


class AccountRate(BaseModel):
    """Sustained sends per second, and how many may go at once after a quiet spell."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_second: float = Field(gt=0)
    burst: float = Field(ge=1)


class SecretState(BaseModel):
    """What is shown of a secret: whether it is set and when; never its value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    set: bool = True
    updated_at: datetime
    updated_by: str


class ChannelAccount(BaseModel):
    """An account as shown to operators: settings in the clear, secrets only as `SecretState`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: AccountCode
    name: str = Field(min_length=1, max_length=128)
    type: AccountType
    platform: str
    """The adapter kind (channels.kinds.KINDS): aliyun, tencent, jpush, fcm, apns, wechat-oa, dingtalk..."""
    settings: dict[str, SettingValue] = Field(default_factory=dict)
    secrets: dict[str, SecretState] = Field(default_factory=dict)
    enabled: bool = False
    apps: frozenset[Annotated[str, Name]] = frozenset()
    """The upstream apps authorised to send through it (下发通道); none until one is authorised."""
    priority: int = Field(0, ge=0)
    cost_per_message: float | None = Field(None, ge=0)
    rate: AccountRate | None = None
    """This account's allowed rate (a token bucket shared by the workers); None: unlimited."""
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    revision: int = 1


class _Stored(ChannelAccount):
    sealed: dict[str, str] = Field(default_factory=dict)
    """Secret name -> ciphertext (secret_box)."""


@dataclass(frozen=True)
class Resealed:
    """What a rotation did: the accounts resealed, and those none of the master keys opens (why)."""

    codes: builtins.list[str]
    unopened: dict[str, str]


@dataclass(frozen=True)
class LiveAccount:
    """An enabled account for the worker; its secrets stay sealed until `secrets()` is asked."""

    account: ChannelAccount
    sealed: Mapping[str, str] = field(repr=False)
    box: SecretBox = field(repr=False)

    def secrets(self) -> dict[str, SecretStr]:
        """The secrets opened; SecretBoxError naming the account and secret if no master key opens one."""
        code = self.account.code
        return {name: self.box.open(text, f"channel account {code!r} secret {name!r}")
                for name, text in self.sealed.items()}


class ChannelAccounts:
    """Creates, changes and lists channel accounts; seals and opens their secrets."""

    def __init__(self, redis: Redis, box: SecretBox, quota: int = 10) -> None:
        self._redis = redis
        self._box = box
        self._quota = quota
        self._create = redis.register_script(_CREATE)
        self._replace = redis.register_script(_REPLACE)

    async def create(self, account: ChannelAccount, secrets: Mapping[str, str], actor: str) -> ChannelAccount:
        """Store a new account with its secrets sealed; refuse a taken code or a full quota."""
        now = datetime.now(UTC)
        stored = _Stored.model_validate({
            **account.model_dump(), "created_at": now, "created_by": actor, "updated_at": now,
            "updated_by": actor, "revision": 1, "secrets": {}, "sealed": {},
        })
        stored = self._with_secrets(stored, secrets, actor, now)
        answer = await self._create(
            keys=[_ACCOUNT.format(stored.code), _CODES, _TYPE.format(stored.type)],
            args=[stored.code, stored.model_dump_json(), self._quota],
        )
        if answer == -1:
            raise AccountExistsError(f"a channel account with code {stored.code!r} exists already")
        if answer == -2:
            raise QuotaFullError(QUOTA_FULL.format(type=stored.type, quota=self._quota))
        return _public(stored)

    async def get(self, code: str) -> ChannelAccount:
        return _public(await self._stored(code))

    async def list(self, account_type: str | None = None) -> list[ChannelAccount]:
        """Every account (of one type), by code."""
        return [_public(stored) for stored in await self._all(account_type)]

    async def update(self, code: str, actor: str, **changes: Any) -> tuple[ChannelAccount, ChannelAccount]:
        """Change plain fields (name, settings, enabled, apps, priority, cost_per_message, rate);
        (before, after)."""
        allowed = {"name", "settings", "enabled", "apps", "priority", "cost_per_message", "rate"}
        unknown = set(changes) - allowed
        if unknown:
            raise ChannelAccountError(f"cannot change {', '.join(sorted(unknown))} of an account")

        def change(stored: _Stored) -> _Stored:
            # Validated as a whole, so a change given as plain data (the API's) becomes typed fields.
            try:
                return _Stored.model_validate({**stored.model_dump(), **changes})
            except ValidationError as exc:
                wrong = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ChannelAccountError(f"account {code!r}: {wrong}") from None

        return await self._change(code, actor, change)

    async def granted(self, app: str) -> frozenset[str]:
        """The channel types of the enabled accounts that authorise `app`."""
        return frozenset(stored.type for stored in await self._all(None)
                         if stored.enabled and app in stored.apps)

    async def authorise(self, code: str, app: str, actor: str) -> tuple[ChannelAccount, ChannelAccount]:
        """Let the registered app `app` send through the account; (before, after)."""
        if await AppRegistry(self._redis).get(app) is None:
            raise UnknownAppError(f"no app named {app!r} is registered")
        return await self._change(
            code, actor, lambda stored: stored.model_copy(update={"apps": stored.apps | {app}})
        )

    async def unauthorise(self, code: str, app: str, actor: str) -> tuple[ChannelAccount, ChannelAccount]:
        """Stop `app` sending through the account (nothing changes if it could not); (before, after)."""
        return await self._change(
            code, actor, lambda stored: stored.model_copy(update={"apps": stored.apps - {app}})
        )

    async def set_secret(self, code: str, name: str, value: str, actor: str) -> tuple[ChannelAccount,
                                                                                       ChannelAccount]:
        """Seal `value` as the account's secret `name` (set or replace it); (before, after)."""
        now = datetime.now(UTC)
        return await self._change(
            code, actor, lambda stored: self._with_secrets(stored, {name: value}, actor, now)
        )

    async def clear_secret(self, code: str, name: str, actor: str) -> tuple[ChannelAccount, ChannelAccount]:
        def clear(stored: _Stored) -> _Stored:
            if name not in stored.sealed:
                raise ChannelAccountError(f"account {code!r} has no secret {name!r} set")
            return stored.model_copy(update={
                "sealed": {k: v for k, v in stored.sealed.items() if k != name},
                "secrets": {k: v for k, v in stored.secrets.items() if k != name},
            })
        return await self._change(code, actor, clear)

    async def delete(self, code: str) -> ChannelAccount:
        stored = await self._stored(code)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(_ACCOUNT.format(code))
            pipe.srem(_CODES, code)
            pipe.srem(_TYPE.format(stored.type), code)
            await pipe.execute()
        return _public(stored)

    async def secrets_of(self, code: str) -> dict[str, SecretStr]:
        """The account's secrets opened: for the worker that sends through it, nobody else."""
        stored = await self._stored(code)
        return LiveAccount(_public(stored), stored.sealed, self._box).secrets()

    async def live(self) -> builtins.list[LiveAccount]:
        """Every enabled account, its secrets opened on demand (`LiveAccount.secrets`)."""
        return [LiveAccount(_public(stored), stored.sealed, self._box)
                for stored in await self._all(None) if stored.enabled]

    async def rotate_secrets(self, actor: str) -> Resealed:
        """Reseal every secret not sealed under the newest master key. An account no listed key opens is
        left as it is and named in `Resealed.unopened`: the others are still resealed."""
        changed, unopened = [], {}
        for stored in await self._all(None):
            stale = {name: text for name, text in stored.sealed.items() if not self._box.is_newest(text)}
            if not stale:
                continue

            def reseal(current: _Stored) -> _Stored:
                what = f"channel account {current.code!r} secret"
                return current.model_copy(update={"sealed": {
                    name: text if self._box.is_newest(text) else self._box.reseal(text, f"{what} {name!r}")
                    for name, text in current.sealed.items()
                }})
            try:
                await self._change(stored.code, actor, reseal, touch=False)
            except SecretBoxError as exc:
                unopened[stored.code] = str(exc)
                continue
            changed.append(stored.code)
        return Resealed(changed, unopened)

    def _with_secrets(self, stored: _Stored, secrets: Mapping[str, str], actor: str,
                      now: datetime) -> _Stored:
        for name, value in secrets.items():
            if not isinstance(value, str) or not value:
                raise ChannelAccountError(
                    f"secret {name!r} of account {stored.code!r} must be non-empty text"
                )
            if len(value) > MAX_SECRET_CHARS:
                raise ChannelAccountError(f"secret {name!r} of account {stored.code!r} is longer than "
                                          f"{MAX_SECRET_CHARS} characters")
        return stored.model_copy(update={
            "sealed": {**stored.sealed, **{name: self._box.seal(value) for name, value in secrets.items()}},
            "secrets": {**stored.secrets,
                        **{name: SecretState(updated_at=now, updated_by=actor) for name in secrets}},
        })

    async def _change(self, code: str, actor: str, change: Callable[[_Stored], _Stored],
                      *, touch: bool = True) -> tuple[ChannelAccount, ChannelAccount]:
        for _ in range(10):
            stored = await self._stored(code)
            changed = _Stored.model_validate(change(stored).model_dump())  # validates the changes
            if touch:
                changed = changed.model_copy(update={"updated_at": datetime.now(UTC), "updated_by": actor})
            changed = changed.model_copy(update={"revision": stored.revision + 1})
            answer = await self._replace(keys=[_ACCOUNT.format(code)],
                                         args=[stored.revision, changed.model_dump_json()])
            if answer == 1:
                return _public(stored), _public(changed)
            if answer == -1:
                break
        else:
            raise ChannelAccountError(f"account {code!r} keeps changing under this request; try again")
        raise UnknownAccountError(f"no channel account with code {code!r}")

    async def _stored(self, code: str) -> _Stored:
        raw = await self._redis.get(_ACCOUNT.format(code))
        if raw is None:
            raise UnknownAccountError(f"no channel account with code {code!r}")
        return _Stored.model_validate_json(raw)

    async def _all(self, account_type: str | None) -> builtins.list[_Stored]:
        key = _CODES if account_type is None else _TYPE.format(account_type)
        codes = sorted(_text(code) for code in await self._redis.smembers(key))
        if not codes:
            return []
        raws = await self._redis.mget([_ACCOUNT.format(code) for code in codes])
        return [_Stored.model_validate_json(raw) for raw in raws if raw is not None]


def _public(stored: _Stored) -> ChannelAccount:
    return ChannelAccount.model_validate(stored.model_dump(exclude={"sealed"}))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


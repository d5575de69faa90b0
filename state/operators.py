"""Operators: the people who run Switchboard. Each has a name, a password (argon2id), grants (a role
over a scope of apps), a state (active, locked, disabled), personal API tokens and console sessions.

Redis layout, all under the `{ops}` hash tag (one slot, so a change is one transaction):
- `sb:{ops}:op:{name}` JSON of the operator with its password hash; `sb:{ops}:names` set of names;
- `sb:{ops}:token:{sha256}` JSON {operator, token_id} of a personal API token (`sbo_...`), found by the
  SHA-256 of the token alone; `sb:{ops}:tokens:{name}` hash token_id → JSON {label, created_at, sha256};
  `sb:{ops}:used:{name}` hash token_id → last use (ISO time);
- `sb:{ops}:session:{sha256}` the operator's name, expiring after the idle time and refreshed on each
  use, beside `sb:{ops}:session_end:{sha256}` expiring at the absolute end: both Redis's own clock.
Tokens are 256 random bits, so a plain SHA-256 is enough to store them; passwords are not, so argon2id.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_serializer
from redis.asyncio import Redis

from records.topics import Name
from settings.errors import SwitchboardError
from settings.permissions import ALL_APPS, Grant, Principal
from state.roles import RoleStore, UnknownRoleError, suggestion

# The built-in role that can always undo a mistake: at least one active operator keeps it over every app.
ADMINISTRATOR = "administrator"

TOKEN_PREFIX = "sbo_"  # noqa: S105  # a prefix, not a secret
SESSION_PREFIX = "sbs_"
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
_OP = "sb:{{ops}}:op:{}"
_NAMES = "sb:{ops}:names"
_TOKEN = "sb:{{ops}}:token:{}"  # noqa: S105  # a key name
_TOKENS = "sb:{{ops}}:tokens:{}"
_USED = "sb:{{ops}}:used:{}"
_SESSION = "sb:{{ops}}:session:{}"
_SESSION_END = "sb:{{ops}}:session_end:{}"

OperatorState = Literal["active", "locked", "disabled"]
Locale = Literal["zh", "en"]


class OperatorError(SwitchboardError, ValueError):
    """An operator that cannot be made or changed as asked (the message says what and why)."""


class UnknownOperatorError(SwitchboardError, LookupError):
    """No operator of that name."""


class OperatorExistsError(OperatorError):
    """The name is taken."""


class LastAdministratorError(OperatorError):
    """The change would leave no active administrator over every app, and nobody to undo it."""


class PasswordPolicyError(OperatorError):
    """A password the policy refuses (the message says why, never repeats the password)."""


class OperatorGrant(BaseModel):
    """A role over a scope of apps (`*`: every app, present and future)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str = Field(min_length=1, max_length=64)
    apps: frozenset[str] = frozenset({ALL_APPS})

    @field_serializer("apps")
    def _sorted(self, apps: frozenset[str]) -> list[str]:
        return sorted(apps)

    @classmethod
    def parse(cls, spec: str) -> OperatorGrant:
        """`role` (over every app) or `role@app1,app2`."""
        role, _, scope = spec.partition("@")
        apps = frozenset(a.strip() for a in scope.split(",") if a.strip()) if scope else frozenset({ALL_APPS})
        if not role.strip() or not apps:
            raise OperatorError(f"grant {spec!r} must be `role` or `role@app1,app2`")
        return cls(role=role.strip(), apps=apps)

    def __str__(self) -> str:
        return self.role if self.apps == {ALL_APPS} else f"{self.role}@{','.join(sorted(self.apps))}"


class Operator(BaseModel):
    """An operator as shown: never the password hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    display_name: str = Field("", max_length=200)
    email: str = Field("", max_length=320)
    user_id: str | None = Field(
        None, max_length=128, description="this operator in the user directory, to reach them on its channels"
    )
    locale: Locale = "zh"
    grants: tuple[OperatorGrant, ...] = ()
    state: OperatorState = "active"
    created_at: AwareDatetime


class TokenInfo(BaseModel):
    """A personal API token as listed: never the token or its hash."""

    token_id: str
    label: str
    created_at: AwareDatetime
    last_used_at: AwareDatetime | None = None


def check_password(name: str, password: str) -> None:
    """The policy: 12 to 1024 characters, not containing the operator's name."""
    if len(password) < MIN_PASSWORD:
        raise PasswordPolicyError(f"the password must be at least {MIN_PASSWORD} characters long")
    if len(password) > MAX_PASSWORD:
        raise PasswordPolicyError(f"the password must be at most {MAX_PASSWORD} characters long")
    if name.lower() in password.lower():
        raise PasswordPolicyError("the password must not contain the operator's name")


class OperatorStore:
    """Operators, their grants, passwords, tokens and sessions in Redis."""

    def __init__(
        self,
        redis: Redis,
        roles: RoleStore | None = None,
        hasher: PasswordHasher | None = None,
        session_idle_seconds: int = 30 * 60,
        session_max_seconds: int = 12 * 3600,
    ) -> None:
        self._redis = redis
        self.roles = roles if roles is not None else RoleStore(redis)
        # argon2-cffi's defaults are argon2id at RFC 9106's low-memory profile; tests pass cheaper ones.
        self._hasher = hasher if hasher is not None else PasswordHasher()
        self._dummy_hash: str | None = None
        self.session_idle_seconds = session_idle_seconds
        self.session_max_seconds = session_max_seconds

    # -- operators ---------------------------------------------------------------------------------

    async def create(
        self,
        name: str,
        password: str,
        grants: Iterable[OperatorGrant | str] = (),
        *,
        display_name: str = "",
        email: str = "",
        user_id: str | None = None,
        locale: Locale = "zh",
    ) -> Operator:
        """A new active operator; OperatorExistsError if the name is taken."""
        check_password(name, password)
        checked = await self._checked_grants(grants)
        try:
            operator = Operator(
                name=name, display_name=display_name, email=email, user_id=user_id, locale=locale,
                grants=checked, created_at=datetime.now(UTC),
            )
        except ValidationError as exc:
            raise OperatorError(_first_error(exc)) from None
        record = {**operator.model_dump(mode="json"), "password_hash": await self._hash(password)}
        if not await self._redis.set(_OP.format(name), json.dumps(record), nx=True):
            raise OperatorExistsError(f"operator {name!r} already exists")
        await self._redis.sadd(_NAMES, name)
        return operator

    async def get(self, name: str) -> Operator:
        return _operator(await self._record(name))

    async def find(self, name: str) -> Operator | None:
        raw = await self._redis.get(_OP.format(name))
        return _operator(json.loads(raw)) if raw is not None else None

    async def list(self) -> builtins.list[Operator]:
        names = sorted(_text(n) for n in await self._redis.smembers(_NAMES))
        found = [await self.find(name) for name in names]
        return [operator for operator in found if operator is not None]

    async def update(self, name: str, **changes: object) -> tuple[Operator, Operator]:
        """Change profile fields (display_name, email, user_id, locale); returns (before, after)."""
        allowed = {"display_name", "email", "user_id", "locale"}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise OperatorError(
                f"cannot change {', '.join(unknown)} here; changeable: {', '.join(sorted(allowed))}"
            )
        return await self._change(name, changes)

    async def set_state(self, name: str, state: OperatorState) -> tuple[Operator, Operator]:
        """Lock (until unlocked), disable, or make active again; locking or disabling ends every session."""
        if state != "active":
            await self._keep_an_administrator(name, f"{'lock' if state == 'locked' else 'disable'} {name!r}")
        before, after = await self._change(name, {"state": state})
        if state != "active":
            await self.end_sessions(name)
        return before, after

    async def grant(self, name: str, grant: OperatorGrant | str) -> tuple[Operator, Operator]:
        """Add a role over apps; the same role again widens its scope to the union."""
        [new] = await self._checked_grants([grant])
        current = await self.get(name)
        grants = [g for g in current.grants if g.role != new.role]
        old = next((g for g in current.grants if g.role == new.role), None)
        apps = new.apps if old is None else old.apps | new.apps
        grants.append(OperatorGrant(role=new.role, apps=frozenset({ALL_APPS}) if ALL_APPS in apps else apps))
        return await self._change(name, {"grants": [g.model_dump(mode="json") for g in grants]})

    async def revoke(
        self, name: str, role: str, apps: Iterable[str] | None = None
    ) -> tuple[Operator, Operator]:
        """Take a role away (over `apps` only, or entirely when None)."""
        current = await self.get(name)
        held = next((g for g in current.grants if g.role == role), None)
        if held is None:
            roles = [g.role for g in current.grants]
            raise OperatorError(f"operator {name!r} holds no role {role!r}{suggestion(role, roles)}")
        left = frozenset() if apps is None else held.apps - frozenset(apps)
        if role == ADMINISTRATOR and ALL_APPS in held.apps and ALL_APPS not in left:
            await self._keep_an_administrator(name, f"revoke administrator over every app from {name!r}")
        grants = [g for g in current.grants if g.role != role]
        if left:
            grants.append(OperatorGrant(role=role, apps=left))
        return await self._change(name, {"grants": [g.model_dump(mode="json") for g in grants]})

    async def holders(self, role: str) -> builtins.list[str]:
        """The operators who hold `role`."""
        return [op.name for op in await self.list() if any(g.role == role for g in op.grants)]

    async def remove(self, name: str) -> Operator:
        """Forget the operator, its tokens and sessions."""
        operator = await self.get(name)
        await self._keep_an_administrator(name, f"remove {name!r}")
        await self.end_sessions(name)
        tokens = await self._redis.hgetall(_TOKENS.format(name))
        async with self._redis.pipeline(transaction=True) as pipe:
            for meta in tokens.values():
                pipe.delete(_TOKEN.format(json.loads(meta)["sha256"]))
            pipe.delete(_OP.format(name), _TOKENS.format(name), _USED.format(name))
            pipe.srem(_NAMES, name)
            await pipe.execute()
        return operator

    async def _keep_an_administrator(self, name: str, what: str) -> None:
        """Refuse a change that takes `name` out of the administrators when nobody else is one: with no
        active administrator over every app, no one could grant roles or undo the change but a shell.
        (Two such changes racing can both pass; the shell's `operators add` remains the way back.)"""
        operators = await self.list()
        if not any(op.name == name and _full_administrator(op) for op in operators):
            return
        if not any(op.name != name and _full_administrator(op) for op in operators):
            raise LastAdministratorError(
                f"cannot {what}: they are the last active administrator over every app; "
                "make another operator an administrator first"
            )

    async def principal(self, operator: Operator) -> Principal:
        """The operator as a request acts: each grant with its role's permissions as they are now."""
        permissions = await self.roles.permissions_of(g.role for g in operator.grants)
        grants = tuple(Grant(g.role, permissions.get(g.role, frozenset()), g.apps) for g in operator.grants)
        return Principal(kind="operator", name=operator.name, grants=grants,
                         roles=tuple(g.role for g in operator.grants))

    # -- passwords ---------------------------------------------------------------------------------

    async def verify_password(self, name: str, password: str) -> Operator | None:
        """The operator if `password` is theirs (rehashed when the hasher's parameters changed), else
        None. An unknown name costs the same hashing time, so timing does not tell names apart."""
        raw = await self._redis.get(_OP.format(name))
        if raw is None:
            await asyncio.to_thread(self._verify, self._dummy(), password)
            return None
        record = json.loads(raw)
        stored = str(record["password_hash"])
        if not await asyncio.to_thread(self._verify, stored, password):
            return None
        if self._hasher.check_needs_rehash(stored):
            record["password_hash"] = await self._hash(password)
            await self._redis.set(_OP.format(name), json.dumps(record), xx=True)
        return _operator(record)

    async def set_password(self, name: str, password: str) -> None:
        """A new password (after the policy); ends every session of the operator."""
        check_password(name, password)
        record = await self._record(name)
        record["password_hash"] = await self._hash(password)
        await self._redis.set(_OP.format(name), json.dumps(record), xx=True)
        await self.end_sessions(name)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    # -- personal API tokens -----------------------------------------------------------------------

    async def issue_token(self, name: str, label: str = "") -> str:
        """A new personal API token (`sbo_...`); shown this once, only its SHA-256 is kept."""
        token, _ = await self.issue_token_with_id(name, label)
        return token

    async def issue_token_with_id(self, name: str, label: str = "") -> tuple[str, str]:
        """A new personal API token and its id (by which it is listed and revoked)."""
        await self.get(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest, token_id = _digest(token), "tok_" + secrets.token_hex(6)
        meta = {"label": label[:100], "created_at": datetime.now(UTC).isoformat(), "sha256": digest}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(_TOKEN.format(digest), json.dumps({"operator": name, "token_id": token_id}))
            pipe.hset(_TOKENS.format(name), token_id, json.dumps(meta))
            await pipe.execute()
        return token, token_id

    async def tokens(self, name: str) -> builtins.list[TokenInfo]:
        await self.get(name)
        metas = await self._redis.hgetall(_TOKENS.format(name))
        used = await self._redis.hgetall(_USED.format(name))
        found = [
            TokenInfo(token_id=_text(token_id), label=meta["label"], created_at=meta["created_at"],
                      last_used_at=_text(used[token_id]) if token_id in used else None)
            for token_id, meta in ((k, json.loads(v)) for k, v in metas.items())
        ]
        return sorted(found, key=lambda t: t.created_at)

    async def revoke_token(self, name: str, token_id: str) -> None:
        raw = await self._redis.hget(_TOKENS.format(name), token_id)
        if raw is None:
            raise UnknownOperatorError(f"operator {name!r} has no token {token_id!r}")
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(_TOKEN.format(json.loads(raw)["sha256"]))
            pipe.hdel(_TOKENS.format(name), token_id)
            pipe.hdel(_USED.format(name), token_id)
            await pipe.execute()

    async def authenticate_token(self, token: str) -> Operator | None:
        """The active operator holding this personal token or session, else None."""
        if token.startswith(SESSION_PREFIX):
            return await self._session_operator(token)
        if not token.startswith(TOKEN_PREFIX):
            return None
        raw = await self._redis.get(_TOKEN.format(_digest(token)))
        if raw is None:
            return None
        entry = json.loads(raw)
        operator = await self.find(entry["operator"])
        if operator is None or operator.state != "active":
            return None
        await self._redis.hset(_USED.format(operator.name), entry["token_id"], datetime.now(UTC).isoformat())
        return operator

    # -- sessions ----------------------------------------------------------------------------------

    async def start_session(self, name: str) -> str:
        """A console session token (`sbs_...`): ends after the idle time without use, or at the
        absolute end, whichever comes first. Only its SHA-256 is kept."""
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        digest = _digest(token)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(_SESSION.format(digest), name, ex=self.session_idle_seconds)
            pipe.set(_SESSION_END.format(digest), name, ex=self.session_max_seconds)
            pipe.sadd(_sessions_of(name), digest)
            pipe.expire(_sessions_of(name), self.session_max_seconds)
            await pipe.execute()
        return token

    async def end_session(self, token: str) -> None:
        digest = _digest(token)
        name = await self._redis.get(_SESSION_END.format(digest))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(_SESSION.format(digest), _SESSION_END.format(digest))
            if name is not None:
                pipe.srem(_sessions_of(_text(name)), digest)
            await pipe.execute()

    async def end_sessions(self, name: str) -> None:
        digests = [_text(d) for d in await self._redis.smembers(_sessions_of(name))]
        if digests:
            keys = [key.format(d) for d in digests for key in (_SESSION, _SESSION_END)]
            await self._redis.delete(*keys, _sessions_of(name))

    async def _session_operator(self, token: str) -> Operator | None:
        digest = _digest(token)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(_SESSION.format(digest))
            pipe.ttl(_SESSION_END.format(digest))
            name, left = await pipe.execute()
        if name is None or int(left) <= 0:
            return None
        operator = await self.find(_text(name))
        if operator is None or operator.state != "active":
            return None
        # Idle time starts again, but never past the absolute end (both counted by Redis).
        await self._redis.expire(_SESSION.format(digest), min(self.session_idle_seconds, int(left)))
        return operator

    # -- internals ---------------------------------------------------------------------------------

    async def _checked_grants(self, grants: Iterable[OperatorGrant | str]) -> tuple[OperatorGrant, ...]:
        checked = tuple(OperatorGrant.parse(g) if isinstance(g, str) else g for g in grants)
        for grant in checked:
            if not await self.roles.exists(grant.role):
                hint = suggestion(grant.role, await self.roles.all())
                raise UnknownRoleError(f"no role named {grant.role!r}{hint}")
        return checked

    async def _change(self, name: str, changes: dict[str, object]) -> tuple[Operator, Operator]:
        record = await self._record(name)
        before = _operator(record)
        try:
            after = Operator.model_validate({**before.model_dump(mode="json"), **changes})
        except ValidationError as exc:
            raise OperatorError(_first_error(exc)) from None
        record.update(after.model_dump(mode="json"))
        await self._redis.set(_OP.format(name), json.dumps(record), xx=True)
        return before, after

    async def _record(self, name: str) -> dict[str, object]:
        raw = await self._redis.get(_OP.format(name))
        if raw is None:
            known = sorted(_text(n) for n in await self._redis.smembers(_NAMES))
            raise UnknownOperatorError(f"no operator named {name!r}{suggestion(name, known)}")
        record: dict[str, object] = json.loads(raw)
        return record


def _full_administrator(operator: Operator) -> bool:
    return operator.state == "active" and any(
        g.role == ADMINISTRATOR and ALL_APPS in g.apps for g in operator.grants
    )


def _operator(record: dict[str, object]) -> Operator:
    return Operator.model_validate({k: v for k, v in record.items() if k != "password_hash"})


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}"


def _sessions_of(name: str) -> str:
    return f"sb:{{ops}}:sessions:{name}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

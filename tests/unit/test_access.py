"""Access without services: argon2id hashing and rehashing, the password policy, the lockout and
per-address arithmetic on a fake Redis with a clock of its own, end-user tokens, and who holds what."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr

from api.access import app_caller, holds, user_principal
from settings.permissions import Grant, Principal
from state.auth_failures import AuthFailures, FailureLimits
from state.operators import OperatorGrant, OperatorStore, PasswordPolicyError, check_password
from state.user_tokens import UserTokenSigner


class FakeRedis:
    """The few commands the stores use, over a dict, with expiry on the fake's own clock (`now`)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.data: dict[str, Any] = {}
        self.expires: dict[str, float] = {}

    def _live(self, key: str) -> bool:
        if key in self.expires and self.expires[key] <= self.now:
            self.data.pop(key, None)
            self.expires.pop(key, None)
        return key in self.data

    async def get(self, key: str) -> Any:
        return self.data[key] if self._live(key) else None

    async def set(
        self, key: str, value: Any, nx: bool = False, xx: bool = False, ex: int | None = None
    ) -> bool:
        if (nx and self._live(key)) or (xx and not self._live(key)):
            return False
        self.data[key] = value.encode() if isinstance(value, str) else str(value).encode()
        self.expires.pop(key, None)
        if ex is not None:
            self.expires[key] = self.now + ex
        return True

    async def incr(self, key: str) -> int:
        value = int(self.data[key]) + 1 if self._live(key) else 1
        self.data[key] = str(value).encode()
        return value

    async def expire(self, key: str, seconds: int, nx: bool = False) -> bool:
        if not self._live(key) or (nx and key in self.expires):
            return False
        self.expires[key] = self.now + seconds
        return True

    async def ttl(self, key: str) -> int:
        if not self._live(key):
            return -2
        return int(self.expires[key] - self.now) if key in self.expires else -1

    async def delete(self, *keys: str) -> int:
        return sum(self.data.pop(key, None) is not None for key in keys)

    async def sadd(self, key: str, *members: str) -> int:
        self.data.setdefault(key, set()).update(members)
        return len(members)

    async def smembers(self, key: str) -> set[str]:
        return set(self.data.get(key, set()))

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self._redis = redis
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any, **kwargs: Any) -> None:
            self._calls.append((name, args, kwargs))

        return queue

    async def execute(self) -> list[Any]:
        return [await getattr(self._redis, name)(*args, **kwargs) for name, args, kwargs in self._calls]


@pytest.fixture
def redis() -> Iterator[FakeRedis]:
    yield FakeRedis()


async def test_the_lockout_counts_failures_in_a_window_on_redis_s_clock(redis: FakeRedis) -> None:
    failures = AuthFailures(redis, FailureLimits(per_operator=5, operator_window=900, lockout=900))  # type: ignore[arg-type]
    assert [await failures.operator_failed("wang") for _ in range(4)] == [0, 0, 0, 0]
    redis.now += 899  # the fifth failure falls in the window of the first
    assert await failures.operator_failed("wang") == 900
    assert await failures.operator_wait("wang") == 900
    redis.now += 600
    assert await failures.operator_wait("wang") == 300
    redis.now += 300
    assert await failures.operator_wait("wang") == 0
    # The count started again with the lockout: four more failures do not lock.
    assert [await failures.operator_failed("wang") for _ in range(4)] == [0, 0, 0, 0]


async def test_failures_outside_the_window_do_not_add_up(redis: FakeRedis) -> None:
    failures = AuthFailures(redis, FailureLimits(per_operator=3, operator_window=60, lockout=120))  # type: ignore[arg-type]
    await failures.operator_failed("li")
    await failures.operator_failed("li")
    redis.now += 61
    assert await failures.operator_failed("li") == 0
    await failures.operator_succeeded("li")
    assert [await failures.operator_failed("li") for _ in range(3)] == [0, 0, 120]
    await failures.unlock("li")
    assert await failures.operator_wait("li") == 0


async def test_an_address_is_refused_for_the_rest_of_its_window(redis: FakeRedis) -> None:
    failures = AuthFailures(redis, FailureLimits(per_source=3, source_window=300))  # type: ignore[arg-type]
    assert [await failures.source_failed("203.0.113.9") for _ in range(2)] == [0, 0]
    redis.now += 100
    assert await failures.source_failed("203.0.113.9") == 200  # the window began with the first failure
    assert await failures.source_wait("203.0.113.9") == 200
    assert await failures.source_wait("203.0.113.10") == 0  # per address
    redis.now += 200
    assert await failures.source_wait("203.0.113.9") == 0


async def test_passwords_are_argon2id_and_rehashed_when_the_parameters_change(redis: FakeRedis) -> None:
    old = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    new = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    await OperatorStore(redis, hasher=old).create("zhao", "correct horse battery")  # type: ignore[arg-type]
    stored = redis.data["sb:{ops}:op:zhao"].decode()
    assert '"password_hash": "$argon2id$v=19$m=1024,t=1,p=1$' in stored
    store = OperatorStore(redis, hasher=new)  # type: ignore[arg-type]
    assert await store.verify_password("zhao", "wrong horse battery") is None
    assert (
        '"$argon2id$v=19$m=1024,t=1,p=1$' in redis.data["sb:{ops}:op:zhao"].decode()
    )  # a miss rehashes nothing
    operator = await store.verify_password("zhao", "correct horse battery")
    assert operator is not None and operator.name == "zhao"
    assert '"$argon2id$v=19$m=2048,t=2,p=1$' in redis.data["sb:{ops}:op:zhao"].decode()
    assert await store.verify_password("zhao", "correct horse battery") is not None
    assert "correct horse" not in repr(operator) and "argon2" not in operator.model_dump_json()


async def test_an_unknown_name_costs_a_hash_too(redis: FakeRedis) -> None:
    calls: list[str] = []

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            calls.append("verify")
            return super().verify(hash, password)

    store = OperatorStore(redis, hasher=Counting(time_cost=1, memory_cost=1024, parallelism=1))  # type: ignore[arg-type]
    assert await store.verify_password("nobody", "whatever it is") is None
    assert calls == ["verify"]


@pytest.mark.parametrize(
    ("password", "words"),
    [("eleven char", "at least 12"), ("x" * 1025, "at most 1024"), ("my name is WANG.xiao!", "name")],
)
def test_the_password_policy(password: str, words: str) -> None:
    with pytest.raises(PasswordPolicyError, match=words) as refused:
        check_password("wang.xiao", password)
    assert password not in str(refused.value)


def test_grants_parse_as_written() -> None:
    assert OperatorGrant.parse("sender") == OperatorGrant(role="sender", apps=frozenset({"*"}))
    assert OperatorGrant.parse("sender@lms, bursar") == OperatorGrant(
        role="sender", apps=frozenset({"lms", "bursar"})
    )
    assert str(OperatorGrant.parse("sender@lms,bursar")) == "sender@bursar,lms"


def test_who_holds_what() -> None:
    scoped = Principal(
        kind="operator",
        name="wang",
        grants=(Grant("admin", frozenset({"operators:read", "apps:read"}), frozenset({"lms"})),),
    )
    assert holds(scoped, "apps:read") and not holds(scoped, "operators:read")  # global needs `*`
    app = app_caller("lms")
    assert holds(app, "events:send") and holds(app, "user_tokens:issue") and not holds(app, "people:read")
    assert app.allows("statistics:read", "lms") and not app.allows("statistics:read", "bursar")
    user = user_principal("lms", "s1")
    assert holds(user, "inbox:own") and not holds(user, "events:send") and user.user_id == "s1"


def test_end_user_tokens_are_bound_signed_and_short_lived() -> None:
    signer = UserTokenSigner(SecretStr("k" * 40))
    token, expires_at = signer.mint("lms", "s1", 600)
    assert token.startswith("sbu_") and signer.verify(token) == ("lms", "s1")
    assert expires_at - time.time() == pytest.approx(600, abs=5)
    assert UserTokenSigner(SecretStr("j" * 40)).verify(token) is None  # another server key
    head, body, tail = token[4:].split(".")
    assert signer.verify(f"sbu_{head}.{body}x.{tail}") is None  # altered
    stale = jwt.encode(
        {"sub": "s1", "app": "lms", "aud": "switchboard:user", "exp": int(time.time()) - 1},
        "k" * 40,
        algorithm="HS256",
    )
    assert signer.verify("sbu_" + stale) is None
    month = jwt.encode(
        {
            "sub": "s1",
            "app": "lms",
            "aud": "switchboard:user",
            "iat": int(time.time()),
            "exp": int(time.time()) + 30 * 86400,
        },
        "k" * 40,
        algorithm="HS256",
    )
    assert signer.verify("sbu_" + month) is None  # longer than a day: not one of ours
    with pytest.raises(ValueError, match="ttl_seconds"):
        signer.mint("lms", "s1", 2 * 86400)

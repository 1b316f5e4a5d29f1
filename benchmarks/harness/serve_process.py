"""A real ``frankensplit serve`` child process: start, wait until ready, kill, restart, measure RSS.

For the load and fault benchmarks and their tests, which must exercise the server as it runs in
production (its own process, uvicorn, the decoder sandbox, a TCP port) and must be able to kill it
with SIGKILL and bring it back on the same port while clients keep going. Torch-free: the process
driving the load stays light, and the server's memory is measured alone (``/proc/<pid>/status``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RssSampler", "ServeProcess", "free_port", "rss_mib"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MiB (``VmRSS``), or None once it is gone (Linux)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


class ServeProcess:
    """``python -m frankensplit serve ARGS --host HOST --port PORT`` in a child process.

    The port is fixed at construction, so a restart comes back where clients expect it.

    Args:
        args: ``serve`` arguments other than ``--host``/``--port`` (e.g. ``["--model", id]``).
        port: TCP port (None: a free one).
        host: bind address (loopback by default).
        log: file receiving the server's stdout and stderr (None: discarded).
        env: extra environment variables for the child.
    """

    def __init__(
        self,
        args: Sequence[str],
        port: int | None = None,
        host: str = "127.0.0.1",
        log: str | Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = list(args)
        self.host = host
        self.port = port or free_port(host)
        self.log = Path(log) if log is not None else None
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running server's process id (None when not started)."""
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Launch the server (returns at once; see `wait_ready`)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"the server on port {self.port} is already running")
        command = [sys.executable, "-m", "frankensplit", "serve", *self.args,
                   "--host", self.host, "--port", str(self.port)]
        out = open(self.log, "ab") if self.log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # the child holds its own descriptor
        self.starts += 1

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Block until ``/readyz`` answers 200; return the seconds waited.

        Raises:
            RuntimeError: the process exited or did not become ready within ``timeout``
                (the message carries the end of its log).
        """
        start = time.monotonic()
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"the server exited with code {code}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=5.0) as response:
                    if response.status == 200:
                        return time.monotonic() - start
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503 while loading
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"the server was not ready within {timeout} s: "
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the server (no cleanup, like a crash or an OOM kill) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def restart(self) -> None:
        """Kill the server and start it again on the same port (without waiting for ready)."""
        self.kill()
        self.start()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful shutdown), SIGKILL after ``timeout``; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def rss_mib(self) -> float | None:
        """The server process's resident memory in MiB (None when not running)."""
        return rss_mib(self.process.pid) if self.process is not None else None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's log (empty without a log file)."""
        if self.log is None or not self.log.is_file():
            return "(no log)"
        return self.log.read_text(errors="replace")[-chars:].strip()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RssSampler:
    """Sample a process's RSS every ``interval_s`` seconds in a background thread.

    Args:
        pid: the process id, or a callable returning the current one (follows restarts).
        interval_s: seconds between samples.
    """

    def __init__(self, pid: int | Callable[[], int | None], interval_s: float = 1.0) -> None:
        self._pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            pid = self._pid() if callable(self._pid) else self._pid
            value = rss_mib(pid) if isinstance(pid, int) else None
            if value is not None:
                self.samples.append((time.monotonic() - start, value))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict[str, float | int | None]:
        """First-quarter vs last-quarter mean RSS and the maximum, in MiB."""
        values = [v for _, v in self.samples]
        if not values:
            return {"samples": 0, "first_quarter_mean_mib": None,
                    "last_quarter_mean_mib": None, "max_mib": None}
        quarter = max(len(values) // 4, 1)
        first, last = values[:quarter], values[-quarter:]
        return {
            "samples": len(values),
            "first_quarter_mean_mib": round(sum(first) / len(first), 1),
            "last_quarter_mean_mib": round(sum(last) / len(last), 1),
            "max_mib": round(max(values), 1),
        }

"""Stalled clients on loopback: connections that send part of a request, then nothing.

For ``benchmarks/slow_clients.py`` and ``tests/test_slow_clients.py``, which check that such
clients cannot stall ``frankensplit serve`` (see ``docs/reliability.md``, "Slow clients"). A
`StalledConnections` opens ``count`` TCP connections, writes the same prefix on each (the headers
and the first bytes of a larger body, or half a request head) and then sends nothing more; a
watcher thread records, per connection, when the server closed it (EOF or reset, seen by the
client) and what it answered first. `server_connections` counts the server's side of the
connections from the kernel's table (``/proc/net/tcp``), so "the server closed them" is checked
on both ends. Torch-free and standard library only: the process driving the test stays light.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .loadgen import percentile

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["StalledConnections", "header_prefix", "server_connections", "upload_prefix"]

#: ``/proc/net/tcp`` state codes of a connection the server still holds open.
_OPEN_STATES = {"01": "established", "08": "close_wait"}


def upload_prefix(host: str, body_bytes: int = 100_000, sent: int = 10) -> bytes:
    """A classify request's head declaring ``body_bytes`` of body, plus its first ``sent`` bytes.

    Raises:
        ValueError: ``sent`` is negative or not below ``body_bytes`` (that upload is not stalled).
    """
    if not 0 <= sent < body_bytes:
        raise ValueError(f"need 0 <= sent < body_bytes, got sent={sent}, body_bytes={body_bytes}")
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {body_bytes}\r\n\r\n")
    return head.encode("ascii") + b"\0" * sent


def header_prefix(host: str) -> bytes:
    """Half a request head (slowloris): the request line and one header line, unterminated."""
    return f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode("ascii")


def server_connections(port: int) -> dict[str, int]:
    """TCP connections whose local port is ``port`` (the server's end), by state (Linux only).

    ``established`` is a connection both ends hold; ``close_wait`` one the client closed and the
    server has not. On loopback the client's ends have other local ports, so they do not count.
    """
    counts: Counter[str] = Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)  # the column names
                for line in f:
                    fields = line.split()
                    local, state = fields[1], fields[3]
                    if int(local.rsplit(":", 1)[1], 16) == port and state in _OPEN_STATES:
                        counts[_OPEN_STATES[state]] += 1
        except FileNotFoundError:
            continue
    return {name: counts[name] for name in _OPEN_STATES.values()}


@dataclass
class _Stalled:
    sock: socket.socket
    opened: float
    closed: float | None = None  # when the client saw EOF or a reset
    how: str | None = None  # "eof" or "reset"
    answer: bytes = b""

    @property
    def status(self) -> str:
        """The status code of the server's answer, or ``"none"`` when it closed without one."""
        line = self.answer.split(b"\r\n", 1)[0].split()
        return line[1].decode("ascii", "replace") if len(line) > 1 else "none"


class StalledConnections:
    """``count`` connections to ``url`` that each send ``prefix`` and then stall.

    Use as a context manager: entering opens and writes them all and starts the watcher, leaving
    closes whatever the server left open. Every connection is made before the next (blocking
    connect, 10 s timeout), so ``count`` bounds the traffic.

    Args:
        url: the server's base URL (``http://127.0.0.1:PORT``).
        count: connections to open.
        prefix: bytes each sends (`upload_prefix`, `header_prefix`).
    """

    def __init__(self, url: str, count: int, prefix: bytes) -> None:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None or count < 0:
            raise ValueError(f"need http://HOST:PORT and count >= 0, got {url!r}, {count}")
        self.address = (parts.hostname, parts.port)
        self.count = count
        self.prefix = prefix
        self.connections: list[_Stalled] = []
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="stalled-watch")

    def __enter__(self) -> Self:
        for _ in range(self.count):
            sock = socket.create_connection(self.address, timeout=10.0)
            sock.sendall(self.prefix)
            sock.setblocking(False)
            stalled = _Stalled(sock, time.monotonic())
            with self._lock:
                self.connections.append(stalled)
                self._selector.register(sock, selectors.EVENT_READ, stalled)
        self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._watcher.join(timeout=5)
        for stalled in self.connections:
            stalled.sock.close()
        self._selector.close()

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                ready = self._selector.select(timeout=0.05) if self._selector.get_map() else []
            if not ready:
                time.sleep(0.05)
            for key, _ in ready:
                stalled: _Stalled = key.data
                try:
                    data = stalled.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:  # reset (or aborted): the server is gone from this connection
                    data, stalled.how = b"", "reset"
                if data:
                    stalled.answer += data[: max(4096 - len(stalled.answer), 0)]
                    continue
                stalled.closed, stalled.how = time.monotonic(), stalled.how or "eof"
                with self._lock:
                    self._selector.unregister(stalled.sock)

    @property
    def open_count(self) -> int:
        """Connections the server has not closed yet (as the client sees them)."""
        return sum(1 for s in self.connections if s.closed is None)

    def wait_closed(self, timeout: float) -> bool:
        """Wait until the server has closed every connection, at most ``timeout`` s; True if so."""
        deadline = time.monotonic() + timeout
        while self.open_count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.open_count == 0

    def summary(self) -> dict[str, Any]:
        """Connections, how many the server closed, its answers, and seconds until each closed."""
        closed = [s for s in self.connections if s.closed is not None]
        after = [s.closed - s.opened for s in closed if s.closed is not None]
        return {
            "connections": len(self.connections),
            "closed_by_server": len(closed),
            "still_open": len(self.connections) - len(closed),
            "answers": dict(sorted(Counter(s.status for s in closed).items())),
            "closed_by": dict(sorted(Counter(s.how or "" for s in closed).items())),
            "closed_after_s": {
                name: None if (v := percentile(after, q)) is None else round(v, 2)
                for name, q in (("min", 0.0), ("p50", 0.5), ("max", 1.0))
            },
        }

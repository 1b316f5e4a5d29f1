"""An application-level link shaper: a TCP forwarding proxy with a rate limit and a delay each way.

Why it exists: the kernel's own shapers (``tc`` netem for delay, tbf for rate) need
``CAP_NET_ADMIN`` and, for delay, the ``sch_netem`` module, which unprivileged containers and CI
machines often lack. This proxy needs neither, so the shaped-link benchmark runs anywhere::

    client --TCP--> [proxy: up pipe] --TCP--> server
    client <--TCP-- [proxy: down pipe] <--TCP-- server

    pipe: chunk (<= 1448 bytes) arrives at t --> leaves at  s = max(t, pipe free, not_before)
                                                 link busy until s + len * 8 / rate
                                                 delivered at s + len * 8 / rate + rtt / 2

Each direction is one FIFO link shared by every connection through the proxy: a token bucket with
no burst allowance (a chunk waits until the link has finished the previous one), followed by a
fixed one-way delay of RTT / 2. A payload of B bytes therefore arrives B * 8 / rate + RTT / 2
after it was sent, which is exactly the transfer term of :mod:`frankensplit.sim.latency`.

The TCP handshake happens on loopback, so it would cost nothing; to model a new connection over
the link, data of a new connection leaves no earlier than ``connect_rtts`` RTTs after it was
accepted (``connect_rtts=1``: SYN and SYN-ACK). Queues are unbounded (no drops, no
retransmissions) and only application bytes are metered (no TCP/IP headers): the model is run with
the same accounting when it is compared with measurements through this proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["ConnectionStats", "Shaper", "shaped_proxy"]

#: Bytes read and scheduled at a time: one TCP segment of a 1500-byte MTU path.
CHUNK = 1448


@dataclass
class ConnectionStats:
    """Application bytes one connection carried each way."""

    up_bytes: int = 0
    down_bytes: int = 0


@dataclass
class _Pipe:
    """One direction of the link (see the module docstring)."""

    bytes_per_s: float
    delay_s: float
    free_at: float = 0.0

    def schedule(self, now: float, size: int, not_before: float) -> float:
        """Occupy the link for ``size`` bytes; return when they are delivered."""
        start = max(now, self.free_at, not_before)
        self.free_at = start + size / self.bytes_per_s
        return self.free_at + self.delay_s


@dataclass
class Shaper:
    """The proxy; use :meth:`start` on an event loop, or :func:`shaped_proxy` from sync code.

    Args:
        target: (host, port) of the server behind the link.
        mbit_per_s: rate of each direction, Mbit/s (10^6 bits per second).
        rtt_ms: round-trip time; each direction delays by half of it.
        connect_rtts: RTTs a new connection waits before its first byte leaves.
        host: address to listen on (port chosen by the system).

    Raises:
        ValueError: a non-positive rate, a negative RTT or a negative ``connect_rtts``.
    """

    target: tuple[str, int]
    mbit_per_s: float
    rtt_ms: float
    connect_rtts: float = 1.0
    host: str = "127.0.0.1"
    connections: list[ConnectionStats] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mbit_per_s) and self.mbit_per_s > 0):
            raise ValueError(f"shaper rate must be > 0 Mbit/s, got {self.mbit_per_s!r}")
        if not (math.isfinite(self.rtt_ms) and self.rtt_ms >= 0):
            raise ValueError(f"shaper RTT must be >= 0 ms, got {self.rtt_ms!r}")
        if not (math.isfinite(self.connect_rtts) and self.connect_rtts >= 0):
            raise ValueError(f"connect_rtts must be >= 0, got {self.connect_rtts!r}")
        rate = self.mbit_per_s * 1e6 / 8.0
        self._up = _Pipe(rate, self.rtt_ms / 2000.0)
        self._down = _Pipe(rate, self.rtt_ms / 2000.0)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """``http://host:port`` of the proxy (valid after :meth:`start`)."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen on ``host`` and a free port."""
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop the connections in flight."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        not_before = loop.time() + self.connect_rtts * self.rtt_ms / 1000.0
        stats = ConnectionStats()
        self.connections.append(stats)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        writers = [c_writer]
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
            writers.append(s_writer)
            await asyncio.gather(
                self._pump(c_reader, s_writer, self._up, not_before, stats, "up_bytes"),
                self._pump(s_reader, c_writer, self._down, 0.0, stats, "down_bytes"),
            )
        except (OSError, asyncio.CancelledError):
            pass  # server gone or refused, or the proxy closing: the client sees a closed socket
        finally:
            self._tasks.discard(task)
            for writer in writers:
                writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pipe: _Pipe,
        not_before: float, stats: ConnectionStats, counter: str,
    ) -> None:
        """Forward one direction through ``pipe`` until end of stream, then pass the EOF on."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        deliver = asyncio.create_task(self._deliver(queue, writer))
        self._tasks.add(deliver)
        deliver.add_done_callback(self._tasks.discard)
        last = 0.0
        try:
            while True:
                data = await reader.read(CHUNK)
                now = loop.time()
                if not data:
                    queue.put_nowait((max(last, now + pipe.delay_s), None))
                    break
                last = pipe.schedule(now, len(data), not_before)
                setattr(stats, counter, getattr(stats, counter) + len(data))
                queue.put_nowait((last, data))
        except (ConnectionError, OSError):
            queue.put_nowait((0.0, None))
        try:
            await deliver
        finally:
            deliver.cancel()  # when this pump itself is cancelled

    @staticmethod
    async def _deliver(queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                at, data = await queue.get()
                if (wait := at - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()  # half-close: the other direction may still run
                    else:
                        writer.close()
                    return
                writer.write(data)
                await writer.drain()


@contextlib.contextmanager
def shaped_proxy(
    target: tuple[str, int], mbit_per_s: float, rtt_ms: float, connect_rtts: float = 1.0,
    host: str = "127.0.0.1",
) -> Iterator[Shaper]:
    """Run a :class:`Shaper` on its own event loop in a background thread; yield it.

    For synchronous callers (benchmarks, tests): ``shaper.url`` is where clients connect and
    ``shaper.connections`` what they sent. The proxy stops on exit.
    """
    shaper = Shaper(target, mbit_per_s, rtt_ms, connect_rtts, host)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(shaper.start())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(e)
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="frankensplit-shaper", daemon=True)
    thread.start()
    ready.wait(30)
    if failure or not shaper.port:
        loop.call_soon_threadsafe(loop.stop)
        raise RuntimeError(f"shaper did not start: {failure[0] if failure else 'timeout'}")
    try:
        yield shaper
    finally:
        asyncio.run_coroutine_threadsafe(shaper.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m frankensplit.sim.shaper --target HOST:PORT --mbit 1 --rtt-ms 40``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the server")
    parser.add_argument("--mbit", type=float, required=True, help="rate each way, Mbit/s")
    parser.add_argument("--rtt-ms", type=float, required=True, help="round-trip time, ms")
    parser.add_argument("--connect-rtts", type=float, default=1.0)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    with shaped_proxy((host, int(port)), args.mbit, args.rtt_ms, args.connect_rtts) as shaper:
        print(f"shaping {shaper.url} -> {args.target}: {args.mbit} Mbit/s, RTT {args.rtt_ms} ms",
              flush=True)
        threading.Event().wait()


if __name__ == "__main__":  # pragma: no cover
    main()

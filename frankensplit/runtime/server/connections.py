"""Connection limits under uvicorn: a cap on open connections and a deadline for request heads.

Why this module: uvicorn bounds neither. Its ``limit_concurrency`` answers 503 to a *request*
once that many connections or tasks exist, but it accepts every connection and keeps it as long
as the client likes; and its h11 protocol has no deadline for the request head: a client that
sends half a header line and then nothing (slowloris) holds a socket and a file descriptor
forever, and enough of them exhaust the process's descriptors so that nobody else can connect.
(Its ``timeout_keep_alive`` only runs between requests, and is cancelled by any byte received.)
The body of a request is the app's business (``ServerConfig.body_timeout_s``, answered 408 in
`runtime.server`), because only the app knows when it has read the whole body.

So `guarded_protocol` subclasses uvicorn's h11 protocol (``uvicorn.protocols.http.h11_impl``,
the pure-Python one; chosen explicitly, so the behaviour does not change when httptools happens
to be installed) with two rules, both enforced on the event loop without any extra task:

- **At most** ``max_connections`` **open connections.** One more is answered a fixed ``503``
  with ``Retry-After`` and ``Connection: close`` and closed at once, before anything is read, so
  descriptors and per-connection memory stay bounded whatever clients do. (A client whose
  request is already on its way may see a reset instead of the 503; both are retried by
  `runtime.edge.client`.)
- **A request head within** ``header_timeout_s``. Whenever the connection waits for the
  client (from connecting, and again from each answer) and the app handles no request on it, a
  timer runs; if no complete head has arrived when it fires, the connection is closed without an
  answer (there is no request to answer). Bytes that trickle in do not restart it. This also
  closes a client that keeps trickling a body the app already answered (an early 401 or 413).

Everything else (parsing, flow control, keep-alive) is uvicorn's. The subclass reads a few of
the parent's attributes (``conn``, ``cycle``, ``connections``, ``transport``, ``loop``) and
overrides three of its methods; `guarded_protocol` checks that they exist, so an incompatible
uvicorn fails at start-up with a clear error rather than at the first connection (tested with
uvicorn 0.54 and h11 0.16). `server_config` builds the ``uvicorn.Config`` that ``frankensplit
serve`` and `runtime.server.run_in_thread` both run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from frankensplit.runtime.server.metrics import ServerMetrics

__all__ = ["ConnectionLimits", "guarded_protocol", "server_config"]

#: What an over-the-cap connection is told before it is closed (no request has been read).
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 28\r\nretry-after: %d\r\nconnection: close\r\n\r\n"
    b"server busy: connection limit"
)
#: The parent's attributes the subclass relies on (checked once, at `guarded_protocol`).
_PARENT_API = ("connection_made", "connection_lost", "data_received", "on_response_complete")


@dataclass(frozen=True)
class ConnectionLimits:
    """Limits per server process on its TCP connections (``frankensplit serve`` flags).

    Why these defaults: 512 connections leave room for hundreds of slow or idle clients beside
    the 128 requests in flight (``ServerConfig.max_in_flight``), while the bodies being uploaded
    at once stay bounded by 512 x ``max_body_bytes`` (512 MiB at the 1 MiB default, about 2.5 MiB
    at lite0's 5 KB packets); a live client sends its request head (a few hundred bytes) in one
    segment right after connecting, so 10 s is many round trips of the slowest link we target,
    and it bounds how long a slowloris client holds a descriptor. ``docs/reliability.md``.

    Attributes:
        max_connections: most open connections; one more gets 503 + ``Retry-After`` and is
            closed before anything is read.
        header_timeout_s: longest a connection may wait for a complete request head, from
            connecting or from the previous answer; then it is closed.
        keep_alive_s: uvicorn's ``timeout_keep_alive``: an idle keep-alive connection (nothing
            received since the last answer) is closed after this many seconds.
        retry_after_s: the ``Retry-After`` sent with the over-the-cap 503.
    """

    max_connections: int = 512
    header_timeout_s: float = 10.0
    keep_alive_s: int = 5
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for name in ("max_connections", "keep_alive_s", "retry_after_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ConnectionLimits.{name} must be a positive int, got {value!r}")
        if not self.header_timeout_s > 0:
            raise ValueError(
                f"ConnectionLimits.header_timeout_s must be > 0, got {self.header_timeout_s!r}"
            )


def guarded_protocol(limits: ConnectionLimits, metrics: ServerMetrics | None = None) -> type:
    """uvicorn's h11 protocol with ``limits`` enforced (see the module docstring).

    Args:
        limits: the connection cap and the head deadline.
        metrics: where to count open, refused and timed-out connections (None: nowhere).

    Raises:
        RuntimeError: the installed uvicorn lacks what the subclass overrides.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    missing = [name for name in _PARENT_API if not callable(getattr(H11Protocol, name, None))]
    if missing:
        import uvicorn

        raise RuntimeError(f"uvicorn {uvicorn.__version__}'s H11Protocol lacks {missing}; "
                           "frankensplit.runtime.server.connections needs a compatible uvicorn")
    refusal = _REFUSAL % limits.retry_after_s

    class GuardedH11Protocol(H11Protocol):  # type: ignore[misc, valid-type]
        """One connection: uvicorn's h11 handling, plus the cap and the head deadline."""

        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.write(refusal)  # type: ignore[attr-defined]
                transport.close()  # connection_lost removes it from the set
                if metrics is not None:
                    metrics.connections_refused.inc()
                return
            self._gauge()
            self._watch_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)
            self._gauge()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch_head()  # a complete head stops the timer; a partial one does not

        def on_response_complete(self) -> None:
            self._stop_timer()  # the next head has its own full deadline
            super().on_response_complete()
            self._watch_head()

        def _app_busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _watch_head(self) -> None:
            if self._app_busy() or self.transport.is_closing():
                self._stop_timer()
            elif self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.header_timeout_s, self._expired)

        def _stop_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expired(self) -> None:
            self._head_timer = None
            if self._app_busy() or self.transport.is_closing():
                return
            self.transport.close()
            if metrics is not None:
                metrics.header_timeouts.inc()

        def _gauge(self) -> None:
            if metrics is not None:
                metrics.open_connections.set(len(self.connections))

    return GuardedH11Protocol


def server_config(
    app: FastAPI, limits: ConnectionLimits | None = None, **kwargs: Any
) -> uvicorn.Config:
    """The ``uvicorn.Config`` serving ``app`` under ``limits`` (other uvicorn options: kwargs).

    Sets the guarded protocol, counts into the app's metrics (``app.state.service``) and
    publishes the limits there, and keeps uvicorn's own ``limit_concurrency`` one above the
    connection cap: since no more than ``max_connections`` connections can exist, it then bounds
    only request tasks, which can outlive their connection (a client that hangs up while its
    request waits in the queue), instead of refusing every request on the last free connection.
    """
    import uvicorn

    limits = limits or ConnectionLimits()
    service = getattr(app.state, "service", None)
    metrics = service.metrics if service is not None else None
    if metrics is not None:
        for name in ("max_connections", "header_timeout_s", "keep_alive_s"):
            metrics.limits.labels(name).set(getattr(limits, name))
    return uvicorn.Config(
        app, http=guarded_protocol(limits, metrics), limit_concurrency=limits.max_connections + 1,
        timeout_keep_alive=limits.keep_alive_s, **kwargs,
    )

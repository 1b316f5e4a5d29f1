"""The end-to-end latency model of one request, FrankenSplit or codec offloading.

Per request (FrankenSplit paper, Sec. on latency; times in ms)::

    total = edge + uplink + (1 + connection_rtts) * RTT + server + downlink
    FrankenSplit:  edge = g_a + entropy encode          server = parse + entropy decode + g_s + tail
    offloading:    edge = codec encode                  server = codec decode + whole teacher
    uplink   = wire_bytes(payload + HTTP request head) * 8 / rate
    downlink = wire_bytes(HTTP response) * 8 / rate

Why each term is there:

- The HTTP request head (request line and headers) and the response (headers and the top-k JSON)
  cross the link too; both were measured on the real client and server
  (:data:`HTTP_REQUEST_HEAD_BYTES`, :data:`HTTP_RESPONSE_BYTES`, ``benchmarks/shaped_link.py``
  prints them per run) and are the same for every method.
- ``connection_rtts``: the edge client (``urllib``) opens a new TCP connection per request, whose
  handshake costs one RTT before the first byte can leave; 0 models a kept-alive connection
  (TLS 1.3 on a new connection would add one more).
- ``wire_bytes`` adds TCP/IP headers per segment (52 bytes per 1448-byte segment: IPv4, TCP and
  the timestamp option). The application-level shaper meters payload only, so
  ``benchmarks/shaped_link.py`` predicts with ``header_bytes=0``.

Local execution (the device runs the whole teacher itself) is a `Cost` with ``offloaded=False``:
no bytes, no RTT, no server, its whole compute on the edge. A device ``N`` times slower than the
profiled machine scales every edge term by ``N`` and no server term (`Cost.on_device`).

Not modelled: TCP slow start (a packet of tens of KB leaves in a few windows; on the links where
transfer matters the rate, not the window, is the limit), losses and retransmissions, radio wake-up,
and queueing at a busy server. The model is linear in 1/rate, which gives a closed-form crossover
rate between two methods (:func:`crossover_mbit_per_s`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from frankensplit.sim.links import Link

__all__ = [
    "HTTP_REQUEST_HEAD_BYTES",
    "HTTP_RESPONSE_BYTES",
    "Breakdown",
    "Cost",
    "Wire",
    "crossover_mbit_per_s",
    "end_to_end",
    "faster_rates",
    "intersect",
    "local_break_even_slowdown",
]

#: An interval of link rates in Mbit/s, ``(low, high)``, open at both ends; ``high`` may be inf.
Rates = tuple[float, float]

#: Request line and headers of the edge client's POST (`frankensplit.runtime.edge.client.post_packet`:
#: urllib on Python 3.11, a 5-digit port, a 4-digit Content-Length, X-Request-Id and X-Attempt),
#: measured through the shaper. Offloading is modelled with the same head (same client code).
HTTP_REQUEST_HEAD_BYTES = 288

#: Whole HTTP response of ``frankensplit serve`` with top-5 ImageNet classes: uvicorn's headers and
#: the JSON answer, measured through the shaper (709-727 bytes, with the class names).
HTTP_RESPONSE_BYTES = 720


@dataclass(frozen=True)
class Wire:
    """How application bytes become link time.

    Attributes:
        request_head_bytes: HTTP request line and headers sent with every payload.
        response_bytes: the whole HTTP response.
        connection_rtts: extra RTTs before the request can leave (1: new TCP connection).
        mss: TCP payload bytes per segment.
        header_bytes: TCP/IP header bytes per segment (0: count application bytes only).
    """

    request_head_bytes: float = HTTP_REQUEST_HEAD_BYTES
    response_bytes: float = HTTP_RESPONSE_BYTES
    connection_rtts: float = 1.0
    mss: int = 1448
    header_bytes: float = 52.0

    def __post_init__(self) -> None:
        for name in ("request_head_bytes", "response_bytes", "connection_rtts", "header_bytes"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Wire.{name} must be finite and >= 0, got {value!r}")
        if self.mss < 1:
            raise ValueError(f"Wire.mss must be >= 1, got {self.mss!r}")

    def wire_bytes(self, num_bytes: float) -> float:
        """Bytes on the link for ``num_bytes`` of TCP payload (headers of every segment added)."""
        if num_bytes < 0:
            raise ValueError(f"num_bytes must be >= 0, got {num_bytes!r}")
        return num_bytes + math.ceil(num_bytes / self.mss) * self.header_bytes


@dataclass(frozen=True)
class Cost:
    """What one method costs per request, independent of the link.

    Attributes:
        method: ``"frankensplit"`` or a codec name.
        setting: model id or codec quality, as text.
        payload_bytes: request body (packet or image file).
        edge_ms: edge compute.
        server_ms: server compute.
        top1: top-1 at this operating point, when known (percent).
        bytes_from: where ``payload_bytes`` come from (a measured model, an interpolation, a
            what-if), in words.
        compute_from: which model's or codec's profiled times price ``edge_ms`` and ``server_ms``.
        offloaded: False for local execution: nothing crosses the link, no RTT, no server.
    """

    method: str
    setting: str
    payload_bytes: float
    edge_ms: float
    server_ms: float
    top1: float | None = None
    bytes_from: str = ""
    compute_from: str = ""
    offloaded: bool = True

    def __post_init__(self) -> None:
        for name in ("payload_bytes", "edge_ms", "server_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{self.method}: {name} must be finite and >= 0, got {value!r}")
        if not self.offloaded and (self.payload_bytes or self.server_ms):
            raise ValueError(f"{self.method}: local execution sends no bytes and uses no server, "
                             f"got {self.payload_bytes!r} B and {self.server_ms!r} ms")

    def on_device(self, slowdown: float) -> Cost:
        """This cost on a device ``slowdown`` times slower than the profiled machine: the edge
        time scales, the server's does not.

        Raises:
            ValueError: a non-positive or non-finite slowdown.
        """
        if not (math.isfinite(slowdown) and slowdown > 0):
            raise ValueError(f"device slowdown must be finite and > 0, got {slowdown!r}")
        return dataclasses.replace(self, edge_ms=self.edge_ms * slowdown)

    def link_bits(self, wire: Wire) -> float:
        """Bits this method puts on the link per request, both ways (0 when not offloaded)."""
        if not self.offloaded:
            return 0.0
        return 8.0 * (wire.wire_bytes(self.payload_bytes + wire.request_head_bytes)
                      + wire.wire_bytes(wire.response_bytes))

    def fixed_ms(self, wire: Wire, rtt_ms: float) -> float:
        """Everything but the transfer: compute, plus the RTTs when offloaded."""
        rtts = (1.0 + wire.connection_rtts) * rtt_ms if self.offloaded else 0.0
        return self.edge_ms + self.server_ms + rtts


@dataclass(frozen=True)
class Breakdown:
    """One method on one link, term by term (ms)."""

    method: str
    setting: str
    link: str
    mbit_per_s: float
    payload_bytes: float
    edge_ms: float
    uplink_ms: float
    rtt_ms: float
    server_ms: float
    downlink_ms: float

    @property
    def total_ms(self) -> float:
        """End-to-end latency of the request."""
        return self.edge_ms + self.uplink_ms + self.rtt_ms + self.server_ms + self.downlink_ms


def end_to_end(cost: Cost, link: Link, wire: Wire | None = None) -> Breakdown:
    """The latency model above for one method on one link."""
    wire = wire or Wire()
    if not cost.offloaded:
        return Breakdown(cost.method, cost.setting, link.name, link.mbit_per_s, 0.0, cost.edge_ms,
                         0.0, 0.0, 0.0, 0.0)
    return Breakdown(
        method=cost.method, setting=cost.setting, link=link.name, mbit_per_s=link.mbit_per_s,
        payload_bytes=cost.payload_bytes, edge_ms=cost.edge_ms,
        uplink_ms=link.transfer_ms(wire.wire_bytes(cost.payload_bytes + wire.request_head_bytes)),
        rtt_ms=(1.0 + wire.connection_rtts) * link.rtt_ms,
        server_ms=cost.server_ms,
        downlink_ms=link.transfer_ms(wire.wire_bytes(wire.response_bytes)),
    )


def crossover_mbit_per_s(a: Cost, b: Cost, wire: Wire | None = None) -> float | None:
    """The rate at which ``a`` and ``b`` take equally long (RTT and response cancel out).

    Latency is ``compute + bits / rate``, so with more bits but less compute, ``b`` wins above
    ``(bits_b - bits_a) / (compute_a - compute_b)`` and loses below it.

    Returns:
        The crossover in Mbit/s, or None when one method is never slower than the other at any
        rate (it has both fewer bits and less compute, or they tie on one of them).
    """
    wire = wire or Wire()
    if not (a.offloaded and b.offloaded):
        raise ValueError("crossover_mbit_per_s compares two offloading methods; use faster_rates "
                         "for local execution (its RTT does not cancel)")
    bits = [8.0 * wire.wire_bytes(c.payload_bytes + wire.request_head_bytes) for c in (a, b)]
    compute = [c.edge_ms + c.server_ms for c in (a, b)]
    d_bits, d_ms = bits[1] - bits[0], compute[0] - compute[1]
    if d_bits == 0 or d_ms == 0 or (d_bits > 0) != (d_ms > 0):
        return None
    return d_bits / (d_ms / 1000.0) / 1e6


def faster_rates(a: Cost, b: Cost, wire: Wire | None = None, rtt_ms: float = 0.0) -> Rates | None:
    """The link rates at which ``a`` is strictly faster than ``b``, at round-trip time ``rtt_ms``.

    Latency is ``fixed + bits / rate`` (`Cost.fixed_ms`, `Cost.link_bits`), so
    ``a - b = d_fixed + d_bits / rate`` and the set where it is negative is one interval:
    ``(0, inf)``, ``(0, r)``, ``(r, inf)`` or empty, with ``r = |d_bits| / |d_fixed|``.

    Returns:
        ``(low, high)`` in Mbit/s (``high`` may be ``math.inf``), or None when ``a`` is never
        faster.
    """
    wire = wire or Wire()
    d_fixed = a.fixed_ms(wire, rtt_ms) - b.fixed_ms(wire, rtt_ms)  # ms
    d_bits = a.link_bits(wire) - b.link_bits(wire)
    if d_bits == 0:
        return (0.0, math.inf) if d_fixed < 0 else None
    rate = abs(d_bits) / (abs(d_fixed) / 1000.0) / 1e6 if d_fixed else math.inf
    if d_bits > 0:  # a sends more: faster only above the rate where its compute lead pays
        return (rate, math.inf) if d_fixed < 0 else None
    return (0.0, math.inf) if d_fixed <= 0 else (0.0, rate)  # a sends less


def intersect(intervals: list[Rates | None]) -> Rates | None:
    """The rates common to every interval (None: none in common, or one of them empty)."""
    low, high = 0.0, math.inf
    for interval in intervals:
        if interval is None:
            return None
        low, high = max(low, interval[0]), min(high, interval[1])
    return (low, high) if low < high else None


def local_break_even_slowdown(fs: Cost, local: Cost, link: Link,
                              wire: Wire | None = None) -> float | None:
    """The device slowdown ``N`` at which offloading ``fs`` and running ``local`` on the device
    take equally long on ``link``; local execution wins on any device faster than that (smaller
    ``N``), ``fs`` on any slower one.

    ``N * local.edge = N * fs.edge + fs.server + network`` gives
    ``N = (fs.server + network) / (local.edge - fs.edge)``.

    Returns:
        ``N``, or None when local execution wins on every device (its edge time is not more than
        ``fs``'s, whose network and server then come on top).
    """
    wire = wire or Wire()
    if local.offloaded or not fs.offloaded:
        raise ValueError("local_break_even_slowdown takes an offloading cost and a local one")
    b = end_to_end(fs, link, wire)
    edge_gap = local.edge_ms - fs.edge_ms
    if edge_gap <= 0:
        return None
    return (b.total_ms - b.edge_ms) / edge_gap

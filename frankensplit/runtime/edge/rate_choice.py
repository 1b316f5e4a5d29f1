"""Rate chosen per request by the link: several rates, one latency budget (torch-free).

The device holds its operating points as one variable-rate edge bundle (one encoder, every rate:
each rate index is an operating point) or as several fixed-rate bundles (one encoder family
exported at several lambdas), and a deadline D for the whole request, image in hand to answer
back. Before
each image it predicts every rate's latency from what its own recent requests measured, and
sends the image at the most accurate rate predicted to make D, or at the lowest rate when none is::

    predicted(r) = edge(r) + base + server + (bytes(r) + http_bytes) * ms_per_byte
    send  argmax_{r : high(r) <= D} accuracy(r)            else the rate with the fewest bytes
    high  = mean + z * std of that sum (z = 1.65: about the 95th percentile; each term's
            relative spread taken as at least 15%, so that a few samples are not certainty)

Where each term comes from, all measured by the client itself:

- ``base``: the fastest of a few ``GET /healthz`` probes (`probe_ms`): connection set-up and the
  round trips of an exchange of almost no bytes.
- ``ms_per_byte`` (the uplink estimate, reported as Mbit/s): after each request, upload time =
  request wall time - the compute the server reports (``decode_ms`` + ``queue_ms``) - base, over
  the bytes sent (packet + ``http_bytes``, the request head and JSON answer beyond the probe's).
  Smoothed per byte (an exponentially weighted mean and variance of ms per byte: averaging time
  per byte is the harmonic mean of rates, the conservative one), and the prediction takes the
  larger of the mean and the last sample, so a link that slows down is believed at once and one
  that speeds up gradually.
- ``bytes(r)``: the bundle's recorded bytes per image (`EdgeManifest.figures`, from the zoo) times
  how large recent images came out relative to their rate's record (one smoothed ratio shared by
  all rates: an image that is expensive at one rate is expensive at every rate).
- ``edge(r)``: preprocessing + encoder + entropy coding, timed per bundle; ``server``: smoothed.

Accuracy ranking: the bundles' recorded top-1 (``figures["top1"]``, written by ``frankensplit
export`` from the zoo's ``metrics.dev<N>_top1``) when every bundle has one, otherwise bytes
(more bytes = more accurate, the rate-distortion trade-off). A rate that costs more bytes than a
more accurate one is never chosen (it is dominated). Until the first upload has been measured the
client sends the lowest rate: nothing is known about the link yet.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "HTTP_BYTES",
    "Choice",
    "Rate",
    "RateChooser",
    "RateClient",
    "Smoothed",
    "probe_ms",
]

#: Bytes a classify exchange carries beyond a ``/healthz`` probe: request head (~290 B) and JSON
#: answer (~720 B) against the probe's ~110 + ~150 B (measured through the shaper, docs/latency.md).
HTTP_BYTES = 750


@dataclass
class Smoothed:
    """Exponentially weighted mean and variance of a measured quantity (Welford-style update).

    Attributes:
        alpha: weight of a new sample.
        mean: current mean (None until the first sample).
        var: current variance.
        last: the last sample.
    """

    alpha: float = 0.3
    mean: float | None = None
    var: float = 0.0
    last: float | None = None

    def update(self, value: float) -> None:
        """Fold in one sample."""
        self.last = value
        if self.mean is None:
            self.mean = value
            return
        delta = value - self.mean
        self.mean += self.alpha * delta
        self.var = (1 - self.alpha) * (self.var + self.alpha * delta * delta)

    @property
    def std(self) -> float:
        """Standard deviation (0 before two samples)."""
        return math.sqrt(self.var)


@dataclass(frozen=True)
class Rate:
    """One operating point: an edge bundle (at one of its rates) and what is recorded about it.

    Attributes:
        model_id: the id its packets carry.
        bundle: the edge bundle folder.
        top1: recorded top-1 (%) or None.
        bytes_per_image: recorded (or, without a record, measured at warm-up) packet bytes.
        rate: the rate index in a variable-rate bundle (None: a fixed-rate bundle).
        lmbda: that rate's lambda (None: a fixed-rate bundle).
    """

    model_id: str
    bundle: Path
    top1: float | None
    bytes_per_image: float
    rate: int | None = None
    lmbda: float | None = None

    @property
    def name(self) -> str:
        """What the chooser calls it: the model id, ``<model id>@<lambda>`` for a rate of a
        variable-rate bundle (as evaluations name its setting)."""
        return self.model_id if self.lmbda is None else f"{self.model_id}@{self.lmbda:g}"


@dataclass(frozen=True)
class Choice:
    """What the chooser decided for one request, and why (goes into the client's JSON).

    Attributes:
        rate: the rate to send at.
        reason: "fits": the most accurate rate predicted within the deadline; "fallback": none
            was, so the lowest rate; "no estimate": no upload measured yet, so the lowest rate.
        predicted_ms: per candidate (`Rate.name`), (mean, high) predicted latency in ms.
        estimate: the link and compute estimates the prediction used.
    """

    rate: Rate
    reason: str
    predicted_ms: dict[str, tuple[float, float]]
    estimate: dict[str, float | None]


@dataclass
class RateChooser:
    """The choice rule and the estimates (no I/O: `RateClient` feeds it measurements).

    Args:
        rates: at least one `Rate`, distinct model ids.
        deadline_ms: the latency budget per request, image to answer.
        z: how many standard deviations of the predicted latency must fit in the deadline.
        http_bytes: bytes per request beyond the packet and the probe (`HTTP_BYTES`).
        min_spread: the smallest relative standard deviation assumed for each term (upload,
            edge, server): one or two equal samples are not taken for certainty.

    Attributes:
        base_ms: the probed base latency (set by `RateClient.probe`; 0 until then).
        ms_per_byte: the uplink estimate, ms per byte sent.
        server_ms: the compute the server reports per request.
        size_ratio: packet bytes over the rate's recorded bytes, recent images.
        edge_ms: per rate (`Rate.name`), preprocessing + encoding time.
        lowest: the rate with the fewest bytes (the fallback).
        candidates: the rates worth sending (not dominated), most accurate first.
        ranked_by: what the accuracy order came from.

    Raises:
        ValueError: no rates, two of one name (model id and rate), or a non-positive deadline.
    """

    rates: Sequence[Rate]
    deadline_ms: float
    z: float = 1.65
    http_bytes: float = HTTP_BYTES
    min_spread: float = 0.15
    base_ms: float = field(default=0.0, init=False)
    ms_per_byte: Smoothed = field(default_factory=lambda: Smoothed(alpha=0.5), init=False)
    server_ms: Smoothed = field(default_factory=Smoothed, init=False)
    size_ratio: Smoothed = field(default_factory=Smoothed, init=False)
    edge_ms: dict[str, Smoothed] = field(default_factory=dict, init=False)
    lowest: Rate = field(init=False)
    candidates: list[Rate] = field(init=False)
    ranked_by: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.rates:
            raise ValueError("rate choice needs at least one edge bundle")
        ids = [r.name for r in self.rates]
        if len(set(ids)) != len(ids):
            raise ValueError(f"each rate needs its own model id or rate index (the server "
                             f"routes and decodes by them), got {ids}")
        if not (math.isfinite(self.deadline_ms) and self.deadline_ms > 0):
            raise ValueError(f"deadline must be > 0 ms, got {self.deadline_ms!r}")
        by_bytes = sorted(self.rates, key=lambda r: r.bytes_per_image)
        self.lowest = by_bytes[0]
        self.ranked_by = ("recorded top-1" if all(r.top1 is not None for r in self.rates)
                          else "bytes (no recorded top-1 for every bundle)")
        accuracy = (lambda r: r.top1) if self.ranked_by == "recorded top-1" else (
            lambda r: r.bytes_per_image)
        kept: list[Rate] = []  # ascending bytes, strictly increasing accuracy: the useful rates
        for rate in by_bytes:
            if not kept or accuracy(rate) > accuracy(kept[-1]):
                kept.append(rate)
        self.candidates = kept[::-1]  # most accurate first
        self.edge_ms = {rate.name: Smoothed() for rate in self.rates}

    def predict(self, rate: Rate) -> tuple[float, float] | None:
        """(mean, high) latency in ms for ``rate``, or None before any upload was measured."""
        if self.ms_per_byte.mean is None:
            return None
        per_byte = max(self.ms_per_byte.mean, self.ms_per_byte.last or 0.0)
        ratio = self.size_ratio.mean if self.size_ratio.mean is not None else 1.0
        wire = rate.bytes_per_image * ratio + self.http_bytes
        upload = wire * per_byte
        # relative spread of bytes (image to image) and of the per-byte time, combined
        rel = max(self.min_spread, math.hypot(self.size_ratio.std / max(ratio, 1e-9),
                                              self.ms_per_byte.std / max(per_byte, 1e-12)))
        edge, server = self._edge(rate), self.server_ms
        mean = (edge.mean or 0.0) + self.base_ms + (server.mean or 0.0) + upload
        var = sum(max(s.var, (self.min_spread * (s.mean or 0.0)) ** 2) for s in (edge, server))
        std = math.sqrt(var + (upload * rel) ** 2)
        return mean, mean + self.z * std

    def _edge(self, rate: Rate) -> Smoothed:
        """The rate's own edge time, or (never timed) the slowest timed rate's."""
        own = self.edge_ms[rate.name]
        timed = [s for s in self.edge_ms.values() if s.mean is not None]
        return own if own.mean is not None or not timed else max(timed, key=lambda s: s.mean)

    def choose(self) -> Choice:
        """The rate for the next request."""
        predicted = {}
        for rate in self.candidates:
            if (p := self.predict(rate)) is not None:
                predicted[rate.name] = (round(p[0], 2), round(p[1], 2))
        if not predicted:
            return Choice(self.lowest, "no estimate", predicted, self.estimate())
        for rate in self.candidates:
            if predicted[rate.name][1] <= self.deadline_ms:
                return Choice(rate, "fits", predicted, self.estimate())
        return Choice(self.lowest, "fallback", predicted, self.estimate())

    def observe(self, rate: Rate, packet_bytes: int, edge_ms: float, request_ms: float,
                server_ms: float) -> float:
        """Fold in one finished request; returns the upload time (ms) it implies."""
        self.edge_ms[rate.name].update(edge_ms)
        self.server_ms.update(server_ms)
        self.size_ratio.update(packet_bytes / rate.bytes_per_image)
        upload_ms = max(request_ms - server_ms - self.base_ms, 0.1)
        self.ms_per_byte.update(upload_ms / (packet_bytes + self.http_bytes))
        return upload_ms

    def estimate(self) -> dict[str, float | None]:
        """The current estimates, for the JSON output."""
        per_byte = self.ms_per_byte.mean
        return {
            "uplink_mbit_per_s": None if per_byte is None else round(8e-3 / per_byte, 4),
            "uplink_last_mbit_per_s": None if self.ms_per_byte.last is None
            else round(8e-3 / self.ms_per_byte.last, 4),
            "base_ms": round(self.base_ms, 2),
            "server_ms": None if self.server_ms.mean is None else round(self.server_ms.mean, 2),
            "size_ratio": None if self.size_ratio.mean is None else round(self.size_ratio.mean, 4),
        }


def probe_ms(url: str, probes: int = 3, timeout: float = 10.0) -> float:
    """The fastest of ``probes`` ``GET /healthz`` round trips to ``url`` (new connection each)."""
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    best = math.inf
    for _ in range(probes):
        start = time.perf_counter()
        with urllib.request.urlopen(f"{url.rstrip('/')}/healthz", timeout=timeout) as response:
            response.read()
        best = min(best, (time.perf_counter() - start) * 1000)
    return best


class RateClient:
    """An edge client holding several rates, sending each image at the rate the link allows.

    Args:
        bundles: edge bundle folders: one variable-rate bundle (its rates are the choices), or
            several bundles, one per rate (any order; a variable-rate one adds all its rates).
        deadline_ms: latency budget per request (image to answer).
        threads: onnxruntime threads per bundle.
        warmup: an image encoded once at every rate at construction: warms the sessions, times
            each edge, and measures bytes for rates without recorded ones.
        z: see `RateChooser`.

    Raises:
        ValueError: bad bundles (see `EdgeClient`), duplicate ids, a non-positive deadline, or a
            rate without recorded bytes and no ``warmup`` image to measure them on.
    """

    def __init__(self, bundles: Sequence[str | Path], deadline_ms: float,
                 threads: int | None = None, warmup: Any = None, z: float = 1.65) -> None:
        from frankensplit.runtime.edge.client import EdgeClient

        self.clients: dict[str, tuple[Any, int | None]] = {}  # Rate.name -> (client, rate index)
        rates, edge_ms = [], {}
        for folder in bundles:
            client = EdgeClient(folder, threads=threads)
            for index in client.manifest.rate_indexes:
                figures = client.manifest.rate_figures(index)
                lmbda = None if index is None else client.rates[index]
                measured = None
                if warmup is not None:
                    client.encode(warmup, index)  # a session's first run is slow: time the second
                    start = time.perf_counter()
                    measured = len(client.encode(warmup, index))
                    ms = (time.perf_counter() - start) * 1000
                size = figures.get("bytes_per_image", measured)
                if size is None:
                    raise ValueError(f"{folder}: no recorded bytes per image"
                                     f"{'' if lmbda is None else f' at lambda {lmbda:g}'}; "
                                     "pass a warm-up image")
                rate = Rate(client.model_id, Path(folder), figures.get("top1"), float(size),
                            index, lmbda)
                rates.append(rate)
                self.clients[rate.name] = (client, index)
                if warmup is not None:
                    edge_ms[rate.name] = ms
        self.chooser = RateChooser(rates, deadline_ms, z=z)
        for name, ms in edge_ms.items():  # the first request's edge time is then known
            self.chooser.edge_ms[name].update(ms)

    def probe(self, url: str, probes: int = 3) -> float:
        """Measure the base latency to ``url`` (`probe_ms`) and use it; returns it in ms."""
        self.chooser.base_ms = probe_ms(url, probes)
        return self.chooser.base_ms

    def classify(self, url: str, image: Any, **post: Any) -> dict[str, Any]:
        """Choose a rate, encode ``image`` with it, POST it; the answer plus ``rate``.

        Args:
            url: server base URL.
            image: a path or PIL image.
            post: passed to `client.post_packet` (``topk``, ``token``, ``retry``, ...).

        Returns:
            The server's answer, ``packet_bytes``, ``latency_ms`` (image to answer) and ``rate``:
            the model id sent (with a variable-rate bundle's rate index and lambda), the reason, the deadline, every candidate's predicted latency, the
            estimates before this request, and the upload time it measured.
        """
        from frankensplit.runtime.edge.client import post_packet

        choice = self.chooser.choose()
        start = time.perf_counter()
        client, index = self.clients[choice.rate.name]
        packet = client.encode(image, index)
        edge_ms = (time.perf_counter() - start) * 1000
        answer = post_packet(url, packet, **post)
        request_ms = (time.perf_counter() - start) * 1000 - edge_ms
        server_ms = float(answer.get("decode_ms", 0.0)) + float(answer.get("queue_ms", 0.0))
        upload_ms = None
        if answer.get("attempts", 1) == 1:  # a retried request's time includes back-off
            upload_ms = self.chooser.observe(choice.rate, len(packet), edge_ms, request_ms,
                                             server_ms)
        latency = edge_ms + request_ms
        answer["packet_bytes"] = len(packet)
        answer["latency_ms"] = round(latency, 2)
        answer["rate"] = {
            "model_id": choice.rate.model_id, "rate_index": choice.rate.rate,
            "lambda": choice.rate.lmbda, "reason": choice.reason,
            "deadline_ms": self.chooser.deadline_ms,
            "within_deadline": latency <= self.chooser.deadline_ms,
            "ranked_by": self.chooser.ranked_by, "predicted_ms": choice.predicted_ms,
            "estimate": choice.estimate, "edge_ms": round(edge_ms, 2),
            "upload_ms": None if upload_ms is None else round(upload_ms, 2),
        }
        return answer

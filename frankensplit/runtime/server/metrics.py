"""Prometheus metrics of one server app (own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServerMetrics:
    """The server's counters and histograms.

    Model labels only ever take the ids of loaded models (or ``"-"``), never a value read from an
    unverified request, so a client cannot blow up the label cardinality. Statuses are those the
    server answers, plus ``499`` for a client that hung up before its body arrived (nginx's
    convention; nothing is sent). ``frankensplit_limit{name=...}`` publishes the configured
    limits, so a dashboard can put a gauge (open connections) next to its bound.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "frankensplit_requests", "Classify requests by model and HTTP status.",
            ["model", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "frankensplit_request_latency_seconds",
            "Successful classify requests, from the start of handling to the answer.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.bytes_received = Counter(
            "frankensplit_received_bytes", "Bytes of classify request bodies accepted.",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "frankensplit_batch_size", "Packets decoded together per batch.", ["model"],
            buckets=_BATCH_BUCKETS, registry=self.registry,
        )
        self.decoder_restarts = Counter(
            "frankensplit_decoder_restarts",
            "Entropy-decoder worker restarts (a payload crashed or stalled it).",
            registry=self.registry,
        )
        self.models_loaded = Gauge(
            "frankensplit_models_loaded", "Models ready to serve.", registry=self.registry
        )
        # connections (runtime.server.connections): what slow or idle clients hold, and what was cut
        self.open_connections = Gauge(
            "frankensplit_open_connections", "TCP connections open now.", registry=self.registry
        )
        self.connections_refused = Counter(
            "frankensplit_connections_refused",
            "Connections closed at once because max_connections were open.",
            registry=self.registry,
        )
        self.header_timeouts = Counter(
            "frankensplit_header_timeouts",
            "Connections closed because no complete request head came within header_timeout_s.",
            registry=self.registry,
        )
        self.limits = Gauge(
            "frankensplit_limit",
            "The server's configured limits (ServerConfig and ConnectionLimits fields).",
            ["name"], registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)

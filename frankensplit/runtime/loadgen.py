"""Closed-loop load on a classify server, with an account of every single request.

``clients`` threads each send one packet at a time (`client.post_packet`, retrying per the given
`RetryPolicy`) until ``duration_s`` has passed, then finish what they started. Every request gets
its own ``X-Request-Id`` and exactly one record, which ends in exactly one of:

- ``correct``: an answer whose echoed id is the request's and whose top-1 equals the reference
  answer for that packet;
- ``wrong``: an answer with another top-1 (never expected: classification is deterministic);
- ``failed``: a clear error (`client.ServerError` or ``OSError``, after the retries);
- ``lost``: no outcome when the run ended (a request that hung past every timeout).

So "nothing lost, nothing duplicated" is checked, not assumed: ``requests`` must equal
``correct + wrong + failed + lost`` and every id appears once. Retries are counted by cause (HTTP
status, or the connection error's type). Used by ``benchmarks/load.py``, ``benchmarks/faults.py``
and ``tests/test_reliability_runtime.py``. Torch-free.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.error
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from frankensplit.runtime.client import ServerError, post_packet
from frankensplit.runtime.retry import RetryPolicy

__all__ = ["LoadReport", "RequestRecord", "percentile", "run_load"]


@dataclass
class RequestRecord:
    """What happened to one request (one ``X-Request-Id``)."""

    request_id: str
    packet: int
    started: float
    finished: float | None = None
    top1: int | None = None
    echoed: str | None = None
    attempts: int = 0
    error: str | None = None
    retried: list[str] = field(default_factory=list)  # cause of each retry

    @property
    def latency_s(self) -> float | None:
        """Seconds from the first attempt to the outcome, retries and waits included."""
        return None if self.finished is None else self.finished - self.started


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by the nearest-rank method, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


def _cause(error: BaseException) -> str:
    if isinstance(error, ServerError):
        return str(error.status)
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        return type(error.reason).__name__
    return type(error).__name__


@dataclass
class LoadReport:
    """The outcome of a load run (see the module docstring for the categories)."""

    records: list[RequestRecord]
    expected_top1: Sequence[int]
    clients: int
    started: float
    duration_s: float

    def _outcome(self, r: RequestRecord) -> str:
        if r.finished is None:
            return "lost"
        if r.error is not None:
            return "failed"
        return "correct" if r.top1 == self.expected_top1[r.packet] else "wrong"

    def summary(self) -> dict[str, Any]:
        """Counts, retries by cause, throughput and latency percentiles, as plain data."""
        outcomes = Counter(self._outcome(r) for r in self.records)
        ids = Counter(r.request_id for r in self.records)
        done = [r for r in self.records if self._outcome(r) == "correct"]
        latencies = [r.latency_s * 1000 for r in done if r.latency_s is not None]
        end = max((r.finished for r in self.records if r.finished), default=self.started)
        elapsed = max(end - self.started, 1e-9)
        causes = Counter(c for r in self.records for c in r.retried)
        errors = Counter((r.error or "")[:200] for r in self.records if r.error is not None)
        return {
            "clients": self.clients,
            "duration_s": round(self.duration_s, 1),
            "elapsed_s": round(elapsed, 1),
            "requests": len(self.records),
            "successes": outcomes["correct"],
            "wrong_answers": outcomes["wrong"],
            "failures": outcomes["failed"],
            "lost": outcomes["lost"],
            "duplicate_ids": sum(n - 1 for n in ids.values() if n > 1),
            "unechoed": sum(1 for r in done if r.echoed != r.request_id),
            "retries": sum(causes.values()),
            "retries_by_cause": dict(sorted(causes.items())),
            "status_503_seen": causes["503"],
            "requests_retried": sum(1 for r in self.records if r.retried),
            "throughput_rps": round(outcomes["correct"] / elapsed, 2),
            "latency_ms": {
                name: None if (v := percentile(latencies, q)) is None else round(v, 1)
                for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
            } | {"max": round(max(latencies), 1) if latencies else None},
            "errors": dict(errors.most_common(5)),
        }


def _client_loop(
    index: int, url: str, packets: Sequence[bytes], end: float, records: list[RequestRecord],
    lock: threading.Lock, retry: RetryPolicy, token: str | None, timeout: float,
) -> None:
    """One client: send, wait for the outcome, record it, repeat until ``end``."""
    sent = 0
    while time.monotonic() < end:
        packet = (index + sent) % len(packets)
        record = RequestRecord(f"c{index}-{sent}-{uuid.uuid4().hex[:12]}", packet,
                               time.monotonic())
        with lock:
            records.append(record)  # before sending: a request that never ends stays "lost"
        sent += 1
        try:
            answer = post_packet(
                url, packets[packet], topk=1, token=token, timeout=timeout, retry=retry,
                request_id=record.request_id,
                on_retry=lambda _n, error, _wait, r=record: r.retried.append(_cause(error)),
            )
            record.top1 = int(answer["predictions"][0]["index"])
            record.echoed = answer["request_id"]
            record.attempts = int(answer["attempts"])
        except (ServerError, OSError) as e:
            record.error = f"{type(e).__name__}: {e}"
            record.attempts = len(record.retried) + 1
        except Exception as e:  # noqa: BLE001 - any other failure is a finding, not a crash
            record.error = f"unexpected {type(e).__name__}: {e}"
        record.finished = time.monotonic()


def run_load(
    url: str,
    packets: Sequence[bytes],
    expected_top1: Sequence[int],
    clients: int = 32,
    duration_s: float = 60.0,
    retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
    token: str | None = None,
    timeout: float = 30.0,
) -> LoadReport:
    """Run ``clients`` closed-loop clients for ``duration_s`` seconds; account for every request.

    Args:
        url: the server's base URL.
        packets: what to send; client ``i`` starts at packet ``i`` and goes round.
        expected_top1: the correct top-1 class index per packet (e.g. a first answer).
        clients: concurrent clients (threads; each waits for its answer before the next).
        duration_s: no request starts after this; started ones finish (with their retries).
        retry: each request's retry policy.
        token: bearer token, when the server requires one.
        timeout: seconds per attempt.

    Raises:
        ValueError: no packets, a reference missing, or a non-positive count or duration.
    """
    if not packets or len(expected_top1) != len(packets):
        raise ValueError(f"need one expected top-1 per packet, got {len(packets)} packets and "
                         f"{len(expected_top1)} answers")
    if clients < 1 or duration_s <= 0:
        raise ValueError(f"clients must be >= 1 and duration_s > 0, got {clients}, {duration_s}")
    records: list[RequestRecord] = []
    lock = threading.Lock()
    started = time.monotonic()
    end = started + duration_s
    threads = [
        threading.Thread(target=_client_loop, daemon=True, name=f"load-client-{i}",
                         args=(i, url, packets, end, records, lock, retry, token, timeout))
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    give_up = end + retry.deadline_s + timeout + 10.0  # past every timeout: a hang, not a wait
    for thread in threads:
        thread.join(timeout=max(give_up - time.monotonic(), 0.0))
    with lock:
        return LoadReport(list(records), list(expected_top1), clients, started, duration_s)

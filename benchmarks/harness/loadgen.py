"""Closed-loop load on a classify server, with an account of every single request.

``clients`` threads each send one packet at a time (`client.post_packet`, retrying per the given
`RetryPolicy`) until ``duration_s`` has passed, then finish what they started. Every request gets
its own ``X-Request-Id`` and exactly one record, which ends in exactly one of:

- ``correct``: an answer whose echoed id is the request's and whose top-``topk`` predictions are
  those of the reference probability vector of that packet (`answer_matches`);
- ``wrong``: any other answer (never expected: decoding is deterministic). The reference is the
  full probability vector of an in-process decoding of the same packet, so an answer that is
  another packet's (swapped inside a batch, say) is wrong even when its top-1 happens to agree;
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

from frankensplit.runtime.edge.client import ServerError, post_packet
from frankensplit.runtime.edge.retry import RetryPolicy

__all__ = ["LoadReport", "RequestRecord", "answer_matches", "percentile", "run_load"]

#: How far a served probability may be from the reference (float32, other batch compositions).
RTOL, ATOL = 1e-4, 1e-6


@dataclass
class RequestRecord:
    """What happened to one request (one ``X-Request-Id``)."""

    request_id: str
    packet: int
    started: float
    finished: float | None = None
    predictions: list[tuple[int, float]] | None = None  # (class index, probability), top-k
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


def answer_matches(
    predictions: Sequence[tuple[int, float]], reference: Sequence[float], topk: int,
    rtol: float = RTOL, atol: float = ATOL,
) -> bool:
    """Whether served top-``topk`` predictions are those of the ``reference`` probabilities.

    Each served probability must equal the reference one of its class (within ``rtol``/``atol``),
    in falling order, and no class left out may be more probable (beyond the tolerance), so two
    near-equal classes may come in either order but no other vector passes.
    """
    k = min(topk, len(reference))
    if len(predictions) != k or len({i for i, _ in predictions}) != k:
        return False
    tol = [atol + rtol * abs(p) for _, p in predictions]
    for (index, p), t in zip(predictions, tol):
        if not 0 <= index < len(reference) or abs(p - reference[index]) > t:
            return False
    probs = [p for _, p in predictions]
    if any(b > a + t for a, b, t in zip(probs, probs[1:], tol)):
        return False
    chosen = {i for i, _ in predictions}
    rest = max((p for i, p in enumerate(reference) if i not in chosen), default=0.0)
    return rest <= probs[-1] + tol[-1]


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
    expected: Sequence[Sequence[float]]
    topk: int
    clients: int
    started: float
    duration_s: float

    def _outcome(self, r: RequestRecord) -> str:
        if r.finished is None:
            return "lost"
        if r.error is not None:
            return "failed"
        ok = r.predictions is not None and answer_matches(
            r.predictions, self.expected[r.packet], self.topk)
        return "correct" if ok else "wrong"

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
    lock: threading.Lock, retry: RetryPolicy, token: str | None, timeout: float, topk: int,
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
                url, packets[packet], topk=topk, token=token, timeout=timeout, retry=retry,
                request_id=record.request_id,
                on_retry=lambda _n, error, _wait, r=record: r.retried.append(_cause(error)),
            )
            record.predictions = [(int(p["index"]), float(p["probability"]))
                                  for p in answer["predictions"]]
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
    expected: Sequence[Sequence[float]],
    clients: int = 32,
    duration_s: float = 60.0,
    retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
    token: str | None = None,
    timeout: float = 30.0,
    topk: int = 5,
) -> LoadReport:
    """Run ``clients`` closed-loop clients for ``duration_s`` seconds; account for every request.

    Args:
        url: the server's base URL.
        packets: what to send; client ``i`` starts at packet ``i`` and goes round.
        expected: per packet, the probability of every class from an in-process decoding of
            that packet (``softmax(server.decode(packets))``); see `answer_matches`.
        clients: concurrent clients (threads; each waits for its answer before the next).
        duration_s: no request starts after this; started ones finish (with their retries).
        retry: each request's retry policy.
        token: bearer token, when the server requires one.
        timeout: seconds per attempt.
        topk: classes asked for, and compared with the reference, per request.

    Raises:
        ValueError: no packets, a reference missing, or a non-positive count, duration or topk.
    """
    if not packets or len(expected) != len(packets):
        raise ValueError(f"need one reference probability vector per packet, got "
                         f"{len(packets)} packets and {len(expected)} references")
    if clients < 1 or duration_s <= 0 or topk < 1:
        raise ValueError(f"clients and topk must be >= 1 and duration_s > 0, got {clients}, "
                         f"{topk}, {duration_s}")
    expected = [[float(p) for p in vector] for vector in expected]
    records: list[RequestRecord] = []
    lock = threading.Lock()
    started = time.monotonic()
    end = started + duration_s
    threads = [
        threading.Thread(target=_client_loop, daemon=True, name=f"load-client-{i}",
                         args=(i, url, packets, end, records, lock, retry, token, timeout, topk))
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    give_up = end + retry.deadline_s + timeout + 10.0  # past every timeout: a hang, not a wait
    for thread in threads:
        thread.join(timeout=max(give_up - time.monotonic(), 0.0))
    with lock:
        return LoadReport(list(records), expected, topk, clients, started, duration_s)

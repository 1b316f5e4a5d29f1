"""Retrying idempotent requests: exponential backoff with jitter, ``Retry-After``, one deadline.

Why retrying a classify request is safe: the answer is a pure function of the packet, so sending
it twice can only produce the same answer twice, and the client keeps exactly one (matched by its
``X-Request-Id``, which stays the same on every attempt). What is retried is what a healthy retry
can fix: the server said it is overloaded or restarting (503, 429, 502 and 504 from it or a proxy)
or the connection failed (refused while it restarts, reset or cut short when it dies mid-answer,
timed out). A 4xx other than 429 is the request's own fault and fails at once: retrying bad
input only hides it.

Delays: attempt ``n`` (1 = the first retry) may wait up to ``min(max_delay_s, base_delay_s *
2**(n-1))``, drawn uniformly from its upper half ("equal jitter": clients that failed together do
not come back together, and none retries immediately). A ``Retry-After`` from the server is a
floor with up to one such step of jitter on top, so a herd that was told "1 s" spreads out after
1 s instead of returning at once. Everything fits in ``deadline_s``: a retry whose wait would end past the
deadline is not made, and each attempt's socket timeout is cut to the time left.

This module is torch-free (the edge client imports it).
"""

from __future__ import annotations

import email.utils
import http.client
import random
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar

__all__ = [
    "NO_RETRY",
    "RETRY_STATUSES",
    "RetryCallback",
    "RetryPolicy",
    "call_with_retry",
    "is_retryable",
    "parse_retry_after",
]

T = TypeVar("T")

#: HTTP statuses worth another attempt: overloaded, restarting or a gateway that lost the server.
RETRY_STATUSES = frozenset({429, 502, 503, 504})

#: Called before each retry with (retry number from 1, the error, the wait in seconds).
RetryCallback = Callable[[int, BaseException, float], None]

#: Ways a connection to a server that is restarting or dying fails (all safe to retry).
_CONNECTION_ERRORS = (
    ConnectionError,  # refused, reset, aborted, broken pipe (RemoteDisconnected is a reset)
    TimeoutError,  # socket.timeout
    http.client.IncompleteRead,  # the server died while sending the answer
    http.client.BadStatusLine,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a client tries before reporting an error.

    Attributes:
        retries: attempts after the first (0: never retry).
        base_delay_s: upper bound of the first retry's wait; doubles per retry.
        max_delay_s: cap of the exponential wait (a server's ``Retry-After`` may exceed it).
        deadline_s: total time for all attempts and waits; no retry starts that would end later.
    """

    retries: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0
    deadline_s: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise ValueError(f"RetryPolicy.retries must be an int >= 0, got {self.retries!r}")
        if not 0 < self.base_delay_s <= self.max_delay_s:
            raise ValueError(
                f"RetryPolicy needs 0 < base_delay_s <= max_delay_s, got {self.base_delay_s!r} "
                f"and {self.max_delay_s!r}"
            )
        if self.deadline_s <= 0:
            raise ValueError(f"RetryPolicy.deadline_s must be positive, got {self.deadline_s!r}")

    def delay(self, retry: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (from 1), honouring ``retry_after``."""
        if retry < 1:
            raise ValueError(f"retry numbers start at 1, got {retry}")
        cap = min(self.max_delay_s, self.base_delay_s * 2.0 ** (retry - 1))
        rng = rng or random  # type: ignore[assignment]
        if retry_after is None:
            return rng.uniform(cap / 2, cap)
        return max(retry_after, 0.0) + rng.uniform(0.0, cap)


#: A policy that makes exactly one attempt.
NO_RETRY = RetryPolicy(retries=0)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date), else None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # malformed: fall back to our own backoff
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = datetime.now(timezone.utc).timestamp() if now is None else now
    return max(when.timestamp() - now, 0.0)


def is_retryable(error: BaseException) -> bool:
    """Whether another attempt of an idempotent request could succeed after ``error``.

    An error with an integer ``status`` (``client.ServerError``, urllib's ``HTTPError``) is
    retryable when that status is in `RETRY_STATUSES`; a failed connection is retryable; name
    resolution, TLS and everything else are not (waiting does not fix them).
    """
    status = getattr(error, "status", None)
    if isinstance(error, urllib.error.HTTPError):
        status = error.code
    if isinstance(status, int):
        return status in RETRY_STATUSES
    if isinstance(error, urllib.error.URLError):  # urlopen wraps connect-time failures
        return isinstance(error.reason, _CONNECTION_ERRORS)
    return isinstance(error, _CONNECTION_ERRORS)


def call_with_retry(
    attempt: Callable[[float], T],
    policy: RetryPolicy,
    on_retry: RetryCallback | None = None,
    rng: random.Random | None = None,
) -> T:
    """Run ``attempt(timeout_s)`` until it succeeds, fails for good, or the policy is spent.

    Args:
        attempt: one try; gets the seconds left before the deadline (use it as socket timeout).
            Its exception decides: `is_retryable` ones are retried, others raised at once. A
            ``retry_after`` attribute (seconds) on the exception is honoured as a floor.
        policy: attempts, waits and deadline.
        on_retry: told about each retry before its wait (counting, logging).
        rng: jitter source (None: the ``random`` module), for reproducible tests.

    Returns:
        The first successful attempt's result.

    Raises:
        The last attempt's exception, unchanged, once retrying cannot help or is not allowed.
    """
    deadline = time.monotonic() + policy.deadline_s
    retry = 0
    while True:
        try:
            return attempt(max(deadline - time.monotonic(), 0.001))
        except Exception as error:
            retry += 1
            if retry > policy.retries or not is_retryable(error):
                raise
            wait = policy.delay(retry, getattr(error, "retry_after", None), rng)
            if time.monotonic() + wait >= deadline:
                raise
            if on_retry is not None:
                on_retry(retry, error, wait)
            time.sleep(wait)

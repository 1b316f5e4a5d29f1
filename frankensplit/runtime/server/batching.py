"""Dynamic batching of concurrent requests with a bounded wait.

Requests arriving while the model is busy queue up; when it frees, up to ``max_batch`` of them are
run together. With ``max_wait_s > 0`` the batcher also waits up to that long after the first request
for company, trading that much latency for bigger batches; with 0 it only batches what is already
queued (no added latency when idle). A full queue refuses new work instead of growing without bound.

Priority: an item may carry one (the server passes the request's attempt number, ``X-Attempt``).
Batches take the highest priority first, then the oldest; a full queue refuses the newcomer unless
it outranks a waiting item, in which case the newest of the lowest-ranked waiting items is refused
instead. Why: under sustained overload a client whose request was shed waits (``Retry-After``)
while clients that were just answered send their next request at once, so without priority the
same unlucky requests can be shed again and again until their retries run out (measured:
``benchmarks/load.py``, 32 clients on a queue of 8). Ranking retries first makes the wait of a
request grow with load, not with bad luck. Equal priorities keep first-in, first-out order.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["Batcher", "QueueFullError"]

T = TypeVar("T")
R = TypeVar("R")

#: Runs one batch; returns one result or exception per item, in order.
BatchFn = Callable[[list[T]], Awaitable[list["R | BaseException"]]]


class QueueFullError(RuntimeError):
    """More requests are waiting than the batcher accepts (the server answers 503)."""


@dataclass(order=True)
class _Waiting:
    rank: tuple[int, int]  # (-priority, arrival): sorts best first
    item: Any = field(compare=False)
    future: asyncio.Future = field(compare=False)


class Batcher(Generic[T, R]):
    """Collect items submitted concurrently into batches for ``fn``.

    Args:
        fn: async function running a batch; one result (or exception) per item, in order.
        max_batch: largest batch.
        max_wait_s: how long to wait for more items after the first (0: only what is queued).
        max_queue: most items waiting; beyond, the lowest-priority newest item is refused
            with `QueueFullError` (the newcomer itself unless it outranks a waiting item).
    """

    def __init__(
        self, fn: BatchFn, max_batch: int = 8, max_wait_s: float = 0.0, max_queue: int = 256
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._pending: list[_Waiting] = []
        self._arrivals = itertools.count()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Stop the loop; waiting items fail with ``CancelledError``."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._pending:
            self._pending.pop().future.cancel()

    def _admit(self, waiting: _Waiting) -> None:
        """Queue ``waiting``, refusing the worst-ranked item when the queue is full."""
        self._pending = [w for w in self._pending if not w.future.done()]  # timed out, gone
        if len(self._pending) >= self.max_queue:
            worst = max(self._pending)  # lowest priority, newest
            error = QueueFullError(
                f"{len(self._pending)} requests already waiting (max_queue {self.max_queue})"
            )
            if worst.rank[0] <= waiting.rank[0]:
                raise error  # the newcomer ranks no higher than anything waiting
            self._pending.remove(worst)
            worst.future.set_exception(QueueFullError(
                f"displaced from the full queue (max_queue {self.max_queue}) by a request on a "
                "later attempt"
            ))
        self._pending.append(waiting)

    async def submit(self, item: T, priority: int = 0) -> R:
        """Queue ``item`` and wait for its result (or its exception).

        Args:
            item: what to run.
            priority: higher runs earlier and is refused later (the server: attempt number).

        Raises:
            QueueFullError: the queue was full and ``item`` ranked lowest, or it was displaced
                while waiting by a higher-priority item.
        """
        if self._task is None or self._wakeup is None:
            raise RuntimeError("Batcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        self._admit(_Waiting((-priority, next(self._arrivals)), item, future))
        self._wakeup.set()
        return await future

    async def _next_batch(self) -> list[tuple[Any, asyncio.Future]]:
        assert self._wakeup is not None
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(self._pending) < self.max_batch and (remaining := deadline - loop.time()) > 0:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break
        self._pending.sort()  # best first: highest priority, then oldest
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        return [(w.item, w.future) for w in batch if not w.future.done()]

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue  # every waiter went away (client disconnects)
            try:
                results = await self.fn([item for item, _ in batch])
            except Exception as e:  # noqa: BLE001 - delivered to every waiter of the batch
                results = [e] * len(batch)
            for (_, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

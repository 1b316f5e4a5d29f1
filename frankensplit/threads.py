"""Scoped torch thread counts and random state: library calls leave no process-wide state behind.

``torch.set_num_threads`` and ``torch.manual_seed`` change the whole process. A library call that
sets them (an evaluation, a training run, the demo) would make every later result in the same
process depend on what ran first: the Entropic Student encoder's packets, for one, differ between
1 and 2 threads (GDN sums in another order, a rounding tie flips). So every call that needs a
thread count or a seed takes it for its own duration only, through these context managers, and
the caller's values come back on exit, even on an exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["seeded", "torch_threads"]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` intra-op torch threads, then restore the caller's count.

    Args:
        threads: threads for the block; None keeps the current count.

    Yields:
        the thread count in force inside the block.

    Raises:
        ValueError: ``threads`` is not a positive int.
    """
    import torch

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded by ``seed``, then restore its state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield

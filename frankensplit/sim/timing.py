"""Timing one stage: wall-clock and process CPU time of repeated runs (no torch here).

Used by :mod:`frankensplit.sim.measure` and :mod:`frankensplit.sim.measure_teachers` (and the
benchmarks), so both time every stage the same way.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

from frankensplit.sim.profile import stat

__all__ = ["Samples", "cpu_name", "time_ms"]


class Samples:
    """Wall-clock and CPU times (ms) of repeated runs of one stage.

    CPU time is the process's (all its threads): on a machine shared with other jobs the wall
    time includes waiting for a core, CPU time does not, so it estimates the stage on an idle
    core (for multi-threaded stages it is the sum over threads, an upper bound of the work).
    """

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __iadd__(self, other: Samples) -> Samples:  # noqa: PYI034 - not subclassed
        self.wall += other.wall
        self.cpu += other.cpu
        return self

    def __add__(self, other: Samples) -> Samples:
        """Run-by-run sum of two stages timed on the same runs."""
        out = Samples()
        out.wall = [a + b for a, b in zip(self.wall, other.wall)]
        out.cpu = [a + b for a, b in zip(self.cpu, other.cpu)]
        return out

    def stat(self) -> dict[str, float | int]:
        """``stat`` of the wall times plus ``cpu_median_ms`` and ``cpu_p90_ms``."""
        cpu = stat(self.cpu)
        return {**stat(self.wall), "cpu_median_ms": cpu["median_ms"], "cpu_p90_ms": cpu["p90_ms"]}


def time_ms(fn: Callable[[], object], repeat: int, warmup: int) -> Samples:
    """Wall and CPU ms of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = Samples()
    for _ in range(repeat):
        cpu, start = time.process_time(), time.perf_counter()
        fn()
        samples.wall.append((time.perf_counter() - start) * 1000.0)
        samples.cpu.append((time.process_time() - cpu) * 1000.0)
    return samples


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

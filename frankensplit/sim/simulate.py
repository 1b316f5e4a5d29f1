"""Scenarios through the latency model: costs from a device profile, tables of latency and ratios.

```
profile.json --edge/server/codec times--+
scenario (bytes at matched top-1) ------+--> Cost per method --end_to_end(link)--> Breakdown
links ----------------------------------+                     --crossover_mbit_per_s--> verdict
```

FrankenSplit's cost: edge = the chosen back end's g_a + entropy encode; server = parse + entropy
decode + g_s + tail (medians of the per-run sums). A codec's cost: edge = encode, server = decode +
the whole teacher, with the codec's times read at the matched quality
(:func:`frankensplit.sim.profile.codec_ms`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from frankensplit.sim.latency import Breakdown, Cost, Wire, crossover_mbit_per_s, end_to_end
from frankensplit.sim.links import Link
from frankensplit.sim.matching import Scenario
from frankensplit.sim.profile import codec_ms, median_ms

__all__ = ["Result", "costs", "run_scenario", "verdict"]


@dataclass(frozen=True)
class Result:
    """One scenario simulated on every link.

    Attributes:
        scenario: what was compared.
        costs: FrankenSplit first, then each codec with bytes.
        breakdowns: one per (link, method), links in the given order.
        crossovers: codec -> rate (Mbit/s) where it takes as long as FrankenSplit, or None.
        notes: what was left out and why.
    """

    scenario: Scenario
    costs: list[Cost]
    breakdowns: list[Breakdown]
    crossovers: dict[str, float | None]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (totals included)."""
        return {
            "scenario": asdict(self.scenario),
            "costs": [asdict(c) for c in self.costs],
            "breakdowns": [{**asdict(b), "total_ms": b.total_ms} for b in self.breakdowns],
            "crossovers_mbit_per_s": self.crossovers,
            "notes": self.notes,
        }


def costs(profile: dict[str, Any], scenario: Scenario, edge: str,
          clock: str = "wall") -> tuple[list[Cost], list[str]]:
    """Per-request costs of the scenario's methods, and notes on those left out.

    ``clock`` picks the profile's wall-clock or CPU medians (:data:`~frankensplit.sim.profile.CLOCKS`).

    Raises:
        ValueError: an edge back end the profile lacks, FrankenSplit without bytes, or a teacher
            other than the profile's (its times would price another network).
    """
    fs_profile = profile["frankensplit"]
    if edge not in fs_profile["edge"]:
        raise ValueError(f"edge back end {edge!r} is not in the profile; it has "
                         f"{sorted(fs_profile['edge'])}")
    if scenario.teacher != profile["teacher"]:
        raise ValueError(f"the eval result is for teacher {scenario.teacher!r}, the profile for "
                         f"{profile['teacher']!r}")
    fs = scenario.frankensplit
    if fs.bytes is None:
        raise ValueError(f"{scenario.title}: FrankenSplit's curve gives no bytes ({fs.status})")
    out = [Cost("frankensplit", fs.setting, fs.bytes,
                median_ms(fs_profile["edge"][edge]["total"], clock),
                median_ms(fs_profile["server"]["total"], clock), scenario.target_top1)]
    notes = []
    teacher_ms = median_ms(profile["teacher_ms"]["forward"], clock)
    for name, m in scenario.codecs.items():
        if m.bytes is None:
            notes.append(f"{name}: no bytes at this accuracy ({m.status}); left out")
            continue
        if name not in profile["codecs"]:
            notes.append(f"{name}: the profile has no timings for it; left out")
            continue
        if m.quality is not None:
            enc, dec = codec_ms(profile, name, quality=m.quality, clock=clock)
        else:
            enc, dec = codec_ms(profile, name, num_bytes=m.bytes, clock=clock)
            notes.append(f"{name}: times read at the profile setting of similar size "
                         f"({m.bytes:.0f} B), not at a known quality")
        out.append(Cost(name, m.setting, m.bytes, enc, dec + teacher_ms, scenario.target_top1))
    return out, notes


def verdict(codec: str, crossover: float | None, fs: Cost, cost: Cost, wire: Wire) -> str:
    """One sentence: where offloading with ``codec`` beats FrankenSplit."""
    if crossover is not None:
        more_bits = cost.payload_bytes > fs.payload_bytes
        side = "above" if more_bits else "below"
        return (f"offloading with {codec} is faster {side} {crossover:.3g} Mbit/s "
                f"(FrankenSplit {'below' if more_bits else 'above'} it)")
    slow = end_to_end(fs, Link("probe", 1.0, 0.0), wire).total_ms
    fast = end_to_end(cost, Link("probe", 1.0, 0.0), wire).total_ms
    if fast < slow:
        return f"offloading with {codec} is faster at every rate (fewer bytes, less compute)"
    return f"FrankenSplit is faster than {codec} at every rate"


def run_scenario(
    profile: dict[str, Any], scenario: Scenario, links: Sequence[Link], edge: str,
    wire: Wire | None = None, clock: str = "wall",
) -> Result:
    """Simulate one scenario on every link (compute priced by ``clock``, see `costs`)."""
    wire = wire or Wire()
    method_costs, notes = costs(profile, scenario, edge, clock)
    breakdowns = [end_to_end(c, link, wire) for link in links for c in method_costs]
    fs = method_costs[0]
    crossovers = {c.method: crossover_mbit_per_s(fs, c, wire) for c in method_costs[1:]}
    return Result(scenario, method_costs, breakdowns, crossovers,
                  [*scenario.notes, *notes])

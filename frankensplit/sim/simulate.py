"""Scenarios through the latency model: costs from a device profile, tables of latency and ratios.

```
profile.json --edge/server/codec/local times--+
scenario (bytes at matched top-1) ------------+--> Cost per method --end_to_end(link)--> Breakdown
device slowdown N (edge times x N) -----------+      --faster_rates / break-even--> Conditions
links ----------------------------------------+
```

FrankenSplit's cost: edge = the chosen back end's g_a + entropy encode; server = parse + entropy
decode + g_s + tail (medians of the per-run sums). A codec's cost: edge = encode, server = decode +
the whole teacher, with the codec's times read at the matched quality
(:func:`frankensplit.sim.profile.codec_ms`). Local execution: the whole teacher on the edge, no
link, no server.

Every cost says where its bytes come from (``bytes_from``: a measured model, an interpolation
between two, a codec's curve) and whose profiled times price it (``compute_from``). A *what-if*
teacher (``profile["teachers"]``, random weights) is priced with its own server side and local
execution and the profiled model's bytes and edge: its rows say that the bytes are a what-if
and its accuracy was not measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from frankensplit.sim.latency import (
    Breakdown,
    Cost,
    Rates,
    Wire,
    crossover_mbit_per_s,
    end_to_end,
    faster_rates,
    intersect,
    local_break_even_slowdown,
)
from frankensplit.sim.links import Link
from frankensplit.sim.matching import Scenario
from frankensplit.sim.profile import codec_ms, median_ms, profiled_setting

__all__ = ["LOCAL_METHOD", "Conditions", "Result", "conditions", "costs", "run_scenario",
           "verdict"]

#: ``method`` of the local-execution cost (the device runs the whole teacher itself).
LOCAL_METHOD = "local"


@dataclass(frozen=True)
class Result:
    """One scenario simulated on every link, for one server teacher on one device.

    Attributes:
        scenario: what was compared.
        teacher: the teacher the server (or the device, locally) runs.
        what_if: True for a larger teacher priced with the profiled model's bytes.
        slowdown: the device is this many times slower than the profiled machine.
        costs: FrankenSplit first, then each codec with bytes, then local execution.
        breakdowns: one per (link, method), links in the given order.
        crossovers: codec -> rate (Mbit/s) where it takes as long as FrankenSplit, or None.
        notes: what was left out and why.
    """

    scenario: Scenario
    teacher: str
    what_if: bool
    slowdown: float
    costs: list[Cost]
    breakdowns: list[Breakdown]
    crossovers: dict[str, float | None]
    notes: list[str]

    @property
    def key(self) -> str:
        """File-name key: the scenario's, plus the teacher for a what-if."""
        return self.scenario.key + (f"-{self.teacher}" if self.what_if else "")

    @property
    def codec_costs(self) -> list[Cost]:
        """The offloading costs (neither FrankenSplit nor local execution)."""
        return [c for c in self.costs[1:] if c.offloaded]

    @property
    def local(self) -> Cost:
        """Local execution's cost."""
        return next(c for c in self.costs if not c.offloaded)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (totals included)."""
        return {
            "key": self.key, "teacher": self.teacher, "what_if": self.what_if,
            "device_slowdown": self.slowdown,
            "scenario": asdict(self.scenario),
            "costs": [asdict(c) for c in self.costs],
            "breakdowns": [{**asdict(b), "total_ms": b.total_ms} for b in self.breakdowns],
            "crossovers_mbit_per_s": self.crossovers,
            "notes": self.notes,
        }


def _local_backend(profile: dict[str, Any], local: dict[str, Any], edge: str) -> tuple[str, str]:
    if edge in local:
        return edge, ""
    backend = next(iter(local))
    return backend, (f"local execution timed on {backend}, the profile has no {edge} timing of "
                     "the whole teacher")


def _local_label(server: dict[str, Any], teacher: str, backend: str, what_if: bool,
                 clock: str) -> str:
    weights = (f" from {server['model_id']} ({server['teacher_weights']} weights, latency is "
               "weight-independent)" if what_if else " profiled")
    return f"whole {teacher}{weights} on the edge, {backend} ({clock} clock)"


def _compute_sources(profile: dict[str, Any], teacher: str | None, edge: str, clock: str,
                     ) -> tuple[dict[str, Any], str, str]:
    """The profile part pricing the server (and local execution), and two labels: FrankenSplit's
    compute, and the teacher's (for codecs and local execution)."""
    model, name = profiled_setting(profile), profile["teacher"]
    threads = f"server torch threads {profile['server_threads']}, {clock} clock"
    if teacher is None or teacher == name:
        own = {"server": profile["frankensplit"]["server"], "teacher_ms": profile["teacher_ms"],
               "local": profile["local"]}
        return (own, f"{model} profiled (edge {edge}; {threads})",
                f"{name} profiled ({threads})")
    if teacher not in profile["teachers"]:
        raise ValueError(f"the profile has no what-if teacher {teacher!r}; it has "
                         f"{sorted(profile['teachers'])}: `frankensplit profile --teachers "
                         f"{teacher}` times one")
    other = profile["teachers"][teacher]
    weights = f"{other['teacher_weights']} weights, latency is weight-independent"
    fs_label = (f"edge {other['edge_from']} ({edge}); server {other['model_id']}'s g_s and tail "
                f"on {other['edge_from']}'s packets ({weights}; {threads})")
    return other, fs_label, f"{teacher} from {other['model_id']} ({weights}; {threads})"


def costs(profile: dict[str, Any], scenario: Scenario, edge: str, clock: str = "wall",
          teacher: str | None = None, slowdown: float = 1.0) -> tuple[list[Cost], list[str]]:
    """Per-request costs of the scenario's methods and of local execution, and notes on those
    left out.

    Args:
        profile: a device profile.
        scenario: bytes per method.
        edge: the edge back end (``onnx-1``, ...), also local execution's where timed.
        clock: the profile's wall-clock or CPU medians (:data:`~frankensplit.sim.profile.CLOCKS`).
        teacher: a what-if teacher of ``profile["teachers"]`` (None: the profiled model's).
        slowdown: the device is this many times slower than the profiled machine (edge x N).

    Raises:
        ValueError: an edge back end or what-if teacher the profile lacks, FrankenSplit without
            bytes, or an eval result for another teacher than the profile's.
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
    server, fs_compute, teacher_compute = _compute_sources(profile, teacher, edge, clock)
    name = teacher or profile["teacher"]
    what_if = name != profile["teacher"]

    def bytes_from(source: str) -> str:
        return (f"what-if: {source} with {profile['teacher']}; accuracy not measured for {name}"
                if what_if else source)

    def setting(text: str) -> str:
        return f"{text} (what-if)" if what_if else text

    out = [Cost("frankensplit", setting(fs.setting), fs.bytes,
                median_ms(fs_profile["edge"][edge]["total"], clock),
                median_ms(server["server"]["total"], clock), scenario.target_top1,
                bytes_from(fs.source), fs_compute)]
    notes = []
    teacher_ms = median_ms(server["teacher_ms"]["forward"], clock)
    for codec, m in scenario.codecs.items():
        if m.bytes is None:
            notes.append(f"{codec}: no bytes at this accuracy ({m.status}); left out")
            continue
        if codec not in profile["codecs"]:
            notes.append(f"{codec}: the profile has no timings for it; left out")
            continue
        if m.quality is not None:
            enc, dec = codec_ms(profile, codec, quality=m.quality, clock=clock)
            at = f"q{m.quality:.1f}"
        else:
            enc, dec = codec_ms(profile, codec, num_bytes=m.bytes, clock=clock)
            at = f"the profile setting of similar size ({m.bytes:.0f} B), not a known quality"
        out.append(Cost(codec, setting(m.setting), m.bytes, enc, dec + teacher_ms,
                        scenario.target_top1, bytes_from(m.source),
                        f"{codec} at {at} (profile) + {teacher_compute} on the server"))
    backend, note = _local_backend(profile, server["local"], edge)
    notes += [note] if note else []
    out.append(Cost(LOCAL_METHOD, name, 0.0, median_ms(server["local"][backend], clock), 0.0,
                    None, "none sent: the device runs the whole teacher (its own top-1)",
                    _local_label(server, name, backend, what_if, clock), offloaded=False))
    return [c.on_device(slowdown) for c in out], notes


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
    wire: Wire | None = None, clock: str = "wall", teacher: str | None = None,
    slowdown: float = 1.0,
) -> Result:
    """Simulate one scenario on every link (see `costs` for the arguments)."""
    wire = wire or Wire()
    method_costs, notes = costs(profile, scenario, edge, clock, teacher, slowdown)
    breakdowns = [end_to_end(c, link, wire) for link in links for c in method_costs]
    fs = method_costs[0]
    crossovers = {c.method: crossover_mbit_per_s(fs, c, wire) for c in method_costs[1:]
                  if c.offloaded}
    name = teacher or profile["teacher"]
    return Result(scenario, name, name != profile["teacher"], slowdown, method_costs, breakdowns,
                  crossovers, [*scenario.notes, *notes])


@dataclass(frozen=True)
class Conditions:
    """Where FrankenSplit wins, for one result on a device ``slowdown`` times slower.

    Attributes:
        slowdown: device slowdown against the profiled machine.
        rtt_ms: round-trip time of the rate intervals.
        beats_codecs: link rates (Mbit/s) where FrankenSplit is faster than every codec at the
            scenario's top-1 (None: nowhere; ``(0, inf)``: everywhere).
        beats_local: link rates where it is faster than local execution.
        beats_all: both at once.
        local_break_even: per link name, the slowdown below which (a faster device) local
            execution wins (None: it wins on every device; the device speed is then no lever).
    """

    slowdown: float
    rtt_ms: float
    beats_codecs: Rates | None
    beats_local: Rates | None
    beats_all: Rates | None
    local_break_even: dict[str, float | None]


def conditions(result: Result, slowdowns: Sequence[float], links: Sequence[Link],
               wire: Wire | None = None, rtt_ms: float = 50.0) -> list[Conditions]:
    """`Conditions` at each device slowdown (relative to the profiled machine)."""
    wire = wire or Wire()
    base = [c.on_device(1.0 / result.slowdown) for c in result.costs]
    fs0, local0 = base[0], next(c for c in base if not c.offloaded)
    break_even = {link.name: local_break_even_slowdown(fs0, local0, link, wire) for link in links}
    out = []
    for n in slowdowns:
        fs, *others = [c.on_device(n) for c in base]
        codecs = [faster_rates(fs, c, wire, rtt_ms) for c in others if c.offloaded]
        local = faster_rates(fs, next(c for c in others if not c.offloaded), wire, rtt_ms)
        beats_codecs = intersect(codecs) if codecs else (0.0, math.inf)
        out.append(Conditions(n, rtt_ms, beats_codecs, local, intersect([beats_codecs, local]),
                              break_even))
    return out

"""Writing simulation results: markdown tables, CSV, JSON and the plots.

In the tables, ratios are the alternative's latency / FrankenSplit's on the same link: above 1
FrankenSplit is faster. The device-speed plot (`plot_ratio`) draws the inverse, FrankenSplit /
the best alternative (the fastest codec at matched top-1, or local execution): below 1
FrankenSplit wins.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from frankensplit.sim.latency import Breakdown, Rates, Wire, end_to_end
from frankensplit.sim.links import Link
from frankensplit.sim.simulate import LOCAL_METHOD, Conditions, Result, conditions, verdict

__all__ = ["CSV_FIELDS", "conditions_md", "markdown", "plot", "plot_ratio", "rates_text",
           "write_outputs"]

CSV_FIELDS = ("scenario", "teacher", "what_if", "device_slowdown", "link", "mbit_per_s", "rtt_ms",
              "method", "setting", "payload_bytes", "edge_ms", "uplink_ms", "rtt_total_ms",
              "server_ms", "downlink_ms", "total_ms", "ratio_vs_frankensplit", "bytes_from",
              "compute_from")


def _label(method: str) -> str:
    return {"frankensplit": "FrankenSplit", LOCAL_METHOD: "local execution"}.get(method, method)


def rates_text(rates: Rates | None) -> str:
    """An interval of link rates in words: "below 2.5 Mbit/s", "at every rate", ..."""
    if rates is None:
        return "at no rate"
    low, high = rates
    if low <= 0 and math.isinf(high):
        return "at every rate"
    if low <= 0:
        return f"below {high:.3g} Mbit/s"
    if math.isinf(high):
        return f"above {low:.3g} Mbit/s"
    return f"between {low:.3g} and {high:.3g} Mbit/s"


def conditions_md(result: Result, found: Sequence[Conditions]) -> list[str]:
    """Where FrankenSplit beats (a) the best codec and (b) local execution, per device speed,
    and the device speed at which local execution starts to win, per link."""
    if not found:
        return []
    lines = [(f"Where FrankenSplit wins ({result.teacher}; device N times slower than the profiled "
             f"machine: edge times x N, server times unchanged; RTT {found[0].rtt_ms:g} ms):"), ""]
    for c in found:
        lines.append(f"- N = {c.slowdown:g}: beats the best codec at this top-1 "
                     f"{rates_text(c.beats_codecs)}; beats local execution "
                     f"{rates_text(c.beats_local)}; beats both {rates_text(c.beats_all)}")
    for link, n in found[0].local_break_even.items():
        if n is None:
            lines.append(f"- {link}: local execution wins on every device (it takes no longer "
                         "on the edge than FrankenSplit's encoder)")
        else:
            lines.append(f"- {link}: local execution wins for N < {n:.3g} (a device more than "
                         f"{1 / n:.3g}x as fast as the profiled machine), FrankenSplit for "
                         f"N > {n:.3g}")
    return [*lines, ""]


def _by_link(result: Result) -> dict[str, dict[str, Breakdown]]:
    out: dict[str, dict[str, Breakdown]] = {}
    for b in result.breakdowns:
        out.setdefault(b.link, {})[b.method] = b
    return out


def _title(result: Result) -> str:
    kind = "what-if teacher" if result.what_if else "teacher"
    device = "" if result.slowdown == 1 else f", device {result.slowdown:g}x slower"
    return f"{result.scenario.title}; {kind} {result.teacher}{device}"


def _scenario_md(result: Result, links: Sequence[Link], wire: Wire,
                 found: Sequence[Conditions] = ()) -> list[str]:
    lines = [f"## {_title(result)}", "",
             "| method | setting | bytes/request | edge ms | server ms | bytes from | compute from |",
             "|---|---|---:|---:|---:|---|---|"]
    for c in result.costs:
        lines.append(f"| {_label(c.method)} | {c.setting} | {c.payload_bytes:,.0f} | "
                     f"{c.edge_ms:.1f} | {c.server_ms:.1f} | {c.bytes_from} | {c.compute_from} |")
    others = [c.method for c in result.costs[1:]]
    head = "| link | Mbit/s | RTT ms | FrankenSplit ms |" + "".join(
        f" {_label(c)} ms | {_label(c)} / FS |" for c in others)
    intro = ("End-to-end latency per request and the ratio alternative / FrankenSplit "
             "(> 1: FrankenSplit faster):")
    lines += ["", intro, "", head, "|---|---:|---:|---:|" + "---:|---:|" * len(others)]
    rows = _by_link(result)
    for link in links:
        row = rows[link.name]
        fs = row["frankensplit"].total_ms
        cells = "".join(f" {row[c].total_ms:.1f} | {row[c].total_ms / fs:.2f} |" for c in others)
        lines.append(f"| {link.name} | {link.mbit_per_s:g} | {link.rtt_ms:g} | {fs:.1f} |{cells}")
    lines += ["", "Where offloading wins:", ""]
    for c in result.codec_costs:
        wins = [link.name for link in links
                if rows[link.name][c.method].total_ms < rows[link.name]["frankensplit"].total_ms]
        where = ", ".join(wins) if wins else "none"
        lines.append(f"- {verdict(c.method, result.crossovers[c.method], result.costs[0], c, wire)}"
                     f"; links where it wins: {where}")
    wins = [link.name for link in links
            if rows[link.name][LOCAL_METHOD].total_ms < rows[link.name]["frankensplit"].total_ms]
    lines.append(f"- local execution is faster on: {', '.join(wins) if wins else 'none'}")
    lines += [f"- note: {n}" for n in result.notes]
    return [*lines, "", *conditions_md(result, found)]


def markdown(results: Sequence[Result], links: Sequence[Link], wire: Wire,
             header: Sequence[str] = (), slowdowns: Sequence[float] = (),
             rtt_ms: float = 50.0) -> str:
    """All scenarios as one markdown document (with `conditions_md` at each of ``slowdowns``)."""
    lines = [("# End-to-end latency: FrankenSplit vs offloading with standard codecs vs local "
             "execution"), "", *header, "", f"Wire model: {asdict(wire)}", ""]
    for result in results:
        found = conditions(result, slowdowns, links, wire, rtt_ms) if slowdowns else []
        lines += _scenario_md(result, links, wire, found)
    return "\n".join(lines)


def _csv_rows(result: Result) -> list[dict[str, Any]]:
    rows = []
    sources = {c.method: c for c in result.costs}
    for link, by_method in _by_link(result).items():
        fs = by_method["frankensplit"].total_ms
        for b in by_method.values():
            rows.append({
                "scenario": result.scenario.key, "teacher": result.teacher,
                "what_if": result.what_if, "device_slowdown": result.slowdown, "link": link, "mbit_per_s": b.mbit_per_s,
                "rtt_ms": None, "method": b.method, "setting": b.setting,
                "payload_bytes": round(b.payload_bytes, 1), "edge_ms": round(b.edge_ms, 3),
                "uplink_ms": round(b.uplink_ms, 3), "rtt_total_ms": round(b.rtt_ms, 3),
                "server_ms": round(b.server_ms, 3), "downlink_ms": round(b.downlink_ms, 3),
                "total_ms": round(b.total_ms, 3), "ratio_vs_frankensplit": round(b.total_ms / fs, 4),
                "bytes_from": sources[b.method].bytes_from,
                "compute_from": sources[b.method].compute_from,
            })
    return rows


def plot(result: Result, links: Sequence[Link], wire: Wire, path: str | Path,
         rtt_ms: float = 50.0) -> Path:
    """Latency (top) and ratio codec / FrankenSplit (bottom) against the link rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = np.logspace(-1.5, 3, 200)  # 0.03 .. 1000 Mbit/s
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    fs = [end_to_end(result.costs[0], Link("r", r, rtt_ms), wire).total_ms for r in rates]
    for i, cost in enumerate(result.costs):
        total = [end_to_end(cost, Link("r", r, rtt_ms), wire).total_ms for r in rates]
        label = f"{_label(cost.method)} ({cost.payload_bytes / 1000:.1f} KB)"
        top.plot(rates, total, label=label, color=f"C{i}")
        if i:
            bottom.plot(rates, np.array(total) / np.array(fs), color=f"C{i}",
                        label=f"{_label(cost.method)} / FrankenSplit")
    bottom.axhline(1.0, color="grey", lw=0.8)
    for axis in (top, bottom):
        for link in links:
            axis.axvline(link.mbit_per_s, color="grey", ls=":", lw=0.8)
        axis.set_xscale("log")
        axis.grid(True, which="both", alpha=0.3)
    for link in links:
        top.annotate(link.name, (link.mbit_per_s, 1.0), xycoords=("data", "axes fraction"),
                     ha="center", va="bottom", fontsize=8)
    top.set_yscale("log")
    top.set_ylabel("end-to-end latency per request (ms)")
    bottom.set_ylabel("alternative / FrankenSplit")
    bottom.set_xlabel(f"link rate (Mbit/s), RTT {rtt_ms:g} ms")
    top.legend(fontsize=8)
    bottom.legend(fontsize=8)
    fig.suptitle(_title(result), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _conditions_json(found: Conditions) -> dict[str, Any]:
    """`Conditions` as strict JSON: each interval ``{"low", "high"}`` in Mbit/s (``high`` null:
    no upper bound) or null (no rate)."""
    def rates(r: Rates | None) -> dict[str, float | None] | None:
        return None if r is None else {"low": r[0], "high": None if math.isinf(r[1]) else r[1]}

    return {"device_slowdown": found.slowdown, "rtt_ms": found.rtt_ms,
            "beats_codecs_mbit_per_s": rates(found.beats_codecs),
            "beats_local_mbit_per_s": rates(found.beats_local),
            "beats_all_mbit_per_s": rates(found.beats_all),
            "local_wins_below_slowdown": found.local_break_even}


def _ratio_curves(result: Result, slowdown: float, rates: np.ndarray, wire: Wire,
                  rtt_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """FrankenSplit / the best alternative, and / the best codec, at each rate."""
    scaled = [c.on_device(slowdown / result.slowdown) for c in result.costs]
    totals = np.array([[end_to_end(c, Link("r", r, rtt_ms), wire).total_ms for r in rates]
                       for c in scaled])  # (methods, rates)
    codecs = [i for i, c in enumerate(scaled) if i and c.offloaded]
    best_codec = totals[codecs].min(axis=0) if codecs else np.full(len(rates), np.inf)
    return totals[0] / totals[1:].min(axis=0), totals[0] / best_codec


def plot_ratio(results: Sequence[Result], slowdowns: Sequence[float], links: Sequence[Link],
               wire: Wire, path: str | Path, rtt_ms: float = 50.0) -> Path:
    """FrankenSplit / the best alternative against the link rate, one line per device slowdown,
    one panel per teacher (solid: best of codecs and local execution; dotted: best codec only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = np.logspace(-1.5, 3, 200)  # 0.03 .. 1000 Mbit/s
    fig, axes = plt.subplots(len(results), 1, figsize=(7, 3.2 * len(results)), sharex=True,
                             squeeze=False)
    for axis, result in zip(axes[:, 0], results):
        for i, n in enumerate(slowdowns):
            best, codec = _ratio_curves(result, n, rates, wire, rtt_ms)
            axis.plot(rates, best, color=f"C{i}", label=f"device {n:g}x slower")
            axis.plot(rates, codec, color=f"C{i}", ls=":", lw=1)
        axis.axhline(1.0, color="grey", lw=0.8)
        for link in links:
            axis.axvline(link.mbit_per_s, color="grey", ls=":", lw=0.8)
            axis.annotate(link.name, (link.mbit_per_s, 1.0), xycoords=("data", "axes fraction"),
                          ha="center", va="bottom", fontsize=7)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        kind = ("what-if: the profiled model's bytes, accuracy not measured" if result.what_if
                else "measured bytes")
        axis.set_title(f"{result.teacher} ({kind})", fontsize=8, loc="left", pad=12)
        axis.set_ylabel("FrankenSplit / best")
    axes[0, 0].legend(fontsize=7, title="solid: vs best of codecs and local; dotted: best codec",
                      title_fontsize=7)
    axes[-1, 0].set_xlabel(f"link rate (Mbit/s), RTT {rtt_ms:g} ms; below 1: FrankenSplit faster")
    fig.suptitle(results[0].scenario.title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(results: Sequence[Result], links: Sequence[Link], wire: Wire, out: str | Path,
                  meta: dict[str, Any], draw: bool = True, plot_rtt_ms: float = 50.0,
                  slowdowns: Sequence[float] = (1.0,)) -> dict[str, Path]:
    """latency.md, latency.csv, latency.json, one latency plot per result and one device-speed
    plot per scenario (``ratio_vs_bandwidth_<scenario>.png``) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = [f"- {k}: {v}" for k, v in meta.items()]
    paths = {"markdown": out / "latency.md", "csv": out / "latency.csv",
             "json": out / "latency.json"}
    paths["markdown"].write_text(markdown(results, links, wire, header, slowdowns,
                                          plot_rtt_ms) + "\n")
    link_rtt = {link.name: link.rtt_ms for link in links}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for result in results:
            for row in _csv_rows(result):
                writer.writerow({**row, "rtt_ms": link_rtt[row["link"]]})
    paths["json"].write_text(json.dumps({
        "meta": meta, "wire": asdict(wire), "links": [asdict(link) for link in links],
        "scenarios": [r.to_dict() for r in results],
        "conditions": {r.key: [_conditions_json(c) for c in conditions(
            r, slowdowns, links, wire, plot_rtt_ms)] for r in results},
    }, indent=1) + "\n")
    if draw:
        by_scenario: dict[str, list[Result]] = {}
        for result in results:
            paths[f"plot_{result.key}"] = plot(
                result, links, wire, out / f"latency_vs_bandwidth_{result.key}.png", plot_rtt_ms)
            by_scenario.setdefault(result.scenario.key, []).append(result)
        for key, group in by_scenario.items():
            paths[f"ratio_{key}"] = plot_ratio(group, slowdowns, links, wire,
                                               out / f"ratio_vs_bandwidth_{key}.png", plot_rtt_ms)
    return paths

"""Writing simulation results: markdown tables, CSV, JSON and the latency-vs-bandwidth plot.

Ratios are codec latency / FrankenSplit latency on the same link: above 1 FrankenSplit is faster,
below 1 offloading the image is.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from frankensplit.sim.latency import Breakdown, Wire, end_to_end
from frankensplit.sim.links import Link
from frankensplit.sim.simulate import Result, verdict

__all__ = ["CSV_FIELDS", "markdown", "plot", "write_outputs"]

CSV_FIELDS = ("scenario", "link", "mbit_per_s", "rtt_ms", "method", "setting", "payload_bytes",
              "edge_ms", "uplink_ms", "rtt_total_ms", "server_ms", "downlink_ms", "total_ms",
              "ratio_vs_frankensplit")


def _label(method: str) -> str:
    return "FrankenSplit" if method == "frankensplit" else method


def _by_link(result: Result) -> dict[str, dict[str, Breakdown]]:
    out: dict[str, dict[str, Breakdown]] = {}
    for b in result.breakdowns:
        out.setdefault(b.link, {})[b.method] = b
    return out


def _scenario_md(result: Result, links: Sequence[Link], wire: Wire) -> list[str]:
    s = result.scenario
    lines = [f"## {s.title}", "", "| method | setting | bytes/request | edge ms | server ms |",
             "|---|---|---:|---:|---:|"]
    for c in result.costs:
        lines.append(f"| {_label(c.method)} | {c.setting} | {c.payload_bytes:,.0f} | "
                     f"{c.edge_ms:.1f} | {c.server_ms:.1f} |")
    codecs = [c.method for c in result.costs[1:]]
    head = "| link | Mbit/s | RTT ms | FrankenSplit ms |" + "".join(
        f" {c} ms | {c} / FS |" for c in codecs)
    intro = ("End-to-end latency per request and the ratio codec / FrankenSplit "
             "(> 1: FrankenSplit faster):")
    lines += ["", intro, "", head, "|---|---:|---:|---:|" + "---:|---:|" * len(codecs)]
    rows = _by_link(result)
    for link in links:
        row = rows[link.name]
        fs = row["frankensplit"].total_ms
        cells = "".join(f" {row[c].total_ms:.1f} | {row[c].total_ms / fs:.2f} |" for c in codecs)
        lines.append(f"| {link.name} | {link.mbit_per_s:g} | {link.rtt_ms:g} | {fs:.1f} |{cells}")
    lines += ["", "Where offloading wins:", ""]
    for c in result.costs[1:]:
        wins = [link.name for link in links
                if rows[link.name][c.method].total_ms < rows[link.name]["frankensplit"].total_ms]
        where = ", ".join(wins) if wins else "none"
        lines.append(f"- {verdict(c.method, result.crossovers[c.method], result.costs[0], c, wire)}"
                     f"; links where it wins: {where}")
    lines += [f"- note: {n}" for n in result.notes]
    return lines + [""]


def markdown(results: Sequence[Result], links: Sequence[Link], wire: Wire,
             header: Sequence[str] = ()) -> str:
    """All scenarios as one markdown document."""
    lines = ["# End-to-end latency: FrankenSplit vs offloading with standard codecs", "", *header,
             "", f"Wire model: {asdict(wire)}", ""]
    for result in results:
        lines += _scenario_md(result, links, wire)
    return "\n".join(lines)


def _csv_rows(result: Result) -> list[dict[str, Any]]:
    rows = []
    for link, by_method in _by_link(result).items():
        fs = by_method["frankensplit"].total_ms
        for b in by_method.values():
            rows.append({
                "scenario": result.scenario.key, "link": link, "mbit_per_s": b.mbit_per_s,
                "rtt_ms": None, "method": b.method, "setting": b.setting,
                "payload_bytes": round(b.payload_bytes, 1), "edge_ms": round(b.edge_ms, 3),
                "uplink_ms": round(b.uplink_ms, 3), "rtt_total_ms": round(b.rtt_ms, 3),
                "server_ms": round(b.server_ms, 3), "downlink_ms": round(b.downlink_ms, 3),
                "total_ms": round(b.total_ms, 3), "ratio_vs_frankensplit": round(b.total_ms / fs, 4),
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
                        label=f"{cost.method} / FrankenSplit")
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
    bottom.set_ylabel("codec / FrankenSplit")
    bottom.set_xlabel(f"link rate (Mbit/s), RTT {rtt_ms:g} ms")
    top.legend(fontsize=8)
    bottom.legend(fontsize=8)
    fig.suptitle(result.scenario.title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(results: Sequence[Result], links: Sequence[Link], wire: Wire, out: str | Path,
                  meta: dict[str, Any], draw: bool = True,
                  plot_rtt_ms: float = 50.0) -> dict[str, Path]:
    """latency.md, latency.csv, latency.json and one plot per scenario into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = [f"- {k}: {v}" for k, v in meta.items()]
    paths = {"markdown": out / "latency.md", "csv": out / "latency.csv",
             "json": out / "latency.json"}
    paths["markdown"].write_text(markdown(results, links, wire, header) + "\n")
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
    }, indent=1) + "\n")
    if draw:
        for result in results:
            key = f"plot_{result.scenario.key}"
            paths[key] = plot(result, links, wire,
                              out / f"latency_vs_bandwidth_{result.scenario.key}.png", plot_rtt_ms)
    return paths

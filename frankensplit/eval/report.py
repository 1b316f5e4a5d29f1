"""Writing an evaluation's results: results.json, results.csv, rate_accuracy.png, summary.md.

All four are regenerated from the result rows (themselves from the record log), so they always
agree with each other. The plot uses matplotlib's Agg backend: no display is needed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from frankensplit.codecs.compressai_zoo import LABELS as COMPRESSAI_LABELS
from frankensplit.eval.runner import FRANKENSPLIT_METHOD
from frankensplit.eval.schema import RESULTS_VERSION, SCHEMA, TEACHER_METHOD
from frankensplit.eval.summary import format_kb

__all__ = ["log_kb_axis", "plot_rate_accuracy", "summary_markdown", "write_csv", "write_json", "write_report"]


def write_json(path: Path, rows: Sequence[dict], summary: Sequence[dict], meta: dict) -> None:
    """``{"version", "columns": SCHEMA, "meta", "rows", "summary"}`` as indented JSON."""
    doc = {"version": RESULTS_VERSION, "columns": SCHEMA, "meta": meta, "rows": list(rows),
           "summary": list(summary)}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """One line per row, columns in :data:`SCHEMA` order; None becomes an empty cell."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(SCHEMA))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in SCHEMA})


#: Display names; other methods are shown upper-cased.
_NAMES = {FRANKENSPLIT_METHOD: "FrankenSplit", TEACHER_METHOD: "teacher", "webp": "WebP",
          "jxl": "JPEG XL", "entropic_student": "Entropic Student",
          f"{FRANKENSPLIT_METHOD}_vr": "FrankenSplit, variable rate",
          "bmshj2018-factorized": "Balle 2018 (MSE; ours, CPU-trained)", **COMPRESSAI_LABELS}


def _label(method: str) -> str:
    return _NAMES.get(method, method.upper())


def log_kb_axis(ax: Any, label: str) -> None:
    """A log KB axis read as plain numbers (1, 2, 5, 10...): every rate-accuracy plot's x axis."""
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(label)


def plot_rate_accuracy(path: Path, rows: Sequence[dict], title: str = "") -> None:
    """Top-1 against KB per image (log x), one line per method, the teacher as a dashed line.

    One panel per teacher.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teachers = list(dict.fromkeys(r["teacher"] for r in rows))
    fig, axes = plt.subplots(1, len(teachers), figsize=(6.4 * len(teachers), 4.6), squeeze=False)
    for ax, teacher in zip(axes[0], teachers):
        mine = [r for r in rows if r["teacher"] == teacher]
        for method in dict.fromkeys(r["method"] for r in mine if r["bytes"] is not None):
            pts = sorted((r["kb"], r["top1"]) for r in mine if r["method"] == method)
            style = {"marker": "*", "markersize": 11, "linewidth": 2.2, "color": "tab:red"} \
                if method == FRANKENSPLIT_METHOD else {"marker": "o", "markersize": 4}
            ax.plot(*zip(*pts), label=_label(method), **style)
            if method == FRANKENSPLIT_METHOD:
                for r in mine:
                    if r["method"] == method:
                        ax.annotate(r["setting"], (r["kb"], r["top1"]), fontsize=7,
                                    xytext=(4, 4), textcoords="offset points")
        ref = next(r for r in mine if r["method"] == TEACHER_METHOD)
        ax.axhline(ref["top1"], color="black", linestyle="--", linewidth=1,
                   label=f"teacher, uncompressed ({ref['top1']:.1f}%)")
        log_kb_axis(ax, "KB per image (1 KB = 1000 bytes)")
        what = "top-1 (%)" if ref["reference"] == "label" else "agreement with teacher top-1 (%)"
        ax.set_ylabel(what)
        ax.set_title(f"{teacher}, {ref['images']} images" + (f"\n{title}" if title else ""),
                     fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


_ROWS_HEADER = (
    "| method | setting | top-1 | top-5 | penalty | KB/image | bpp actual | bpp est. "
    "| encode ms | decode ms | infer ms |"
)


def _rows_table(rows: Sequence[dict]) -> list[str]:
    lines = [_ROWS_HEADER, "|---|---|" + "---:|" * 9]
    for r in rows:
        cells = [
            _label(r["method"]), r["setting"],
            f"{r['top1']:.2f}", f"{r['top5']:.2f}", f"{r['penalty']:+.2f}",
            _num(r["kb"], ".2f"), _num(r["bpp_actual"], ".3f"), _num(r["bpp_estimated"], ".3f"),
            _num(r["encode_ms"], ".1f"), _num(r["decode_ms"], ".1f"), _num(r["infer_ms"], ".1f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _within_cell(s: dict, method: str, margin: str) -> str:
    num_bytes = s["within"][method][margin]
    if num_bytes is not None:
        return format_kb(num_bytes)
    status = s.get("within_status", {}).get(method, {}).get(margin, "not reached")
    return "below lowest setting" if status == "below range" else status


def _within_table(s: dict) -> list[str]:
    margins = list(next(iter(s["within"].values()), {}))
    intro = (
        f"KB per image to stay within {' / '.join(margins)} point(s) of the teacher (log-linear "
        f"interpolation between measured points, never extrapolated; rule {s['rule']!r}):"
    )
    lines = ["", intro, "", "| method | " + " | ".join(f"within {m}" for m in margins) + " |",
             "|---|" + "---:|" * len(margins)]
    for method in s["within"]:
        cells = [_label(method), *(_within_cell(s, method, m) for m in margins)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _savings_table(s: dict) -> list[str]:
    baselines = list(s["savings"])
    if not baselines:
        return []
    intro = (
        "FrankenSplit's rate saving at equal top-1 (1 - FS bytes / baseline bytes; '-' where "
        "the baseline's measured curve does not cover that top-1):"
    )
    header = "| FrankenSplit | top-1 | KB | " + " | ".join(f"vs {_label(b)}" for b in baselines)
    lines = ["", intro, "", header + " |", "|---|---:|---:|" + "---:|" * len(baselines)]
    for i, point in enumerate(s["savings"][baselines[0]]):
        cells = [point["setting"], f"{point['top1']:.2f}", f"{point['bytes'] / 1000:.2f}",
                 *(_pct(s["savings"][b][i]["saving"]) for b in baselines)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _reverse_savings_table(s: dict) -> list[str]:
    """Savings read at the baseline points FrankenSplit's curve covers (omitted when none)."""
    covered = [(b, p) for b, points in s.get("savings_at_baseline", {}).items() for p in points
               if p["saving"] is not None]
    if not covered:
        return []
    intro = ("The same saving read at each baseline setting whose top-1 FrankenSplit's measured "
             "curve covers (FrankenSplit's bytes interpolated, rule 'stay'):")
    lines = ["", intro, "",
             "| baseline | setting | top-1 | KB | FrankenSplit KB | saving |",
             "|---|---|---:|---:|---:|---:|"]
    for method, p in covered:
        lines.append(f"| {_label(method)} | {p['setting']} | {p['top1']:.2f} | "
                     f"{p['baseline_bytes'] / 1000:.2f} | {p['bytes'] / 1000:.2f} | "
                     f"{_pct(p['saving'])} |")
    return lines


def summary_markdown(rows: Sequence[dict], summary: Sequence[dict], meta: dict) -> str:
    """Markdown tables: every row per teacher, the within-margin rates and the savings."""
    lines = [f"Data: `{meta.get('data', '?')}`, {meta.get('images', '?')} images; accuracy "
             + ("against the labels." if meta.get("reference") == "label"
                else "is agreement with the uncompressed teacher's top-1 (no labels).")]
    untrained = [m["model_id"] for m in meta.get("models", []) if m.get("trained") is False]
    if untrained:
        lines.append(f"\n**Untrained (random codec weights, accuracy meaningless):** "
                     f"{', '.join(untrained)}.")
    for s in summary:
        mine = [r for r in rows if r["teacher"] == s["teacher"]]
        lines += ["", f"### Teacher `{s['teacher']}`: top-1 {s['teacher_top1']:.2f}%", ""]
        lines += _rows_table(mine)
        lines += _within_table(s) + _savings_table(s) + _reverse_savings_table(s)
    return "\n".join(lines) + "\n"


def write_report(
    out: Path, rows: Sequence[dict], summary: Sequence[dict], meta: dict, plot: bool = True
) -> dict[str, Path]:
    """Write the result files into ``out`` (the plot only with ``plot``); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv",
             "markdown": out / "summary.md"}
    write_json(paths["json"], rows, summary, meta)
    write_csv(paths["csv"], rows)
    if plot:
        paths["plot"] = out / "rate_accuracy.png"
        plot_rate_accuracy(paths["plot"], rows)
    paths["markdown"].write_text("# Rate-accuracy evaluation\n\n"
                                 + summary_markdown(rows, summary, meta))
    return paths

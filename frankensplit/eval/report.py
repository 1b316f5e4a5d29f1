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
from frankensplit.eval.schema import (
    FRANKENSPLIT_METHOD,
    RESULTS_VERSION,
    SCHEMA,
    TEACHER_METHOD,
    fixed_rate_method,
    is_variable_rate,
    split_rate_setting,
    variable_rate_method,
)
from frankensplit.eval.summary import OVERLAP_STEPS, format_kb

__all__ = ["annotate_rate_ends", "curve_style", "log_kb_axis", "plot_rate_accuracy", "rate_names",
           "summary_markdown", "write_csv", "write_json", "write_report"]


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


#: Display names; other methods are shown upper-cased, a variable-rate model's as its fixed-rate
#: models' with ", variable rate".
_NAMES = {FRANKENSPLIT_METHOD: "FrankenSplit", TEACHER_METHOD: "teacher", "webp": "WebP",
          "jxl": "JPEG XL", "entropic_student": "Entropic Student",
          "bmshj2018-factorized": "Balle 2018 (MSE; ours, CPU-trained)", **COMPRESSAI_LABELS}


def _label(method: str) -> str:
    if is_variable_rate(method):
        return f"{_label(fixed_rate_method(method))}, variable rate"
    return _NAMES.get(method, method.upper())


def rate_names(rows: Sequence[dict]) -> dict[str, str]:
    """``{setting: name}`` of each variable-rate row: ``fs-lite0-vr, rate 0 (lambda 64)``, the
    rate index being the lambda's place in the model's grid (largest lambda first,
    `Architecture.rates`), read from the model's rows."""
    grids: dict[str, dict[float, str]] = {}  # model id -> {lambda: setting}
    for r in rows:
        model_id, lmbda = split_rate_setting(str(r["setting"]))
        if is_variable_rate(r["method"]) and lmbda is not None:
            grids.setdefault(model_id, {})[lmbda] = str(r["setting"])
    return {grid[lmbda]: f"{model_id}, rate {i} (lambda {lmbda:g})"
            for model_id, grid in grids.items()
            for i, lmbda in enumerate(sorted(grid, reverse=True))}


def curve_style(method: str) -> dict[str, Any]:
    """Matplotlib line style of a method's curve: FrankenSplit's fixed-rate models as red stars,
    its variable-rate model as a dashed red line of diamonds, any other method plain (its colour
    left to the caller)."""
    if method == FRANKENSPLIT_METHOD:
        return {"marker": "*", "markersize": 11, "linewidth": 2.2, "color": "tab:red",
                "zorder": 3}
    if method == variable_rate_method(FRANKENSPLIT_METHOD):
        return {"marker": "D", "markersize": 4, "linewidth": 1.6, "linestyle": "--",
                "color": "darkred", "zorder": 3}
    return {"marker": "o", "markersize": 4}


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
            ax.plot(*zip(*pts), label=_label(method), **curve_style(method))
            if method == FRANKENSPLIT_METHOD:
                for r in mine:
                    if r["method"] == method:
                        ax.annotate(r["setting"], (r["kb"], r["top1"]), fontsize=7,
                                    xytext=(4, 4), textcoords="offset points")
            elif method == variable_rate_method(FRANKENSPLIT_METHOD):
                annotate_rate_ends(ax, [(r["kb"], r["top1"], r["setting"]) for r in mine
                                    if r["method"] == method])
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


def annotate_rate_ends(ax: Any, points: Sequence[tuple[float, float, str]]) -> None:
    """Name the lowest and the highest rate of a variable-rate curve by their lambda (eleven
    labels would hide the fixed-rate models' beside them)."""
    ends = sorted(points)
    for kb, top1, setting in {ends[0][2]: ends[0], ends[-1][2]: ends[-1]}.values():
        lmbda = split_rate_setting(setting)[1]
        ax.annotate(setting if lmbda is None else f"lambda {lmbda:g}", (kb, top1), fontsize=7,
                    xytext=(4, -10), textcoords="offset points", color="darkred")


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


_ROWS_HEADER = (
    "| method | setting | top-1 | top-5 | penalty | KB/image | bpp actual | bpp est. "
    "| encode ms | decode ms | infer ms |"
)


def _rows_table(rows: Sequence[dict], names: dict[str, str]) -> list[str]:
    lines = [_ROWS_HEADER, "|---|---|" + "---:|" * 9]
    for r in rows:
        cells = [
            _label(r["method"]), names.get(r["setting"], r["setting"]),
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


#: How the savings tables name a curve: (whose, its bytes, column header).
_FIXED_RATE = ("FrankenSplit's", "FS", "FrankenSplit")


def _savings_table(who: tuple[str, str, str], savings: dict, names: dict[str, str]) -> list[str]:
    """A curve's saving at each of its points against each baseline (omitted without any)."""
    whose, short, header = who
    baselines = list(savings)
    if not baselines or not savings[baselines[0]]:
        return []
    intro = (
        f"{whose[0].upper()}{whose[1:]} rate saving at equal top-1 (1 - {short} bytes / baseline "
        "bytes; '-' where the baseline's measured curve does not cover that top-1):"
    )
    head = f"| {header} | top-1 | KB | " + " | ".join(f"vs {_label(b)}" for b in baselines)
    lines = ["", intro, "", head + " |", "|---|---:|---:|" + "---:|" * len(baselines)]
    for i, point in enumerate(savings[baselines[0]]):
        cells = [names.get(point["setting"], point["setting"]), f"{point['top1']:.2f}",
                 f"{point['bytes'] / 1000:.2f}",
                 *(_pct(savings[b][i]["saving"]) for b in baselines)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _reverse_savings_table(who: tuple[str, str, str], at_baseline: dict) -> list[str]:
    """Savings read at the baseline points a curve covers (omitted when none)."""
    whose, _, header = who
    covered = [(b, p) for b, points in at_baseline.items() for p in points
               if p["saving"] is not None]
    if not covered:
        return []
    intro = (f"The same saving read at each baseline setting whose top-1 {whose} measured "
             f"curve covers ({whose} bytes interpolated, rule 'stay'):")
    lines = ["", intro, "",
             f"| baseline | setting | top-1 | KB | {header} KB | saving |",
             "|---|---|---:|---:|---:|---:|"]
    for method, p in covered:
        lines.append(f"| {_label(method)} | {p['setting']} | {p['top1']:.2f} | "
                     f"{p['baseline_bytes'] / 1000:.2f} | {p['bytes'] / 1000:.2f} | "
                     f"{_pct(p['saving'])} |")
    return lines


def _overlap_table(who: tuple[str, str, str], overlap: dict) -> list[str]:
    """The saving across the top-1 range a curve shares with each baseline (omitted when none)."""
    shared = [(b, o) for b, o in overlap.items() if o is not None]
    if not shared:
        return []
    whose, _, _ = who
    intro = (f"Across the whole top-1 range {whose} measured curve shares with each baseline "
             f"(both read at {OVERLAP_STEPS} evenly spaced top-1 values; its bytes rule 'stay', the "
             "baseline's 'first'):")
    lines = ["", intro, "", "| baseline | top-1 overlap | saving, least | saving, most |",
             "|---|---|---:|---:|"]
    for method, o in shared:
        lines.append(f"| {_label(method)} | {o['low']:.2f}-{o['high']:.2f}% | "
                     f"{_pct(o['min_saving'])} | {_pct(o['max_saving'])} |")
    return lines


def _all_savings(s: dict, names: dict[str, str]) -> list[str]:
    """The savings tables of the fixed-rate FrankenSplit models, then of each variable-rate
    FrankenSplit model's rates (a curve of its own)."""
    lines = (_savings_table(_FIXED_RATE, s["savings"], names)
             + _reverse_savings_table(_FIXED_RATE, s.get("savings_at_baseline", {}))
             + _overlap_table(_FIXED_RATE, s.get("overlap", {})))
    for method, vr in s.get("variable_rate", {}).items():
        who = ("the variable-rate model's", "its", _label(method))
        lines += (_savings_table(who, vr["savings"], names)
                  + _reverse_savings_table(who, vr["savings_at_baseline"])
                  + _overlap_table(who, vr.get("overlap", {})))
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
        names = rate_names(mine)
        lines += ["", f"### Teacher `{s['teacher']}`: top-1 {s['teacher_top1']:.2f}%", ""]
        lines += _rows_table(mine, names)
        lines += _within_table(s) + _all_savings(s, names)
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

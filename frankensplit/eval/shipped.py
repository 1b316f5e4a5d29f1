"""The shipped dev-set results: the rate-accuracy figures ``frankensplit demo`` shows.

``frankensplit/zoo/results_dev.json`` holds one row per (teacher, method, setting) of the same-run
comparison ``benchmarks/results.py`` measures (``make results``; published as
``docs/results.md``): every image of the dev set at batch size 1, real bytes. The command and
the commit it was measured at are recorded in the file; ``benchmarks/results.py`` rewrites it
whenever it regenerates ``docs/results.md``, so the demo, the results page and the zoo index
quote one measurement. Torch-free: the demo reads and plots it without the evaluation code.

Layout (``RESULTS_VERSION``)::

    version, description, command, commit, source, bytes_resolution, remeasured
    data      {"name", "path", "images", "reference"}          the data set and what top-1 counts
    teachers  {teacher: {"top1", "top5"}}                       the uncompressed references
    methods   {method: {"label", "fair", "note",                fair: false = a baseline trained
                        "variable_rate_of"}}                    far below its paper's budget
    rows      [{"teacher", "method", "setting", "top1", "top5", "bytes_per_image",
                "bpp_actual", "bpp_estimated"}]

A variable-rate model (one model, a rate per packet: ``Architecture.rates``) has one row per rate,
method ``frankensplit_vr`` and setting ``<model id>@<lambda>``
(:func:`~frankensplit.eval.schema.rate_setting`); its method's ``variable_rate_of`` names the
method of the fixed-rate models it stands beside (``"frankensplit"``; null for every other
method; absent in files written before it), so readers draw and compare it as a curve of its own.

Accuracies are in percent (2 decimals), ``bytes_per_image`` the mean bytes sent per image
(packet header or file container included) to ``bytes_resolution`` bytes, bpp over the 224x224
crop the teacher sees. Every row is a fixed setting applied to every image: no setting (nor a
variable-rate model's rate) is chosen per image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from frankensplit.eval.schema import (
    FRANKENSPLIT_METHOD,
    TEACHER_METHOD,
    fixed_rate_method,
    is_variable_rate,
)
from frankensplit.eval.summary import bytes_at_accuracy
from frankensplit.models.zoo_index import ZOO_DIR

__all__ = [
    "NOT_YET_FAIR", "RESULTS_FILE", "RESULTS_VERSION", "curve", "equal_top1", "load_results",
    "plot_results", "results_document", "split_baselines", "variable_rate_of", "write_results",
]

#: The committed dev-set results.
RESULTS_FILE = ZOO_DIR / "results_dev.json"

#: Version of the layout; bumped whenever a field changes meaning.
RESULTS_VERSION = 1

#: Baselines measured in the same run but trained far below their papers' budgets
#: (docs/training.md, "Baselines"): kept in the file, marked ``fair: false``.
#: The Entropic Student is not here: its shipped models are trained to its own two-stage recipe
#: with FrankenSplit's step budget and a decoder of FrankenSplit's scale.
NOT_YET_FAIR = {
    "bmshj2018-factorized": "trained with 0.1% of CompressAI's steps at half its width, about "
                            "12 dB below its published curve (docs/training.md)",
}

_ROW_KEYS = ("teacher", "method", "setting", "top1", "top5", "bytes_per_image", "bpp_actual",
             "bpp_estimated")
_TOP_KEYS = ("version", "description", "command", "commit", "source", "bytes_resolution",
             "remeasured", "data", "teachers", "methods", "rows")


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def results_document(
    rows: Sequence[Mapping[str, Any]],
    meta: Mapping[str, Any],
    *,
    data_name: str,
    command: str,
    commit: str,
    source: str,
    remeasured: Sequence[str] = (),
    bytes_resolution: int = 1,
) -> dict[str, Any]:
    """The results file's content from an evaluation's result rows (`frankensplit.eval.SCHEMA`).

    Args:
        rows: result rows, the teacher's among them.
        meta: the evaluation's meta (``data``, ``images``, ``reference``).
        data_name: what the data set is, in words.
        command: the command that measured the rows.
        commit: the commit it was measured at.
        source: where the rows were read from (the evaluation's folder or a published table).
        remeasured: models measured again in a later run than the other rows.
        bytes_resolution: the resolution of the bytes given (1 from records; 10 from a table
            in KB with 2 decimals).

    Raises:
        ValueError: no teacher row, or a compressed row without bytes.
    """
    from frankensplit.eval.report import _label  # the results page's display names

    teachers = {r["teacher"]: {"top1": _round(r["top1"], 2), "top5": _round(r["top5"], 2)}
                for r in rows if r["method"] == TEACHER_METHOD}
    if not teachers:
        raise ValueError("results need the uncompressed teacher's row, got none")
    coded = [r for r in rows if r["method"] != TEACHER_METHOD]
    missing = [f"{r['method']}/{r['setting']}" for r in coded if r["bytes"] is None]
    if missing:
        raise ValueError(f"rows without bytes: {missing}")
    methods = {m: {"label": _label(m), "fair": fixed_rate_method(m) not in NOT_YET_FAIR,
                   "note": NOT_YET_FAIR.get(fixed_rate_method(m), ""),
                   "variable_rate_of": fixed_rate_method(m) if is_variable_rate(m) else None}
               for m in dict.fromkeys(r["method"] for r in coded)}
    return {
        "version": RESULTS_VERSION,
        "description": "Rate-accuracy, one fixed setting per row applied to every image, batch "
                       "size 1, real bytes (header or container included)",
        "command": command, "commit": commit, "source": source,
        "bytes_resolution": bytes_resolution, "remeasured": list(remeasured),
        "data": {"name": data_name, "path": meta["data"], "images": int(meta["images"]),
                 "reference": meta["reference"]},
        "teachers": teachers, "methods": methods,
        "rows": [{"teacher": r["teacher"], "method": r["method"], "setting": str(r["setting"]),
                  "top1": _round(r["top1"], 2), "top5": _round(r["top5"], 2),
                  "bytes_per_image": int(round(r["bytes"] / bytes_resolution) * bytes_resolution),
                  "bpp_actual": _round(r["bpp_actual"], 3),
                  "bpp_estimated": _round(r["bpp_estimated"], 3)} for r in coded],
    }


def write_results(path: str | Path, doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` as indented JSON, one row per line (diffs stay readable)."""
    head = {k: v for k, v in doc.items() if k != "rows"}
    text = json.dumps(head, indent=2)[:-2] + ',\n  "rows": [\n'
    text += ",\n".join("    " + json.dumps(r) for r in doc["rows"]) + "\n  ]\n}\n"
    path = Path(path)
    path.write_text(text)
    return path


def load_results(path: str | Path = RESULTS_FILE) -> dict[str, Any]:
    """Read and check a results file.

    Raises:
        ValueError: a missing or unreadable file, another version, missing fields, a method
            entry that is no object or names no method as ``variable_rate_of``, or rows of an
            unknown teacher or method.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the results file {path}: {e}") from e
    if not isinstance(doc, dict) or doc.get("version") != RESULTS_VERSION:
        raise ValueError(f"{path}: expected a results file of version {RESULTS_VERSION}")
    missing = [k for k in _TOP_KEYS if k not in doc]
    if missing:
        raise ValueError(f"{path}: missing fields {missing}")
    for method, info in doc["methods"].items():
        of = info.get("variable_rate_of") if isinstance(info, dict) else 0
        if of is not None and not (isinstance(of, str) and of):
            raise ValueError(f"{path}: methods.{method} is {info!r}, expected {{label, fair, "
                             "note, variable_rate_of: a method or null}")
    for i, row in enumerate(doc["rows"]):
        if sorted(row) != sorted(_ROW_KEYS):
            raise ValueError(f"{path}: rows[{i}] has fields {sorted(row)}, expected "
                             f"{sorted(_ROW_KEYS)}")
        if row["teacher"] not in doc["teachers"] or row["method"] not in doc["methods"]:
            raise ValueError(f"{path}: rows[{i}] names an unknown teacher or method: "
                             f"{row['teacher']!r}, {row['method']!r}")
    return doc


def variable_rate_of(doc: Mapping[str, Any], method: str) -> str | None:
    """The fixed-rate method whose variable-rate model's rates ``method``'s rows are, by the
    file's ``methods`` entry; None for any other method (and in files without the field)."""
    return doc["methods"].get(method, {}).get("variable_rate_of")


def _family(doc: Mapping[str, Any], method: str) -> str:
    """A method's fixed-rate method: ``frankensplit`` for both FrankenSplit curves."""
    return variable_rate_of(doc, method) or method


def split_baselines(doc: Mapping[str, Any]) -> list[str]:
    """The fair split-computing baselines in the file (the Entropic Student): every fair method
    but FrankenSplit's curves and the image codecs (`frankensplit.codecs.CODECS`); the teacher is
    never a method there (``teachers`` holds it)."""
    from frankensplit.codecs import CODECS

    return [m for m, info in doc["methods"].items()
            if info["fair"] and _family(doc, m) != FRANKENSPLIT_METHOD and m not in CODECS]


def curve(doc: Mapping[str, Any], teacher: str, method: str) -> list[tuple[float, float]]:
    """One method's ``(bytes_per_image, top1)`` points for ``teacher``, sorted by bytes."""
    return sorted((r["bytes_per_image"], r["top1"]) for r in doc["rows"]
                  if r["teacher"] == teacher and r["method"] == method)


def equal_top1(doc: Mapping[str, Any], teacher: str, method: str = FRANKENSPLIT_METHOD,
               fair_only: bool = True) -> list[dict[str, Any]]:
    """Each of ``method``'s rows against the other methods at its top-1.

    The baselines are every other method but ``method``'s fixed- or variable-rate counterpart
    (`variable_rate_of`): FrankenSplit's two curves are each compared with the codecs, not with
    each other. A baseline's bytes at that top-1 are interpolated on its measured curve (linear in log bytes,
    rule ``"first"``: its cheapest way there, see :func:`~frankensplit.eval.summary.
    bytes_at_accuracy`), never extrapolated.

    Returns:
        ``[{"setting", "top1", "bytes_per_image", "baselines": {baseline: bytes or None}}]``,
        by ascending bytes; None where the baseline's curve does not cover that top-1.
    """
    baselines = [m for m, info in doc["methods"].items()
                 if _family(doc, m) != _family(doc, method) and (info["fair"] or not fair_only)
                 and curve(doc, teacher, m)]
    rows = sorted((r for r in doc["rows"] if r["teacher"] == teacher and r["method"] == method),
                  key=lambda r: r["bytes_per_image"])
    return [{"setting": r["setting"], "top1": r["top1"], "bytes_per_image": r["bytes_per_image"],
             "baselines": {b: bytes_at_accuracy(curve(doc, teacher, b), r["top1"])
                           for b in baselines}} for r in rows]


def plot_results(path: str | Path, doc: Mapping[str, Any], teacher: str,
                 highlight: str | None = None, fair_only: bool = True) -> Path:
    """Top-1 against KB per image (log x) of one teacher's rows; ``highlight`` (a FrankenSplit
    setting: the default model, or one rate of a variable-rate model, ``<id>@<lambda>``) ringed
    and named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from frankensplit.eval.report import annotate_rate_ends, curve_style, log_kb_axis

    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    colors = iter(["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink",
                   "tab:gray", "tab:olive", "tab:cyan"])  # red is FrankenSplit's
    for method, info in doc["methods"].items():
        mine = sorted((r for r in doc["rows"] if r["teacher"] == teacher
                       and r["method"] == method), key=lambda r: r["bytes_per_image"])
        if not mine or (fair_only and not info["fair"]):
            continue
        kb = [r["bytes_per_image"] / 1000 for r in mine]
        top1 = [r["top1"] for r in mine]
        if method == FRANKENSPLIT_METHOD:
            ax.plot(kb, top1, label=info["label"], **curve_style(method))
            for r, x, y in zip(mine, kb, top1):
                shift = (11, -13) if r["setting"] == highlight else (4, -10)  # clear of the ring
                ax.annotate(r["setting"], (x, y), fontsize=7, xytext=shift,
                            textcoords="offset points")
        elif variable_rate_of(doc, method) == FRANKENSPLIT_METHOD:  # a curve of its own
            ax.plot(kb, top1, label=info["label"], **curve_style(method))
            annotate_rate_ends(ax, [(x, y, r["setting"]) for r, x, y in zip(mine, kb, top1)])
        else:
            ax.plot(kb, top1, marker="o", markersize=4, label=info["label"],
                    color=next(colors, None))
    mark = [r for r in doc["rows"] if r["teacher"] == teacher and r["setting"] == highlight
            and FRANKENSPLIT_METHOD in (r["method"], variable_rate_of(doc, r["method"]))]
    for r in mark:
        ax.plot(r["bytes_per_image"] / 1000, r["top1"], "o", markersize=18, fillstyle="none",
                color="black", markeredgewidth=1.5, zorder=4, label=f"default model ({highlight})")
    ref = doc["teachers"][teacher]["top1"]
    ax.axhline(ref, color="black", linestyle="--", linewidth=1,
               label=f"teacher, uncompressed ({ref:.2f}%)")
    log_kb_axis(ax, "KB per image, real bytes (1 KB = 1000 bytes)")
    what = "top-1 (%)" if doc["data"]["reference"] == "label" else "agreement with teacher (%)"
    ax.set_ylabel(what)
    ax.set_title(f"{doc['data']['name']}: {doc['data']['images']:,} images, teacher {teacher}\n"
                 f"one fixed setting per point, measured at commit {doc['commit'][:7]} by "
                 f"{doc['command']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

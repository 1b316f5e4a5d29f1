"""From per-image records to result rows (one per operating point) and the summary figures.

Aggregation reads only the record log, so a resumed run and an uninterrupted one give the same
rows: every operating point must hold a record for every image, else the run is incomplete and
the error says so (a partial average would silently describe other images than its neighbours).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from statistics import fmean
from typing import Any

from frankensplit.eval.records import record_key
from frankensplit.eval.runner import FRANKENSPLIT_METHOD, OperatingPoint
from frankensplit.eval.schema import SCHEMA, TEACHER_METHOD, variable_rate_method
from frankensplit.eval.summary import (
    Saving,
    bytes_within,
    coverage,
    overlap_saving,
    rate_savings,
    rate_savings_at_baseline,
)

__all__ = ["aggregate", "curves", "summarize"]


def _mean(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return fmean(values) if values else None


def _row(point: OperatingPoint, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    mean_bytes = _mean(r["bytes"] for r in records)
    pixels = fmean(r["pixels"] for r in records)
    bits = _mean(r["bits_estimated"] for r in records)
    labelled = all(r["reference"] == r["label"] for r in records) and records[0]["label"] >= 0
    row = {
        "teacher": point.teacher, "method": point.method, "setting": point.setting,
        "quality": point.quality, "images": len(records),
        "reference": "label" if labelled else "teacher",
        "top1": 100.0 * fmean(bool(r["correct1"]) for r in records),
        "top5": 100.0 * fmean(bool(r["correct5"]) for r in records),
        "teacher_top1": None, "teacher_top5": None, "penalty": None,
        "bytes": mean_bytes,
        "kb": None if mean_bytes is None else mean_bytes / 1000.0,
        "bpp_actual": None if mean_bytes is None else mean_bytes * 8.0 / pixels,
        "bpp_estimated": None if bits is None else bits / pixels,
        "encode_ms": _mean(r["encode_ms"] for r in records),
        "decode_ms": _mean(r["decode_ms"] for r in records),
        "infer_ms": _mean(r["infer_ms"] for r in records),
    }
    return {k: row[k] for k in SCHEMA}


def aggregate(
    records: Iterable[dict[str, Any]], points: Sequence[OperatingPoint], num_images: int
) -> list[dict[str, Any]]:
    """One result row per operating point (columns of :data:`~frankensplit.eval.schema.SCHEMA`).

    Args:
        records: the record log (extra records, e.g. of more images or other codecs, are ignored).
        points: the operating points to report, each with its teacher's point among them.
        num_images: the first ``num_images`` dataset images are averaged over.

    Raises:
        ValueError: an operating point lacks records for some of the images, or a teacher row is
            missing.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be positive, got {num_images}")
    by_point: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
    for record in records:
        teacher, method, setting, index = record_key(record)
        if index < num_images:
            by_point.setdefault((teacher, method, setting), {}).setdefault(index, record)
    rows = []
    for point in points:
        found = by_point.get(point.key, {})
        if len(found) != num_images:
            raise ValueError(
                f"{'/'.join(point.key)} has records for {len(found)} of {num_images} images; "
                "run again with resume to finish it"
            )
        rows.append(_row(point, [found[i] for i in range(num_images)]))
    teachers = {r["teacher"]: r for r in rows if r["method"] == TEACHER_METHOD}
    for row in rows:
        if row["teacher"] not in teachers:
            raise ValueError(f"no uncompressed teacher row for {row['teacher']}")
        ref = teachers[row["teacher"]]
        row["teacher_top1"], row["teacher_top5"] = ref["top1"], ref["top5"]
        row["penalty"] = ref["top1"] - row["top1"]
    return rows


def curves(rows: Sequence[dict[str, Any]], teacher: str) -> dict[str, list[tuple[float, float]]]:
    """``{method: [(bytes, top1), ...]}`` of one teacher's compressed methods, sorted by bytes."""
    out: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row["teacher"] == teacher and row["bytes"] is not None:
            out.setdefault(row["method"], []).append((row["bytes"], row["top1"]))
    return {method: sorted(points) for method, points in out.items()}


def _coded_rows(rows: Sequence[dict[str, Any]], teacher: str, method: str) -> list[dict[str, Any]]:
    """One method's rows with bytes, sorted like its curve (and like the savings built on it)."""
    return sorted((r for r in rows if r["teacher"] == teacher and r["method"] == method
                   and r["bytes"] is not None), key=lambda r: (r["bytes"], r["top1"]))


def _saving_dicts(point_rows: Sequence[dict[str, Any]], savings: Sequence[Saving]) -> list[dict]:
    """Savings as summary entries, each named by the setting of the row it was read at."""
    return [{"setting": r["setting"], "bytes": s.bytes, "top1": s.top1,
             "baseline_bytes": s.baseline_bytes, "saving": s.saving}
            for r, s in zip(point_rows, savings, strict=True)]


def _overlap_dict(fs_curve: list[tuple[float, float]],
                  baseline: list[tuple[float, float]]) -> dict[str, float] | None:
    """:func:`~frankensplit.eval.summary.overlap_saving` as a summary entry (None: no overlap)."""
    o = overlap_saving(fs_curve, baseline)
    return None if o is None else {"low": o.low, "high": o.high, "min_saving": o.min_saving,
                                   "max_saving": o.max_saving}


def _savings(rows: Sequence[dict[str, Any]], teacher: str, method: str,
             by_method: dict[str, list[tuple[float, float]]], rule: str) -> dict[str, Any]:
    """``{"savings", "savings_at_baseline", "overlap"}`` of one FrankenSplit curve (``method``)
    against every method that is not one of FrankenSplit's curves (its fixed-rate models, its
    variable-rate models: each is a curve of its own, never the other's baseline)."""
    own = {FRANKENSPLIT_METHOD, variable_rate_method(FRANKENSPLIT_METHOD)}
    point_rows = _coded_rows(rows, teacher, method)
    curve = [(r["bytes"], r["top1"]) for r in point_rows]
    baselines = [m for m in by_method if m not in own]
    return {
        "savings": {m: _saving_dicts(point_rows, rate_savings(curve, by_method[m], rule))
                    for m in baselines},
        "savings_at_baseline": {
            m: _saving_dicts(_coded_rows(rows, teacher, m),
                             rate_savings_at_baseline(curve, by_method[m]))
            for m in baselines},
        "overlap": {m: _overlap_dict(curve, by_method[m]) for m in baselines},
    }


def summarize(
    rows: Sequence[dict[str, Any]], margins: Sequence[float] = (1.0, 3.0), rule: str = "first"
) -> list[dict[str, Any]]:
    """Per teacher: bytes to stay within each margin of it, and FrankenSplit's rate savings.

    Returns:
        One dict per teacher: ``teacher``, ``teacher_top1``, ``images``, ``reference``,
        ``within`` (``{method: {str(margin): bytes or None}}``), ``within_status`` (the same
        keys, :func:`~frankensplit.eval.summary.coverage`'s word for each) and ``savings``
        (``{baseline: [{setting, bytes, top1, baseline_bytes, saving}, ...]}``, the fixed-rate
        FrankenSplit models' points sorted by bytes; None where the baseline's curve does not
        cover that top-1) and ``savings_at_baseline`` (the same keys per baseline point,
        ``setting`` the baseline's, ``bytes`` FrankenSplit's interpolated ones:
        :func:`~frankensplit.eval.summary.rate_savings_at_baseline`), ``overlap``
        (``{baseline: {low, high, min_saving, max_saving} or None}``: the saving across the
        top-1 both curves cover, :func:`~frankensplit.eval.summary.overlap_saving`), and
        ``variable_rate``:
        ``{"frankensplit_vr": {"savings", "savings_at_baseline", "overlap"}}`` the same for the rates of
        the variable-rate models (``{}`` without one). Baselines are every other curve but
        FrankenSplit's two: Entropic Student, the codecs.
    """
    out = []
    vr = variable_rate_method(FRANKENSPLIT_METHOD)
    for ref in (r for r in rows if r["method"] == TEACHER_METHOD):
        teacher = ref["teacher"]
        by_method = curves(rows, teacher)
        within = {
            method: {f"{m:g}": bytes_within(curve, ref["top1"], m, rule) for m in margins}
            for method, curve in by_method.items()
        }
        status = {
            method: {f"{m:g}": coverage(curve, ref["top1"] - m) for m in margins}
            for method, curve in by_method.items()
        }
        variable = {vr: _savings(rows, teacher, vr, by_method, rule)} if vr in by_method else {}
        out.append({"teacher": teacher, "teacher_top1": ref["top1"], "images": ref["images"],
                    "reference": ref["reference"], "rule": rule, "within": within,
                    "within_status": status,
                    **_savings(rows, teacher, FRANKENSPLIT_METHOD, by_method, rule),
                    "variable_rate": variable})
    return out

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
from frankensplit.eval.schema import SCHEMA, TEACHER_METHOD
from frankensplit.eval.summary import (
    Saving,
    bytes_within,
    coverage,
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


def summarize(
    rows: Sequence[dict[str, Any]], margins: Sequence[float] = (1.0, 3.0), rule: str = "first"
) -> list[dict[str, Any]]:
    """Per teacher: bytes to stay within each margin of it, and FrankenSplit's rate savings.

    Returns:
        One dict per teacher: ``teacher``, ``teacher_top1``, ``images``, ``reference``,
        ``within`` (``{method: {str(margin): bytes or None}}``), ``within_status`` (the same
        keys, :func:`~frankensplit.eval.summary.coverage`'s word for each) and ``savings``
        (``{baseline: [{setting, bytes, top1, baseline_bytes, saving}, ...]}``, FrankenSplit's
        points sorted by bytes; None where the baseline's curve does not cover that top-1) and
        ``savings_at_baseline`` (the same keys per baseline point, ``setting`` the baseline's,
        ``bytes`` FrankenSplit's interpolated ones: :func:`~frankensplit.eval.summary.
        rate_savings_at_baseline`).
    """
    out = []
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
        fs_rows = _coded_rows(rows, teacher, FRANKENSPLIT_METHOD)
        fs_curve = [(r["bytes"], r["top1"]) for r in fs_rows]
        # no fixed-rate FrankenSplit model (a variable-rate model alone): nothing to save against
        baselines = [method for method in by_method if method != FRANKENSPLIT_METHOD] \
            if fs_rows else []
        savings = {method: _saving_dicts(fs_rows, rate_savings(fs_curve, by_method[method], rule))
                   for method in baselines}
        at_baseline = {
            method: _saving_dicts(_coded_rows(rows, teacher, method),
                                  rate_savings_at_baseline(fs_curve, by_method[method]))
            for method in baselines
        }
        out.append({"teacher": teacher, "teacher_top1": ref["top1"], "images": ref["images"],
                    "reference": ref["reference"], "rule": rule, "within": within,
                    "within_status": status,
                    "savings": savings, "savings_at_baseline": at_baseline})
    return out

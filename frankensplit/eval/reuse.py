"""What encoder reuse costs: a shared edge encoder's decoders against each backbone's own codec.

FrankenSplit's second claim is that one edge encoder serves several server backbones, each
server training only a new blueprint decoder. The cost of that is measured, not assumed: for each
backbone, the top-1 of the reuse decoder (frozen source encoder and entropy model, so the bytes
are the source's) beside the top-1 of an end-to-end codec trained for that backbone with the same
start, recipe and budget, read on the end-to-end curve *at the reuse model's bytes* (linear in
log bytes between measured points, never extrapolated: :mod:`frankensplit.eval.summary`), and
beside the backbone's own uncompressed top-1, both at its own preprocessing and at the edge's
(a reuse decoder classifies 224 px inputs for every backbone).

Rows come from ``frankensplit eval``'s ``results.json`` (teacher, method, setting, top1, bytes,
teacher_top1); a reuse model's rows carry the teacher label ``<backbone>@<size>px`` when its
input size is not the backbone's own (:func:`frankensplit.eval.runner.teacher_label`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from frankensplit.eval.summary import format_kb

__all__ = ["ReuseRow", "default_pairs", "pair_ids", "reuse_markdown", "reuse_rows",
           "top1_at_bytes"]


def top1_at_bytes(curve: Sequence[tuple[float, float]], num_bytes: float) -> float | None:
    """Top-1 of a measured ``(bytes, top1)`` curve at ``num_bytes``, linear in log bytes.

    Returns None outside the measured range (no extrapolation); a single point answers only
    for its own bytes.
    """
    points = sorted((float(b), float(a)) for b, a in curve)
    for (b0, a0), (b1, a1) in itertools.pairwise(points):
        if b0 <= num_bytes <= b1:
            if b1 == b0:
                return max(a0, a1)
            t = (math.log(num_bytes) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return a0 + t * (a1 - a0)
    if len(points) == 1 and points[0][0] == num_bytes:
        return points[0][1]
    return None


@dataclass(frozen=True)
class ReuseRow:
    """One reuse decoder against its backbone's end-to-end codec.

    Attributes:
        backbone: timm name of the server backbone.
        reuse_id: the reuse model (``<source id>.<backbone>``).
        reuse_top1: its top-1 (percent).
        reuse_bytes: its mean bytes per image (the source encoder's packets).
        e2e: ``(model id, bytes, top1)`` of the end-to-end codec's measured points.
        e2e_top1: the end-to-end curve's top-1 at ``reuse_bytes`` (None: not covered).
        teacher_top1: the backbone uncompressed at the end-to-end codecs' preprocessing (its own,
            or the nearest the blueprints take: Lite2 at 256 px, not 260; None: not measured).
        teacher_top1_edge: the backbone uncompressed at the reuse model's preprocessing.
    """

    backbone: str
    reuse_id: str
    reuse_top1: float
    reuse_bytes: float
    e2e: tuple[tuple[str, float, float], ...]
    e2e_top1: float | None
    teacher_top1: float | None
    teacher_top1_edge: float | None

    @property
    def cost(self) -> float | None:
        """Points of top-1 that reuse costs at equal bytes (positive: reuse is worse)."""
        return None if self.e2e_top1 is None else self.e2e_top1 - self.reuse_top1


def default_pairs() -> dict[str, list[str]]:
    """Every trained reuse model of the zoo -> the trained end-to-end FrankenSplit codecs of its
    backbone (same teacher, own encoder, fixed rate: the rows :func:`reuse_rows` reads by model
    id), by ascending lambda. Reads the index only (no torch)."""
    from frankensplit.models.zoo_index import MODELS, list_models

    entries = [e for e in map(MODELS.get, list_models()) if e.trained]
    pairs = {}
    for reuse in (e for e in entries if e.architecture.reuses):
        arch = reuse.architecture
        own = [e for e in entries if not e.architecture.reuses and e.architecture.rates is None
               and (e.architecture.teacher, e.architecture.encoder) == (arch.teacher, arch.encoder)]
        pairs[reuse.model_id] = [e.model_id for e in sorted(own, key=lambda e: e.lmbda or 0)]
    return pairs


def pair_ids(pairs: Mapping[str, Sequence[str]]) -> list[str]:
    """Each reuse model of ``pairs`` and its end-to-end codecs, once each, in order: the models
    whose rows :func:`reuse_rows` reads."""
    return list(dict.fromkeys(m for r, e2e in pairs.items() for m in (r, *e2e)))


def _backbone(label: str) -> str:
    return label.split("@", 1)[0]


def reuse_rows(rows: Sequence[Mapping[str, Any]], pairs: Mapping[str, Sequence[str]]
               ) -> list[ReuseRow]:
    """The comparison for each reuse model of ``pairs`` (reuse id -> end-to-end model ids).

    Raises:
        ValueError: a model of ``pairs`` missing from ``rows``, or ids of two backbones paired.
    """
    by_setting = {r["setting"]: r for r in rows if r.get("bytes") is not None}
    teacher = {r["teacher"]: r["top1"] for r in rows if r["method"] == "teacher"}
    out = []
    for reuse_id, e2e_ids in pairs.items():
        missing = [m for m in (reuse_id, *e2e_ids) if m not in by_setting]
        if missing:
            raise ValueError(f"no measured rows for {missing}: evaluate them in the same run")
        reuse = by_setting[reuse_id]
        backbone = _backbone(reuse["teacher"])
        e2e = [by_setting[m] for m in e2e_ids]
        other = sorted({_backbone(r["teacher"]) for r in e2e} - {backbone})
        if other:
            raise ValueError(f"{reuse_id} decodes for {backbone}, paired with codecs of {other}")
        points = tuple((r["setting"], float(r["bytes"]), float(r["top1"])) for r in e2e)
        out.append(ReuseRow(
            backbone, reuse_id, float(reuse["top1"]), float(reuse["bytes"]), points,
            top1_at_bytes([(b, a) for _, b, a in points], float(reuse["bytes"])),
            teacher.get(e2e[0]["teacher"]) if e2e else None, teacher.get(reuse["teacher"]),
        ))
    return out


def _pct(value: float | None, missing: str = "n/a") -> str:
    return missing if value is None else f"{value:.2f}"


def reuse_markdown(rows: Sequence[ReuseRow]) -> str:
    """A Markdown table of :func:`reuse_rows` with the measured end-to-end points beside it."""
    lines = [
        ("| backbone | uncompressed (end-to-end input) | uncompressed (edge input) | reuse model | "
         "reuse top-1 | KB | end-to-end points (KB: top-1) | end-to-end top-1 at reuse KB | "
         "cost of reuse (points) |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e2e = ", ".join(f"{m} ({format_kb(b)}: {a:.2f})" for m, b, a in r.e2e)
        lines.append(
            f"| {r.backbone} | {_pct(r.teacher_top1)} | {_pct(r.teacher_top1_edge)} | "
            f"{r.reuse_id} | {r.reuse_top1:.2f} | {format_kb(r.reuse_bytes)} | {e2e} | "
            f"{_pct(r.e2e_top1, 'not covered')} | {_pct(r.cost, 'not covered')} |")
    return "\n".join(lines) + "\n"

"""Bytes per request at matched accuracy, read off measured rate-accuracy curves.

A latency comparison is only fair between operating points of equal top-1: offloading with JPEG
at quality 90 is slow because it sends far more than the accuracy needs. The bytes come from a
``frankensplit eval`` result (``results.json``), where every method has a measured curve
``(bytes, top1)``; they are read with :func:`frankensplit.eval.summary.bytes_at_accuracy`
(linear in log bytes between measured points, never extrapolated):

- ``model``: each codec's bytes at the FrankenSplit model's own top-1 (its measured bytes).
- ``within:N``: every method, FrankenSplit included, at N points below the teacher's top-1.

The codec's quality at that rate is interpolated the same way (linear in log bytes between the two
bracketing settings), so that the profile's encode/decode times can be read at that quality.
A target a curve does not cover gives no bytes, and the reason (``coverage``) is reported.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from frankensplit.eval.schema import FRANKENSPLIT_METHOD, TEACHER_METHOD
from frankensplit.eval.summary import bytes_at_accuracy, coverage

__all__ = ["Matched", "Scenario", "given_scenario", "match_model", "match_within", "parse_bytes",
           "parse_match"]

Row = dict[str, Any]


@dataclass(frozen=True)
class Matched:
    """One method's operating point in a scenario.

    Attributes:
        method: ``"frankensplit"`` or a codec name.
        setting: model id, or the codec quality as text (interpolated qualities with 1 decimal).
        bytes: mean bytes per request, None when the curve does not cover the target.
        quality: codec quality at that rate (None for FrankenSplit or when unknown).
        status: ``"measured"``, ``"interpolated"``, ``"given"`` or the coverage word.
    """

    method: str
    setting: str
    bytes: float | None
    quality: float | None
    status: str


@dataclass(frozen=True)
class Scenario:
    """Operating points compared at one accuracy (or at given bytes)."""

    key: str
    title: str
    target_top1: float | None
    teacher: str
    frankensplit: Matched
    codecs: dict[str, Matched]
    notes: list[str] = field(default_factory=list)


def _fs_row(rows: Sequence[Row], model_id: str | None) -> Row:
    fs = [r for r in rows if r["method"] == FRANKENSPLIT_METHOD]
    if not fs:
        raise ValueError("the eval result has no FrankenSplit row")
    if model_id is None:
        return fs[0]
    for row in fs:
        if row["setting"] == model_id:
            return row
    raise ValueError(f"model {model_id!r} is not in the eval result; it has "
                     f"{[r['setting'] for r in fs]}")


def _curve(rows: Sequence[Row], teacher: str, method: str) -> list[Row]:
    return sorted((r for r in rows if r["teacher"] == teacher and r["method"] == method
                   and r["bytes"] is not None), key=lambda r: r["bytes"])


def _quality_at(curve: Sequence[Row], num_bytes: float) -> float | None:
    """The codec quality at ``num_bytes`` (linear in log bytes between bracketing settings)."""
    for a, b in itertools.pairwise(curve):
        if a["bytes"] <= num_bytes <= b["bytes"] and a["quality"] is not None \
                and b["quality"] is not None:
            if b["bytes"] == a["bytes"]:
                return float(a["quality"])
            t = math.log(num_bytes / a["bytes"]) / math.log(b["bytes"] / a["bytes"])
            return float(a["quality"]) + t * (float(b["quality"]) - float(a["quality"]))
    exact = [r["quality"] for r in curve if r["bytes"] == num_bytes]
    return float(exact[0]) if exact and exact[0] is not None else None


def _match(curve: Sequence[Row], method: str, target: float, rule: str) -> Matched:
    points = [(r["bytes"], r["top1"]) for r in curve]
    num_bytes = bytes_at_accuracy(points, target, rule)
    if num_bytes is None:
        return Matched(method, "-", None, None, coverage(points, target))
    quality = _quality_at(curve, num_bytes)
    setting = "-" if quality is None else f"{quality:.1f}"
    return Matched(method, setting, num_bytes, quality, "interpolated")


def _codec_names(rows: Sequence[Row], teacher: str, codecs: Sequence[str] | None) -> list[str]:
    present = sorted({r["method"] for r in rows if r["teacher"] == teacher}
                     - {TEACHER_METHOD, FRANKENSPLIT_METHOD})
    if codecs is None:
        return present
    missing = [c for c in codecs if c not in present]
    if missing:
        raise ValueError(f"codecs {missing} have no rows in the eval result; it has {present}")
    return list(codecs)


def match_model(results: Mapping[str, Any], model_id: str | None = None,
                codecs: Sequence[str] | None = None, rule: str = "first") -> Scenario:
    """Codec bytes at the FrankenSplit model's measured top-1 (scenario ``model``)."""
    rows = results["rows"]
    fs = _fs_row(rows, model_id)
    teacher, target = fs["teacher"], float(fs["top1"])
    matched = {c: _match(_curve(rows, teacher, c), c, target, rule)
               for c in _codec_names(rows, teacher, codecs)}
    return Scenario(
        "matched", f"codecs at {fs['setting']}'s top-1 ({target:.2f}%, teacher "
        f"{fs['teacher_top1']:.2f}%, {fs['images']} images)", target, teacher,
        Matched(FRANKENSPLIT_METHOD, fs["setting"], float(fs["bytes"]), None, "measured"), matched,
    )


def match_within(results: Mapping[str, Any], points: float, model_id: str | None = None,
                 codecs: Sequence[str] | None = None, rule: str = "first") -> Scenario:
    """Every method at ``points`` below the teacher's top-1 (scenario ``within:N``)."""
    rows = results["rows"]
    fs = _fs_row(rows, model_id)
    teacher = fs["teacher"]
    target = float(fs["teacher_top1"]) - points
    fs_curve = [r for r in _curve(rows, teacher, FRANKENSPLIT_METHOD)
                if model_id is None or r["setting"] == model_id]
    fs_match = _match(fs_curve, FRANKENSPLIT_METHOD, target, rule)
    fs_match = Matched(FRANKENSPLIT_METHOD, fs["setting"], fs_match.bytes, None, fs_match.status)
    matched = {c: _match(_curve(rows, teacher, c), c, target, rule)
               for c in _codec_names(rows, teacher, codecs)}
    return Scenario(f"within{points:g}", f"within {points:g} point(s) of the teacher "
                    f"({target:.2f}% top-1, {fs['images']} images)", target, teacher,
                    fs_match, matched)


def parse_match(text: str) -> list[tuple[str, float | None]]:
    """``"model,within:1"`` -> ``[("model", None), ("within", 1.0)]``.

    Raises:
        ValueError: an unknown mode or a bad number of points.
    """
    modes: list[tuple[str, float | None]] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item == "model":
            modes.append(("model", None))
            continue
        name, _, value = item.partition(":")
        try:
            points = float(value)
        except ValueError:
            points = -1.0
        if name != "within" or not (math.isfinite(points) and points >= 0):
            raise ValueError(f"--match takes 'model' and 'within:POINTS', got {item!r}")
        modes.append(("within", points))
    if not modes:
        raise ValueError("--match is empty")
    return modes


def parse_bytes(text: str) -> dict[str, float]:
    """``"jpeg=2500,webp=2100,frankensplit=11000"`` -> bytes per method.

    Raises:
        ValueError: a malformed item or a non-positive size.
    """
    out: dict[str, float] = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        name, sep, value = item.partition("=")
        try:
            size = float(value)
        except ValueError:
            size = math.nan
        if not sep or not name.strip() or not (math.isfinite(size) and size > 0):
            raise ValueError(f"--bytes takes METHOD=BYTES items, got {item!r}")
        out[name.strip()] = size
    if not out:
        raise ValueError("--bytes is empty")
    return out


def given_scenario(sizes: Mapping[str, float], fs_bytes: float, model_id: str,
                   teacher: str) -> Scenario:
    """A scenario of user-given bytes (FrankenSplit's default: the profile's packet size)."""
    fs = sizes.get(FRANKENSPLIT_METHOD, fs_bytes)
    status = "given" if FRANKENSPLIT_METHOD in sizes else "profile"
    codecs = {name: Matched(name, "-", size, None, "given")
              for name, size in sizes.items() if name != FRANKENSPLIT_METHOD}
    if not codecs:
        raise ValueError("--bytes names no codec")
    return Scenario("given", "given bytes per request (accuracy not checked)", None, teacher,
                    Matched(FRANKENSPLIT_METHOD, model_id, fs, None, status), codecs)

"""Bytes per request at matched accuracy, read off measured rate-accuracy curves.

A latency comparison is only fair between operating points of equal top-1: offloading with JPEG
at quality 90 is slow because it sends far more than the accuracy needs. The bytes come from a
``frankensplit eval`` result (``results.json``), where every method has a measured curve
``(bytes, top1)``; they are read with :func:`frankensplit.eval.summary.bytes_at_accuracy`
(linear in log bytes between measured points, never extrapolated):

- ``model``: each codec's bytes at the FrankenSplit model's own top-1 (its measured bytes). The
  model is the one whose compute is priced (the profiled one) unless the caller names another.
- ``within:N``: every method, FrankenSplit included, at N points below the teacher's top-1.
  FrankenSplit's curve is that of the eval's models sharing the profiled model's teacher and
  architecture (:func:`fs_curve`); a point between two of them is labelled as an interpolation,
  never as a model id. A variable-rate model's curve is its own rates (settings
  ``<id>@<lambda>``, method ``frankensplit_vr``): one model, one set of weights.

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

__all__ = ["Matched", "Scenario", "fs_curve", "given_scenario", "match_model", "match_within",
           "parse_bytes", "parse_match"]

Row = dict[str, Any]

#: FrankenSplit's rows: fixed-rate models, and a variable-rate model's rates
#: (`frankensplit.eval.runner.point_method`).
_FS_METHODS = (FRANKENSPLIT_METHOD, f"{FRANKENSPLIT_METHOD}_vr")


@dataclass(frozen=True)
class Matched:
    """One method's operating point in a scenario.

    Attributes:
        method: ``"frankensplit"`` or a codec name.
        setting: a model id only where the bytes are that model's measured bytes; the codec
            quality as text (interpolated qualities with 1 decimal); ``"interpolated"`` for a
            FrankenSplit point between two models; ``"-"`` when unknown.
        bytes: mean bytes per request, None when the curve does not cover the target.
        quality: codec quality at that rate (None for FrankenSplit or when unknown).
        status: ``"measured"``, ``"interpolated"``, ``"given"``, ``"profile"`` or the coverage
            word.
        source: where the bytes come from, in words (which model or setting, which top-1).
    """

    method: str
    setting: str
    bytes: float | None
    quality: float | None
    status: str
    source: str = ""


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


def _fs_rows(rows: Sequence[Row]) -> list[Row]:
    fs = [r for r in rows if r["method"] in _FS_METHODS]
    if not fs:
        raise ValueError("the eval result has no FrankenSplit row")
    return fs


def _fs_row(rows: Sequence[Row], model_id: str) -> Row:
    """The eval row of ``model_id`` (the profiled model unless the caller names another)."""
    fs = _fs_rows(rows)
    for row in fs:
        if row["setting"] == model_id:
            return row
    raise ValueError(f"model {model_id!r} is not in the eval result; it has "
                     f"{[r['setting'] for r in fs]}: profile one of them (`frankensplit profile "
                     "--model ID`) or name one with --model (its bytes are then priced with the "
                     "profiled model's compute, and every row says so)")


def _curve(rows: Sequence[Row], teacher: str, method: str) -> list[Row]:
    return sorted((r for r in rows if r["teacher"] == teacher and r["method"] == method
                   and r["bytes"] is not None), key=lambda r: r["bytes"])


def _bracket(curve: Sequence[Row], num_bytes: float) -> tuple[Row, Row] | None:
    """The measured rows around ``num_bytes``: ``(row, row)`` when it is one measured point."""
    exact = [r for r in curve if math.isclose(r["bytes"], num_bytes, rel_tol=1e-9)]
    if exact:
        return exact[0], exact[0]
    for a, b in itertools.pairwise(curve):
        if a["bytes"] < num_bytes < b["bytes"]:
            return a, b
    return None


def _quality_at(curve: Sequence[Row], num_bytes: float) -> float | None:
    """The codec quality at ``num_bytes`` (linear in log bytes between bracketing settings)."""
    pair = _bracket(curve, num_bytes)
    if pair is None or pair[0]["quality"] is None or pair[1]["quality"] is None:
        return None
    a, b = pair
    if a is b:
        return float(a["quality"])
    t = math.log(num_bytes / a["bytes"]) / math.log(b["bytes"] / a["bytes"])
    return float(a["quality"]) + t * (float(b["quality"]) - float(a["quality"]))


def _point(row: Row) -> str:
    """``fs-lite0-l4 (4,430 B, 79.86%)``, ``jpeg q50 (8,000 B, 78.00%)``."""
    name = row["setting"] if row["method"] in _FS_METHODS else \
        f"{row['method']} q{row['setting']}"
    return f"{name} ({row['bytes']:,.0f} B, {row['top1']:.2f}%)"


def _match(curve: Sequence[Row], method: str, target: float, rule: str) -> Matched:
    """A codec's point at top-1 ``target`` on its measured curve."""
    points = [(r["bytes"], r["top1"]) for r in curve]
    num_bytes = bytes_at_accuracy(points, target, rule)
    if num_bytes is None:
        return Matched(method, "-", None, None, coverage(points, target),
                       f"{method}'s measured curve does not cover {target:.2f}%")
    pair = _bracket(curve, num_bytes)
    quality = _quality_at(curve, num_bytes)
    setting = "-" if quality is None else f"{quality:.1f}"
    if pair is not None and pair[0] is pair[1]:
        return Matched(method, setting, float(pair[0]["bytes"]), quality, "measured",
                       f"{_point(pair[0])}, measured")
    between = "" if pair is None else f" between {_point(pair[0])} and {_point(pair[1])}"
    return Matched(method, setting, num_bytes, quality, "interpolated",
                   f"{method} at {target:.2f}%, interpolated{between}")


def _fs_match(curve: Sequence[Row], target: float, rule: str) -> Matched:
    """FrankenSplit's point at ``target`` on the curve of several models: a model id only when
    the point is that model's measured one, else labelled as an interpolation."""
    points = [(r["bytes"], r["top1"]) for r in curve]
    num_bytes = bytes_at_accuracy(points, target, rule)
    if num_bytes is None:
        return Matched(FRANKENSPLIT_METHOD, "-", None, None, coverage(points, target),
                       f"no model of FrankenSplit's measured curve reaches {target:.2f}%")
    pair = _bracket(curve, num_bytes)
    if pair is not None and pair[0] is pair[1]:
        return Matched(FRANKENSPLIT_METHOD, pair[0]["setting"], float(pair[0]["bytes"]), None,
                       "measured", f"{_point(pair[0])}, measured")
    between = "" if pair is None else f" between {_point(pair[0])} and {_point(pair[1])}"
    return Matched(FRANKENSPLIT_METHOD, "interpolated", num_bytes, None, "interpolated",
                   f"interpolated at {target:.2f}%{between}: no single model")


def _codec_names(rows: Sequence[Row], teacher: str, codecs: Sequence[str] | None) -> list[str]:
    present = sorted({r["method"] for r in rows if r["teacher"] == teacher}
                     - {TEACHER_METHOD, *_FS_METHODS})
    if codecs is None:
        return present
    missing = [c for c in codecs if c not in present]
    if missing:
        raise ValueError(f"codecs {missing} have no rows in the eval result; it has {present}")
    return list(codecs)


def match_model(results: Mapping[str, Any], model_id: str,
                codecs: Sequence[str] | None = None, rule: str = "first") -> Scenario:
    """Codec bytes at ``model_id``'s measured top-1 (scenario ``model``); FrankenSplit's bytes
    are that model's. The command passes the profiled model unless told otherwise."""
    rows = results["rows"]
    fs = _fs_row(rows, model_id)
    teacher, target = fs["teacher"], float(fs["top1"])
    matched = {c: _match(_curve(rows, teacher, c), c, target, rule)
               for c in _codec_names(rows, teacher, codecs)}
    return Scenario(
        "matched", f"codecs at {fs['setting']}'s top-1 ({target:.2f}%, teacher "
        f"{fs['teacher_top1']:.2f}%, {fs['images']} images)", target, teacher,
        Matched(FRANKENSPLIT_METHOD, fs["setting"], float(fs["bytes"]), None, "measured",
                f"{_point(fs)}, measured"), matched,
    )


def _same_architecture(a: str, b: str) -> bool | None:
    """Whether two zoo ids share one architecture (None: one is not a zoo id)."""
    from frankensplit.models.zoo_index import MODELS

    if a not in MODELS or b not in MODELS:
        return None
    return MODELS.get(a).architecture == MODELS.get(b).architecture


def fs_curve(rows: Sequence[Row], model_id: str) -> tuple[list[Row], list[str]]:
    """FrankenSplit's rate-accuracy curve for ``model_id``'s compute: the eval's models of its
    teacher and (where the zoo knows both) its architecture, which differ from it only in their
    weights (their rate), and notes on the models left out. For a rate of a variable-rate model
    (``<id>@<lambda>``) it is that model's rates."""
    row = _fs_row(rows, model_id)
    teacher = row["teacher"]
    if row["method"] != FRANKENSPLIT_METHOD:
        model = model_id.rpartition("@")[0]
        return [r for r in _curve(rows, teacher, row["method"])
                if r["setting"].rpartition("@")[0] == model], []
    curve, notes = [], []
    for row in _curve(rows, teacher, FRANKENSPLIT_METHOD):
        same = _same_architecture(row["setting"], model_id)
        if same is False:
            notes.append(f"{row['setting']}: another architecture than {model_id}; left out of "
                         "FrankenSplit's curve")
            continue
        if same is None and row["setting"] != model_id:
            notes.append(f"{row['setting']}: not a zoo id, its architecture is assumed to be "
                         f"{model_id}'s")
        curve.append(row)
    return curve, notes


def match_within(results: Mapping[str, Any], points: float, model_id: str,
                 codecs: Sequence[str] | None = None, rule: str = "first") -> Scenario:
    """Every method at ``points`` below the teacher's top-1 (scenario ``within:N``).

    FrankenSplit's bytes are read off the curve of :func:`fs_curve`: a measured model's where
    the target falls on one, else an interpolation between two models, labelled as such (its
    setting is ``"interpolated"``, never a model id).
    """
    rows = results["rows"]
    fs = _fs_row(rows, model_id)
    teacher = fs["teacher"]
    target = float(fs["teacher_top1"]) - points
    curve, notes = fs_curve(rows, model_id)
    matched = {c: _match(_curve(rows, teacher, c), c, target, rule)
               for c in _codec_names(rows, teacher, codecs)}
    return Scenario(f"within{points:g}", f"within {points:g} point(s) of the teacher "
                    f"({target:.2f}% top-1, {fs['images']} images)", target, teacher,
                    _fs_match(curve, target, rule), matched, notes)


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
    given = FRANKENSPLIT_METHOD in sizes
    source = ("given with --bytes" if given
              else f"{model_id}'s mean packet on the profile's photos")
    codecs = {name: Matched(name, "-", size, None, "given", "given with --bytes")
              for name, size in sizes.items() if name != FRANKENSPLIT_METHOD}
    if not codecs:
        raise ValueError("--bytes names no codec")
    return Scenario("given", "given bytes per request (accuracy not checked)", None, teacher,
                    Matched(FRANKENSPLIT_METHOD, "given" if given else model_id, fs, None,
                            "given" if given else "profile", source), codecs)

"""Summary figures of rate-accuracy curves: bytes needed for an accuracy, rate savings.

A curve is a list of measured operating points ``(bytes, top1)`` of one method (mean bytes per
image, top-1 in percent). Between two measured points, top-1 is interpolated *linearly in
log(bytes)*: codec curves are close to straight on a log-rate axis, which is also how the
reference figures of ``shared/BASELINES.md`` were obtained. Nothing is ever extrapolated: an
accuracy the measured curve does not cover has no rate (``None``), because a guess beyond the
last setting is exactly the kind of number a comparison must not rest on.

Two readings of "the bytes needed for accuracy a" differ on non-monotone (noisy) curves:

- ``"first"`` (default): the smallest rate at which the interpolated curve reaches ``a``.
- ``"stay"``: the smallest rate from which the curve never falls below ``a`` again within the
  measured range (a later dip below ``a`` pushes the answer past that dip).

Both agree on monotone curves. ``"first"`` is the default because, used for a baseline in
:func:`rate_savings`, it gives the baseline its cheapest way to the accuracy: savings claimed
against it are a lower bound.

1 KB is 1000 bytes throughout (``BASELINES.md`` quotes AVIF's 13,221 bytes as "13.2 KB").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "OVERLAP_STEPS",
    "RULES",
    "Overlap",
    "Saving",
    "bytes_at_accuracy",
    "bytes_within",
    "coverage",
    "format_kb",
    "overlap_saving",
    "rate_savings",
    "rate_savings_at_baseline",
    "within_table",
]

#: The crossing rules :func:`bytes_at_accuracy` understands (see the module docstring).
RULES = ("first", "stay")

Curve = Sequence[tuple[float, float]]


def _checked(curve: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The curve sorted by bytes, after checking every point."""
    points = []
    for point in curve:
        try:
            num_bytes, top1 = (float(v) for v in point)
        except (TypeError, ValueError):
            raise TypeError(f"a curve point must be (bytes, top1), got {point!r}") from None
        if not (math.isfinite(num_bytes) and num_bytes > 0):
            raise ValueError(f"curve bytes must be positive and finite, got {num_bytes!r}")
        if not math.isfinite(top1):
            raise ValueError(f"curve top-1 must be finite, got {top1!r}")
        points.append((num_bytes, top1))
    return sorted(points)


def _interpolate(p0: tuple[float, float], p1: tuple[float, float], target: float) -> float:
    """Bytes where the segment p0 -> p1 (linear in log bytes) reaches ``target``."""
    (b0, a0), (b1, a1) = p0, p1
    t = (target - a0) / (a1 - a0)
    return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))


def bytes_at_accuracy(curve: Curve, target: float, rule: str = "first") -> float | None:
    """Mean bytes per image at which the measured curve reaches top-1 ``target``.

    Args:
        curve: measured ``(bytes, top1)`` points, any order.
        target: top-1 (percent) to reach.
        rule: ``"first"`` or ``"stay"`` (module docstring).

    Returns:
        The interpolated bytes, or None when the measured range does not cover ``target``: never
        reached, or already exceeded at the lowest measured rate (the rate needed is then below
        anything measured, which would be an extrapolation).

    Raises:
        ValueError: unknown rule, or a point with non-positive bytes or non-finite values.
        TypeError: a point that is not a pair of numbers.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    points = _checked(curve)
    if not points or not math.isfinite(target):
        return None
    if points[0][1] >= target:
        return points[0][0] if points[0][1] == target else None
    below = [i for i, (_, a) in enumerate(points) if a < target]
    start = below[0] if rule == "first" else below[-1]
    for i in range(start, len(points) - 1):
        if points[i][1] < target <= points[i + 1][1]:
            return _interpolate(points[i], points[i + 1], target)
    return None


def coverage(curve: Curve, target: float) -> str:
    """Why a curve has (or lacks) a rate for ``target``.

    Returns:
        ``"reached"``, ``"not reached"`` (top-1 stays below ``target`` over the measured range),
        ``"below range"`` (already at or above ``target`` at the lowest measured rate), or
        ``"no data"``.
    """
    points = _checked(curve)
    if not points:
        return "no data"
    if points[0][1] > target:
        return "below range"
    if max(a for _, a in points) < target:
        return "not reached"
    return "reached"


def bytes_within(
    curve: Curve, teacher_top1: float, points: float, rule: str = "first"
) -> float | None:
    """Bytes needed to stay within ``points`` percentage points of the teacher's top-1.

    Args:
        curve: measured ``(bytes, top1)`` points.
        teacher_top1: the uncompressed teacher's top-1 (percent) on the same images.
        points: allowed penalty in percentage points (1.0 for "within 1 point").
        rule: see :func:`bytes_at_accuracy`.
    """
    if points < 0:
        raise ValueError(f"points must be non-negative, got {points!r}")
    return bytes_at_accuracy(curve, teacher_top1 - points, rule)


def within_table(
    curves: Mapping[str, Curve],
    teacher_top1: float,
    margins: Sequence[float] = (1.0, 3.0),
    rule: str = "first",
) -> dict[str, dict[float, float | None]]:
    """``{method: {margin: bytes or None}}`` for every curve and margin."""
    return {
        method: {m: bytes_within(curve, teacher_top1, m, rule) for m in margins}
        for method, curve in curves.items()
    }


@dataclass(frozen=True)
class Saving:
    """FrankenSplit's rate saving against one baseline at one top-1.

    Attributes:
        bytes: FrankenSplit's mean bytes per image at that top-1 (measured, or interpolated on
            its curve when read at a baseline's point; None: not covered).
        top1: FrankenSplit's top-1 there.
        baseline_bytes: the baseline's interpolated bytes at the same top-1 (None: not covered).
        saving: ``1 - bytes / baseline_bytes`` (0.6 = 60% fewer bytes), None when not covered.
    """

    bytes: float | None
    top1: float
    baseline_bytes: float | None
    saving: float | None


def rate_savings(fs_curve: Curve, baseline: Curve, rule: str = "first") -> list[Saving]:
    """Rate saving of FrankenSplit against a baseline at equal top-1, per FrankenSplit point.

    Args:
        fs_curve: FrankenSplit's measured ``(bytes, top1)`` points.
        baseline: the baseline's measured points.
        rule: how the baseline's bytes are read off its curve (:func:`bytes_at_accuracy`).

    Returns:
        One :class:`Saving` per FrankenSplit point, sorted by bytes.
    """
    out = []
    for num_bytes, top1 in _checked(fs_curve):
        base = bytes_at_accuracy(baseline, top1, rule)
        saving = None if base is None else 1.0 - num_bytes / base
        out.append(Saving(num_bytes, top1, base, saving))
    return out


def rate_savings_at_baseline(fs_curve: Curve, baseline: Curve) -> list[Saving]:
    """The same saving read the other way: at each measured baseline point, FrankenSplit's bytes.

    Where FrankenSplit's points lie outside the baseline's range (a baseline that never reaches
    FrankenSplit's top-1, or one whose lowest setting is already above it), :func:`rate_savings`
    has nothing to say; reading FrankenSplit's curve at the baseline's points covers the overlap
    from the other side. FrankenSplit's bytes are read with the ``"stay"`` rule (the dearer one on
    a noisy curve), so these savings, too, are never flattering to FrankenSplit.

    Returns:
        One :class:`Saving` per baseline point, sorted by the baseline's bytes; ``bytes`` and
        ``saving`` are None where FrankenSplit's measured curve does not cover that top-1.
    """
    out = []
    for base, top1 in _checked(baseline):
        fs = bytes_at_accuracy(fs_curve, top1, "stay")
        out.append(Saving(fs, top1, base, None if fs is None else 1.0 - fs / base))
    return out


#: How many evenly spaced top-1 values :func:`overlap_saving` reads by default.
OVERLAP_STEPS = 41


@dataclass(frozen=True)
class Overlap:
    """FrankenSplit's rate saving against one baseline across the top-1 both curves cover.

    Attributes:
        low, high: the top-1 range (percent) where both measured curves have a rate (and the
            band asked for, if any).
        savings: ``(top1, saving)`` at evenly spaced top-1 from ``low`` to ``high``.
        min_saving, max_saving: the smallest and largest of those savings.
    """

    low: float
    high: float
    savings: tuple[tuple[float, float], ...]
    min_saving: float
    max_saving: float


def _covered(curve: list[tuple[float, float]], rule: str) -> tuple[float, float]:
    """The top-1 range a checked, non-empty curve has a rate for under ``rule``
    (:func:`bytes_at_accuracy`): up to its best point with ``"first"``; with ``"stay"`` only up
    to its last (largest-rate) point, since above that a later dip has no crossing after it."""
    return curve[0][1], (max(a for _, a in curve) if rule == "first" else curve[-1][1])


def overlap_saving(fs_curve: Curve, baseline: Curve, band: tuple[float, float] | None = None,
                   steps: int = OVERLAP_STEPS) -> Overlap | None:
    """FrankenSplit's saving at equal top-1 over the whole overlap of two curves, not only at
    measured points: "needs X% fewer bytes" is a claim about a range of accuracies, and the
    range must be stated with it.

    Both curves are read at ``steps`` evenly spaced top-1 values of the overlap (interpolated
    linearly in log bytes); FrankenSplit's bytes with the ``"stay"`` rule and the baseline's with
    ``"first"``, so neither reading flatters FrankenSplit on a noisy curve.

    Args:
        fs_curve, baseline: measured ``(bytes, top1)`` points.
        band: optional ``(low, high)`` top-1 limits the overlap is cut to (65-82%, say).
        steps: how many top-1 values to read (at least 2).

    Returns:
        The :class:`Overlap`, or None where the curves (within ``band``) share no top-1 range of
        positive width.
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps!r}")
    ours, theirs = _checked(fs_curve), _checked(baseline)
    if not ours or not theirs:
        return None
    (lo1, hi1), (lo2, hi2) = _covered(ours, "stay"), _covered(theirs, "first")
    low, high = max(lo1, lo2), min(hi1, hi2)
    if band is not None:
        low, high = max(low, band[0]), min(high, band[1])
    if not high > low:
        return None
    savings = []
    for i in range(steps):
        top1 = low + (high - low) * i / (steps - 1)
        fs, base = bytes_at_accuracy(ours, top1, "stay"), bytes_at_accuracy(theirs, top1, "first")
        if fs is None or base is None:  # cannot happen inside both coverages; never guess
            raise AssertionError(f"top-1 {top1} inside the overlap has no rate")
        savings.append((top1, 1.0 - fs / base))
    values = [s for _, s in savings]
    return Overlap(low, high, tuple(savings), min(values), max(values))


def format_kb(num_bytes: float | None, missing: str = "not reached") -> str:
    """Bytes as KB (1 KB = 1000 bytes) with one decimal, or ``missing`` for None."""
    return missing if num_bytes is None else f"{num_bytes / 1000:.1f}"

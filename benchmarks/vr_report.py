"""The variable-rate model against the fixed-rate zoo and the standard codecs, on the dev set.

Reads the variable-rate model's rows (one per rate, method ``frankensplit_vr``, setting
``<model id>@<lambda>``; real bytes, batch 1) and the fixed-rate models' and the codecs' from the
shipped dev-set results (``frankensplit/zoo/results_dev.json``, which ``make results`` writes with
every trained zoo model, the variable-rate one among them: one run, the same 1,286 images), or the
variable-rate rows from an evaluation of its own (``--eval DIR``: ``frankensplit eval --model
<file> --codecs none --data ../shared/data/eval/ilsvrc2012_val_dev --out DIR``), and prints the
issue's targets:

1. at each fixed-rate model's bytes (1-14 KB), the variable-rate model's top-1 interpolated on its
   own curve (log-linear in bytes) minus that model's top-1;
2. at each rate between 60% and 82% top-1, its bytes over the best standard codec's at equal top-1
   (codec curves interpolated, never extrapolated);
3. the fewest bytes within 1.5 and 1 points of the teacher;
4. top-1 per rate on the validation split (the first 400 images, where checkpoints are chosen)
   and on the other images alone, from the per-image records: the evaluation's, or without
   ``--eval`` those of the ``make results`` run (``results/readme_eval/records.jsonl``) when they
   are the records the shipped rows were computed from.

    python benchmarks/vr_report.py                              # after `make results`
    python benchmarks/vr_report.py --eval results/eval_vr_dev   # a checkpoint not in the zoo

Not a unit test; prints what it measured, and says so when the two sources are different runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CODECS = ("jpeg", "webp", "avif", "jxl")
VALIDATION = 400


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eval", type=Path, default=None,
                   help="an eval folder of the variable-rate model (default: its rows in --results)")
    p.add_argument("--results", type=Path, default=REPO / "frankensplit/zoo/results_dev.json",
                   help="shipped results: the fixed-rate models and codecs (and, without --eval, "
                        "the variable-rate model)")
    p.add_argument("--records", type=Path, default=REPO / "results/readme_eval/records.jsonl",
                   help="without --eval: the per-image records of the run behind --results")
    return p.parse_args(argv)


def top1_at_bytes(curve: list[tuple[float, float]], num_bytes: float) -> float | None:
    """Top-1 at ``num_bytes`` on a (bytes, top-1) curve, log-linear in bytes; None outside it."""
    pts = sorted(curve)
    for (b0, t0), (b1, t1) in itertools.pairwise(pts):
        if b0 <= num_bytes <= b1:
            w = 0.0 if b1 == b0 else math.log(num_bytes / b0) / math.log(b1 / b0)
            return t0 + w * (t1 - t0)
    return None


def variable_rate_rows(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Model id -> the rows of its rates (methods ending in ``_vr``), by ascending bytes."""
    from frankensplit.eval.schema import is_variable_rate, split_rate_setting

    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if is_variable_rate(r["method"]):
            out.setdefault(split_rate_setting(r["setting"])[0], []).append(r)
    return {m: sorted(rs, key=lambda r: r["bytes"]) for m, rs in out.items()}


def split_top1(records: Path, images: int) -> dict[str, tuple[float, float, float, int]]:
    """setting -> (top-1 on the first `VALIDATION` images, on the rest, on all, images counted)
    over the first ``images`` images of a record log."""
    counts: dict[str, list[int]] = {}
    for line in records.read_text().splitlines():
        r = json.loads(line)
        if r["index"] >= images:
            continue
        c = counts.setdefault(r["setting"], [0, 0, 0, 0])
        part = 0 if r["index"] < VALIDATION else 2
        c[part] += int(r["correct1"])
        c[part + 1] += 1

    def pct(hits: int, n: int) -> float:
        return 100.0 * hits / n if n else float("nan")

    return {k: (pct(c[0], c[1]), pct(c[2], c[3]), pct(c[0] + c[2], c[1] + c[3]), c[1] + c[3])
            for k, c in counts.items()}


def matching_splits(records: Path, images: int, rows: Sequence[dict[str, Any]]
                    ) -> tuple[dict[str, tuple[float, float, float, int]], str]:
    """`split_top1` of ``records`` if they are the records of ``rows`` (every image, the same
    top-1 to the rows' 2 decimals), else ``{}``; and why not, in words."""
    if not records.is_file():
        return {}, f"no records at {records}"
    splits = split_top1(records, images)
    for r in rows:
        got = splits.get(r["setting"])
        if got is None or got[3] != images or abs(got[2] - r["top1"]) > 0.006:
            return {}, (f"{records} are not the records of these rows ({r['setting']}: "
                        f"{'absent' if got is None else f'{got[2]:.2f}% on {got[3]} images'}, "
                        f"rows {r['top1']:.2f}% on {images})")
    return splits, ""


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def report(vr_rows: Sequence[dict[str, Any]], teacher_top1: float, shipped: dict[str, Any],
           splits: dict[str, tuple[float, float, float, int]], images: int) -> None:
    """Print the four targets for one variable-rate model."""
    from frankensplit.eval.schema import FRANKENSPLIT_METHOD
    from frankensplit.eval.summary import bytes_at_accuracy

    teacher = vr_rows[0]["teacher"]
    rows = [r for r in shipped["rows"] if r["teacher"] == teacher]
    fixed = [r for r in rows if r["method"] == FRANKENSPLIT_METHOD]
    codecs = {m: [(r["bytes"], r["top1"]) for r in rows if r["method"] == m] for m in CODECS}
    vr = [(r["bytes"], r["top1"]) for r in vr_rows]
    print(f"| rate | KB | bpp | top-1 | val {min(images, VALIDATION)} | "
          f"other {max(images - VALIDATION, 0)} | x best codec at equal top-1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in vr_rows:
        best = best_ratio(r, codecs)
        best_text = f"{best[1]:.2f}x ({best[0]})" if best else "not covered"
        val, rest = (_pct(v) for v in splits.get(r["setting"], (math.nan, math.nan))[:2])
        print(f"| {r['setting']} | {r['bytes'] / 1000:.2f} | {r['bytes'] * 8 / 50176:.3f} | "
              f"{r['top1']:.2f} | {val} | {rest} | {best_text} |")
    codec_ratios = [(r["top1"], ratio) for r in vr_rows if (ratio := best_ratio(r, codecs))]
    in_band = [(t, x) for t, (_, x) in codec_ratios if 60.0 <= t <= 82.0]
    if in_band:
        worst = max(in_band, key=lambda tx: tx[1])
        print(f"\nRates between 60% and 82% top-1 (target: at most 0.6x the best codec's bytes): "
              f"{len(in_band)}, the most bytes {worst[1]:.2f}x (at {worst[0]:.2f}%); "
              f"{sum(x <= 0.6 for _, x in in_band)} of them at most 0.6x")
    print("\nAt the fixed-rate models' bytes (target: at most 0.5 points below each, 1-14 KB):")
    for f in sorted(fixed, key=lambda f: f["bytes"]):
        if 1000 <= f["bytes"] <= 14000:
            print(f"- {f['setting']}: {f['top1']:.2f}% at {f['bytes'] / 1000:.2f} KB; variable "
                  f"rate {at_fixed_bytes(vr, f['bytes'], f['top1'])}")
    curve = [(f["bytes"], f["top1"]) for f in fixed]
    covered = {r["setting"]: (r["top1"], t) for r in vr_rows
               if (t := top1_at_bytes(curve, r["bytes"])) is not None}
    if covered:
        print(f"\nRates above the fixed-rate curve at their own bytes (interpolated on it): "
              f"{sum(mine > theirs for mine, theirs in covered.values())} of the "
              f"{len(covered)} rates it covers")
    both = [f for f in sorted(fixed, key=lambda f: f["bytes"])
            if 1000 <= f["bytes"] <= 14000 and f["setting"] in splits and images > VALIDATION]
    if both:  # the fixed-rate models' records are in the same log
        print(f"\nThe same on the images after the first {VALIDATION} alone (top-1 from the "
              "records; bytes are the whole set's):")
        rest = [(r["bytes"], splits[r["setting"]][1]) for r in vr_rows]
        for f in both:
            theirs = splits[f["setting"]][1]
            print(f"- {f['setting']}: {theirs:.2f}%; variable rate "
                  f"{at_fixed_bytes(rest, f['bytes'], theirs)}")
    for margin in (1.5, 1.0):
        b = bytes_at_accuracy(vr, teacher_top1 - margin)
        print(f"\nWithin {margin} points of the teacher: "
              + (f"{b / 1000:.2f} KB" if b else "not reached"))


def best_ratio(row: dict[str, Any], codecs: dict[str, list[tuple[float, float]]]
               ) -> tuple[str, float] | None:
    """(codec, bytes of ``row`` over that codec's at equal top-1) for the codec needing the
    fewest bytes there (the largest ratio); None where no codec curve covers the top-1."""
    from frankensplit.eval.summary import bytes_at_accuracy

    ratios = {m: row["bytes"] / b for m, c in codecs.items()
              if c and (b := bytes_at_accuracy(c, row["top1"])) is not None}
    return max(ratios.items(), key=lambda kv: kv[1]) if ratios else None


def at_fixed_bytes(vr: list[tuple[float, float]], num_bytes: float, top1: float) -> str:
    """The variable-rate curve's top-1 at a fixed-rate model's bytes against its ``top1``; past
    the curve's ends, its nearest rate, saying whether that rate spends fewer or more bytes."""
    mine = top1_at_bytes(vr, num_bytes)
    if mine is not None:
        return f"{mine:.2f} ({mine - top1:+.2f} points)"
    b, t = max(vr) if num_bytes > max(vr)[0] else min(vr)
    side = "fewer" if b < num_bytes else "more"
    return (f"outside its curve; its nearest rate, with {side} bytes ({b / 1000:.2f} KB): "
            f"{t:.2f} ({t - top1:+.2f} points)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from frankensplit.eval.records import read_results
    from frankensplit.eval.schema import TEACHER_METHOD

    shipped = read_results(args.results)
    source = read_results(args.eval) if args.eval else shipped
    by_model = variable_rate_rows(source["rows"])
    if not by_model:
        print(f"no variable-rate rows (methods ending in _vr) in {source['origin']}: run "
              "`make results` with the model in the zoo, or evaluate it and pass --eval DIR",
              file=sys.stderr)
        return 2
    images = int(source["meta"]["images"])
    teachers = {r["teacher"]: r["top1"] for r in source["rows"] if r["method"] == TEACHER_METHOD}
    if args.eval:
        theirs = {r["teacher"]: r["top1"] for r in shipped["rows"]
                  if r["method"] == TEACHER_METHOD}
        print(f"Variable-rate eval: {source['origin']}. Fixed-rate models and codecs: "
              f"{shipped['origin']}: another run on the same images (teacher "
              + ", ".join(f"{t} {v:.2f}%" for t, v in theirs.items()) + ").\n")
        if images != shipped["meta"]["images"]:
            print(f"WARNING: the evaluation has {images} images, the shipped results "
                  f"{shipped['meta']['images']}: the comparisons below are not on the same "
                  "images.\n")
    else:
        print(f"Every row from one run: {shipped['origin']}.\n")
    records = args.eval / "records.jsonl" if args.eval else args.records
    for model_id, vr_rows in by_model.items():
        splits, why = matching_splits(records, images, vr_rows)
        teacher = vr_rows[0]["teacher"]
        print(f"## {model_id} (teacher {teacher}: {teachers[teacher]:.2f}%)\n")
        if why:
            print(f"Validation / other columns: none ({why}).\n")
        report(vr_rows, teachers[teacher], shipped, splits, images)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

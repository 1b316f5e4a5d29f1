"""The variable-rate model against the fixed-rate zoo and the standard codecs, on the dev set.

Reads an evaluation of the variable-rate model (``frankensplit eval --model <file> --codecs none
--data ../shared/data/eval/ilsvrc2012_val_dev --out DIR``: every rate, real bytes, batch 1) and
the shipped dev-set results (``frankensplit/zoo/results_dev.json``: the fixed-rate models and the
codecs on the same 1,286 images) and prints the issue's targets:

1. at each fixed-rate model's bytes (1-14 KB), the variable-rate model's top-1 interpolated on its
   own curve (log-linear in bytes) minus that model's top-1;
2. at each rate between 60% and 82% top-1, its bytes over the best standard codec's at equal top-1
   (codec curves interpolated, never extrapolated);
3. the fewest bytes within 1.5 and 1 points of the teacher;
4. top-1 per rate on the validation split (the first 400 images, where checkpoints are chosen)
   and on the other 886 alone (from the evaluation's per-image records).

    python benchmarks/vr_report.py --eval results/eval_vr_dev

Not a unit test; prints what it measured, and says so when the two sources are different runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODECS = ("jpeg", "webp", "avif", "jxl")
VALIDATION = 400


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eval", type=Path, required=True, help="the variable-rate model's eval folder")
    p.add_argument("--results", type=Path, default=REPO / "frankensplit/zoo/results_dev.json")
    return p.parse_args()


def top1_at_bytes(curve: list[tuple[float, float]], num_bytes: float) -> float | None:
    """Top-1 at ``num_bytes`` on a (bytes, top-1) curve, log-linear in bytes; None outside it."""
    pts = sorted(curve)
    for (b0, t0), (b1, t1) in itertools.pairwise(pts):
        if b0 <= num_bytes <= b1:
            w = 0.0 if b1 == b0 else math.log(num_bytes / b0) / math.log(b1 / b0)
            return t0 + w * (t1 - t0)
    return None


def split_top1(records: Path) -> dict[str, tuple[float, float]]:
    """setting -> (top-1 on the first `VALIDATION` images, top-1 on the rest)."""
    counts: dict[str, list[int]] = {}
    for line in records.read_text().splitlines():
        r = json.loads(line)
        c = counts.setdefault(r["setting"], [0, 0, 0, 0])
        part = 0 if r["index"] < VALIDATION else 2
        c[part] += int(r["correct1"])
        c[part + 1] += 1
    nan = float("nan")
    return {k: (100.0 * c[0] / c[1] if c[1] else nan, 100.0 * c[2] / c[3] if c[3] else nan)
            for k, c in counts.items()}


def main() -> None:
    args = parse_args()
    from frankensplit.eval.summary import bytes_at_accuracy

    ev = json.loads((args.eval / "results.json").read_text())
    shipped = json.loads(args.results.read_text())
    vr_rows = [r for r in ev["rows"] if r["method"].endswith("_vr")]
    vr = [(r["bytes"], r["top1"]) for r in vr_rows]
    teacher = next(r["top1"] for r in ev["rows"] if r["method"] == "teacher")
    rows = shipped["rows"]
    fixed = [r for r in rows if r["method"] == "frankensplit"]
    codecs = {m: [(r["bytes_per_image"], r["top1"]) for r in rows if r["method"] == m]
              for m in CODECS}
    print(f"Variable-rate eval: {args.eval} ({ev['meta']['data']}); "
          f"teacher {teacher:.2f}%. Fixed-rate models and codecs: {args.results.name} "
          f"(commit {shipped['commit'][:7]}, `{shipped['command']}`): another run on the same "
          f"images (teacher {shipped['teachers']['tf_efficientnet_lite0']['top1']:.2f}%).\n")
    splits = split_top1(args.eval / "records.jsonl")
    measured = ev["meta"]["images"]
    if measured != shipped["data"]["images"]:
        print(f"WARNING: the evaluation has {measured} images, the shipped results "
              f"{shipped['data']['images']}: the comparisons below are not on the same images.\n")
    print("| rate | KB | bpp | top-1 | val 400 | other 886 | x best codec at equal top-1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in vr_rows:
        ratios = {m: r["bytes"] / b for m, c in codecs.items()
                  if (b := bytes_at_accuracy(c, r["top1"])) is not None}
        best = max(ratios.items(), key=lambda kv: kv[1]) if ratios else None  # fewest bytes
        best_text = f"{best[1]:.2f}x ({best[0]})" if best else "not covered"
        val, rest = splits.get(r["setting"], (float("nan"), float("nan")))
        print(f"| {r['setting']} | {r['bytes'] / 1000:.2f} | {r['bytes'] * 8 / 50176:.3f} | "
              f"{r['top1']:.2f} | {val:.2f} | {rest:.2f} | {best_text} |")
    print("\nAt the fixed-rate models' bytes (target: at most 0.5 points below each, 1-14 KB):")
    for f in sorted(fixed, key=lambda f: f["bytes_per_image"]):
        if not 1000 <= f["bytes_per_image"] <= 14000:
            continue
        mine = top1_at_bytes(vr, f["bytes_per_image"])
        diff = "outside the variable-rate curve" if mine is None else \
            f"{mine:.2f} ({mine - f['top1']:+.2f} points)"
        print(f"- {f['setting']}: {f['top1']:.2f}% at {f['bytes_per_image'] / 1000:.2f} KB; "
              f"variable rate {diff}")
    for margin in (1.5, 1.0):
        b = bytes_at_accuracy(vr, teacher - margin)
        print(f"\nWithin {margin} points of the teacher: "
              + (f"{b / 1000:.2f} KB" if b else "not reached"))


if __name__ == "__main__":
    main()

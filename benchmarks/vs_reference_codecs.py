"""FrankenSplit's measured points against the standard codecs' reference curves of BASELINES.md.

For when the codecs cannot be re-run beside the models (a full codec sweep over the 1,286 dev
images costs about an hour of one core here, 28 settings with AVIF's slow encoder): reads
FrankenSplit's rows from a ``frankensplit eval`` results.json on the dev set, and the codecs'
measured (bytes, top-1) points from ``../shared/BASELINES.md``, which were measured on the same
1,286 images with the same teacher, weights and preprocessing (our codecs reproduce its bytes at
every setting: ``benchmarks/codec_curves.py --bytes-only``). Prints, per FrankenSplit model, the
bytes each codec needs for the same top-1 (log-linear interpolation, never extrapolated), the best
codec's, and the ratio the issue-11 target bounds (<= 0.8 for models between 60% and 80% top-1).
Not a unit test; ``benchmarks/results.py`` is the same-run comparison.

    python benchmarks/vs_reference_codecs.py results/zoo_eval/results.json
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINES = REPO.parent / "shared/BASELINES.md"
CODECS = ("JPEG", "WebP", "AVIF", "JPEG XL")


def reference_curves(path: Path) -> dict[str, list[tuple[float, float]]]:
    """{codec: [(bytes, top1), ...]} from the table rows of BASELINES.md ("| JPEG (...) | b/t, ...").

    Raises:
        ValueError: a codec's row is missing or unreadable.
    """
    curves = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\|\s*(JPEG XL|JPEG|WebP|AVIF)\s*\(.*?\)\s*\|\s*(.+?)\s*\|\s*$", line)
        if m:
            points = [tuple(map(float, p.split("/"))) for p in m.group(2).split(",")]
            curves[m.group(1)] = points
    missing = [c for c in CODECS if c not in curves]
    if missing:
        raise ValueError(f"{path}: no reference curve for {missing}")
    return curves


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="results.json of frankensplit eval on the dev set")
    p.add_argument("--baselines", type=Path, default=BASELINES)
    p.add_argument("--plot", type=Path, default=None, help="also write a rate-accuracy PNG here")
    args = p.parse_args()
    from frankensplit.eval.records import read_results
    from frankensplit.eval.summary import bytes_at_accuracy

    rows = read_results(args.results)["rows"]
    teacher = [r for r in rows if r["method"] == "teacher"]
    fs = sorted((r for r in rows if r["method"] == "frankensplit"), key=lambda r: r["bytes"])
    if not fs:
        print(f"{args.results}: no FrankenSplit rows", file=sys.stderr)
        return 2
    curves = reference_curves(args.baselines)
    print(f"FrankenSplit ({fs[0]['images']} images, teacher {teacher[0]['top1']:.2f}%) against the "
          f"codec curves of {args.baselines.name} (same images, teacher and preprocessing)\n")
    print("| model | top-1 | bytes | " + " | ".join(f"{c} bytes" for c in CODECS)
          + " | best codec | FS / best |")
    print("|---|---:|---:|" + "---:|" * len(CODECS) + "---|---:|")
    for r in fs:
        need = {c: bytes_at_accuracy(curves[c], r["top1"]) for c in CODECS}
        known = {c: b for c, b in need.items() if b is not None}
        best = min(known, key=known.get) if known else None
        ratio = f"{r['bytes'] / known[best]:.2f}" if best else "-"
        cells = " | ".join("-" if need[c] is None else f"{need[c]:.0f}" for c in CODECS)
        print(f"| {r['setting']} | {r['top1']:.2f} | {r['bytes']:.0f} | {cells} | "
              f"{best or 'none reaches it'} | {ratio} |")
    if args.plot:
        plot(args.plot, curves, fs, teacher[0]["top1"])
        print(f"\nwrote {args.plot}")
    return 0


def plot(path: Path, curves: dict[str, list[tuple[float, float]]], fs: list[dict],
         teacher_top1: float) -> None:
    """Codec reference curves and FrankenSplit's points, top-1 over KB (log axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for codec, points in curves.items():
        ax.plot([b / 1000 for b, _ in points], [t for _, t in points], "o--", ms=3,
                label=f"{codec} (BASELINES.md)")
    ax.plot([r["bytes"] / 1000 for r in fs], [r["top1"] for r in fs], "s-", color="black",
            label="FrankenSplit (this zoo)")
    ax.axhline(teacher_top1, color="gray", lw=0.8, ls=":", label=f"teacher {teacher_top1:.2f}%")
    ax.set_xscale("log")
    ax.set_xlabel("KB per image (real bytes)")
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(40, 86)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())

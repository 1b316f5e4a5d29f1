"""``frankensplit demo``: the edge -> bytes -> server pipeline on real photos, beside JPEG and WebP.

With no arguments it runs on photos that ship inside installed packages (scikit-image's sample
photos and matplotlib's portrait of Grace Hopper), so it works on a fresh machine with no data. For
each photo it prints the teacher's own prediction, FrankenSplit's prediction and packet size, and
the smallest JPEG / WebP file (over the standard quality sweep) for which the unmodified teacher
still gives its uncompressed answer: the bytes each method needs for the same answer.

It also writes a small rate-accuracy comparison into ``--out`` (default ``results/demo``):
``rate_accuracy.png`` (agreement with the teacher's top-1 against KB per image, FrankenSplit vs
every setting of JPEG and WebP) and ``summary.md``, measured by the same code as
``frankensplit eval`` (whose result files, see :mod:`frankensplit.eval.schema`, are written too).
With ``--data DIR`` it runs that full ``eval`` comparison on a labelled dataset instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from frankensplit.commands._common import add_model_args, load_model

__all__ = ["HELP", "configure", "run"]

HELP = "run the split pipeline on real photos and compare bytes with JPEG/WebP"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    add_model_args(parser)
    parser.add_argument("--images", default=None, help="folder of photos (default: bundled)")
    parser.add_argument("--codecs", default=None,
                        help="baselines, comma-separated (default: jpeg,webp; with --data: "
                             "jpeg,webp,avif,jxl)")
    parser.add_argument("--data", default=None,
                        help="a labelled dataset (folder with labels.csv, or a labels CSV): run "
                             "the full `frankensplit eval` comparison on it instead")
    parser.add_argument("--limit", type=int, default=None, help="with --data: first N images")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: 1 with --data, as `frankensplit eval`; "
                             "torch's default otherwise)")
    parser.add_argument("--out", default="results/demo",
                        help="folder for the rate-accuracy plot, summary.md and results files")


def _smallest_matching(
    records: dict[tuple[str, str, int], dict], codec: str, sweep: list[str], index: int, target: int
) -> int:
    """Bytes of the first setting of the sweep (low to high quality) keeping the teacher's answer.

    Returns -1 when no setting of the sweep does.
    """
    for setting in sweep:
        record = records[(codec, setting, index)]
        if record["pred"][0] == target:
            return int(record["bytes"])
    return -1


def _print_table(photos: list[Path], codecs: list[str], result: Any, model_id: str) -> None:
    """The per-photo table and totals, read from the evaluation's per-image records."""
    from frankensplit.eval import read_records
    from frankensplit.protocol import class_names

    names = class_names(1000)
    records = {(r["method"], r["setting"], r["index"]): r
               for r in read_records(result.paths["records"])}
    sweeps = {c: [r["setting"] for r in result.rows if r["method"] == c] for c in codecs}
    header = f"{'photo':22s} {'teacher says':24s} {'FrankenSplit says':24s} {'FS bytes':>8s}"
    print(header + "".join(f" {c + ' bytes':>11s}" for c in codecs))
    totals: dict[str, Any] = {"fs": 0, "agree": 0, **{c: [] for c in codecs}}
    for i, path in enumerate(photos):
        target = records[("teacher", "uncompressed", i)]["pred"][0]
        fs = records[("frankensplit", model_id, i)]
        pred = fs["pred"][0]
        totals["fs"] += fs["bytes"]
        totals["agree"] += int(pred == target)
        row = (f"{path.name[:22]:22s} {names[target][:24]:24s} {names[pred][:24]:24s} "
               f"{fs['bytes']:8d}")
        for name in codecs:
            size = _smallest_matching(records, name, sweeps[name], i, target)
            totals[name].append(size)
            row += f" {size if size >= 0 else 'never':>11}"
        print(row)
    n = len(photos)
    print(f"\nFrankenSplit ({model_id}): mean {totals['fs'] / n:.0f} bytes/image, "
          f"same answer as the teacher on {totals['agree']}/{n}")
    for name in codecs:
        ok = [s for s in totals[name] if s >= 0]
        mean = f"{sum(ok) / len(ok):.0f}" if ok else "n/a"
        print(f"{name}: mean {mean} bytes/image for the teacher's answer "
              f"(reached on {len(ok)}/{n} within the quality sweep)")


def _rate_curve(args: argparse.Namespace, teacher: str) -> list[Any]:
    """The other shipped trained models of the same teacher, so the plot shows a curve, not a point.

    Only on the embedded defaults (no --model, no --codec-weights): a user naming one model asked
    for that model.
    """
    from frankensplit.models.zoo import MODELS, create_model, default_model_id

    if args.model is not None or args.codec_weights is not None:
        return []
    default = MODELS.get(default_model_id())
    ids = [m for m in MODELS.names() if m != default.model_id and MODELS.get(m).trained
           and (MODELS.get(m).architecture.teacher, MODELS.get(m).architecture.method)
           == (teacher, default.architecture.method)]
    return [create_model(m, teacher_weights=args.teacher_weights) for m in ids]


def _run_dataset(args: argparse.Namespace) -> int:
    """``--data``: the full ``frankensplit eval`` comparison on a labelled dataset."""
    from frankensplit.codecs import parse_codecs
    from frankensplit.eval import load_dataset, run_eval

    codecs, skipped = parse_codecs(args.codecs)
    if skipped:
        print(f"note: codecs {skipped} are not available here and are skipped", file=sys.stderr)
    files, labels = load_dataset(args.data, args.limit)
    model = load_model(args)
    result = run_eval([model], files, labels, args.out, {c: None for c in codecs},
                      data=str(args.data), overwrite=True, progress=True)
    print(result.paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in result.paths.values()))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the pipeline on the photos (or ``--data``), print the table, write the plot."""
    import torch

    from frankensplit.data import bundled_photos, find_images
    from frankensplit.eval import run_eval

    threads = args.threads if args.threads is not None else (1 if args.data else None)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    if args.data:
        return _run_dataset(args)
    photos = find_images(args.images) if args.images else bundled_photos()
    if not photos:
        raise ValueError("no photos: pass --images DIR (scikit-image/matplotlib photos not found)")
    codecs = [c for c in (args.codecs or "jpeg,webp").split(",") if c]
    model = load_model(args)
    models = [model, *_rate_curve(args, model.teacher.name)]
    t0 = time.perf_counter()
    # Unlabelled photos: every method is scored by agreement with the uncompressed teacher.
    result = run_eval(models, photos, [-1] * len(photos), args.out, {c: None for c in codecs},
                      data=str(args.images or "photos bundled with scikit-image/matplotlib"),
                      overwrite=True)
    _print_table(photos, codecs, result, model.model_id)
    print(f"rate-accuracy plot and tables: {result.paths['plot']}, {result.paths['markdown']}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0

"""``frankensplit eval``: rate-accuracy of FrankenSplit models against standard codecs.

    frankensplit eval --model fs-lite0-untrained --data ../shared/data/fixtures/tiny16 \\
        --codecs jpeg,webp --qualities 10,50 --limit 16 --out results/eval_tiny

Baselines: an Entropic Student model is a ``--model`` like FrankenSplit's (zoo id or the
``best.safetensors`` of its training run); the learned image codec is a codec,
``--codecs bmshj2018-factorized:RUN_FOLDER`` (its sweep is the trained lambdas).

Writes results.json, results.csv, rate_accuracy.png, summary.md and records.jsonl into ``--out``
(see :mod:`frankensplit.eval.schema`). Interrupt it at any time; ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from frankensplit.cli import check_model, positive_int, teacher_weights
from frankensplit.commands._common import untrained_note
from frankensplit.models.zoo_index import default_model_id

__all__ = ["HELP", "configure", "run"]

HELP = "rate-accuracy evaluation: FrankenSplit models vs standard codecs, real bytes"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    parser.add_argument("--model", default=None, metavar="M[,M2...]",
                        help="model id(s) or codec files written by `frankensplit train` "
                             "(FrankenSplit, Entropic Student), comma-separated (default: the "
                             "default model)")
    parser.add_argument("--data", required=True,
                        help="image folder (with labels.csv or wnid sub-folders) or a labels CSV")
    parser.add_argument("--codecs", default=None,
                        help="comma-separated codecs, or 'none' (default: jpeg,webp,avif,jxl, "
                             "those available here); learned codecs name their weights: "
                             "bmshj2018-factorized:RUN_FOLDER_OR_FILE")
    parser.add_argument("--qualities", action="append", default=[], metavar="[CODEC=]Q1,Q2",
                        help="quality sweep for every codec, or for one with CODEC=; repeatable "
                             "(default: each codec's sweep; jxl takes butteraugli distances)")
    parser.add_argument("--limit", type=positive_int, default=None, help="first N images only")
    parser.add_argument("--out", default="results/eval", help="output folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue the record log in --out, measuring only what it lacks")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard an existing record log in --out")
    parser.add_argument("--teacher-weights", default="auto", type=teacher_weights(),
                        help="auto | offline | online | PATH to a checkpoint of the teacher")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads (default 1: timings describe one core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Load the models, measure, write the result files, print the summary."""
    ids = [m.strip() for m in (args.model or default_model_id()).split(",") if m.strip()]
    for model_id in ids:  # before torch loads
        check_model(model_id)
    if not Path(args.data).exists():
        raise ValueError(f"--data {args.data} not found: give an image folder or a labels CSV")

    import torch

    from frankensplit.codecs import parse_codecs, parse_qualities
    from frankensplit.eval.pipeline import load_dataset, run_eval
    from frankensplit.models.zoo import create_model

    names, skipped = parse_codecs(args.codecs)
    if skipped:
        print(f"note: codecs {skipped} are not available here and are skipped", file=sys.stderr)
    qualities = parse_qualities(args.qualities, names)
    files, labels = load_dataset(args.data, args.limit)
    torch.set_num_threads(args.threads)  # once the arguments are known to be good
    models = []
    for model_id in ids:
        models.append(create_model(model_id, teacher_weights=args.teacher_weights))
        if note := untrained_note(model_id):
            print(note, file=sys.stderr)
    result = run_eval(models, files, labels, args.out, qualities, data=str(args.data),
                      resume=args.resume, overwrite=args.overwrite,
                      progress=not args.no_progress)
    print(result.paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in result.paths.values()))
    return 0

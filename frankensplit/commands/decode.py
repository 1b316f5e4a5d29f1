"""``frankensplit decode``: the server side, ``.fsb`` packets -> top-k classes as JSON lines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frankensplit.commands._common import add_model_args, load_model

if TYPE_CHECKING:
    import torch

HELP = "server side: decode .fsb bitstreams and print the top-k classes (JSON lines)"


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("files", nargs="+", help=".fsb files written by `frankensplit encode`")
    parser.add_argument("--topk", type=int, default=5, help="classes to print per file")


def topk(logits: torch.Tensor, k: int) -> list[dict[str, Any]]:
    """Top-k of one logit vector with ImageNet names and probabilities."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    probs = logits.softmax(-1)
    values, indexes = probs.topk(min(k, probs.numel()))
    return [
        {"class": int(i), "name": info.index_to_description(int(i)), "prob": round(float(v), 5)}
        for v, i in zip(values, indexes)
    ]


def run(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise ValueError(f"--topk must be >= 1, got {args.topk}")
    model = load_model(args)
    server = model.server
    for path in map(Path, args.files):
        if not path.is_file():
            raise ValueError(f"bitstream not found: {path}")
        data = path.read_bytes()
        logits = server.decode([data])[0]
        print(json.dumps({"file": str(path), "model_id": model.model_id, "bytes": len(data),
                          "top": topk(logits, args.topk)}))
    return 0

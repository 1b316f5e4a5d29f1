"""``frankensplit saliency``: compute a teacher's saliency maps for a dataset into a cache."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from frankensplit.cli import non_negative_int, positive_int, teacher_weights

__all__ = ["HELP", "configure", "run"]

HELP = "compute the XGradCAM saliency maps of a dataset (for saliency-guided training)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    parser.add_argument("--teacher", required=True, help="timm name of the teacher backbone")
    parser.add_argument("--data", required=True, nargs="+", metavar="DIR",
                        help="image folder(s), as in the config's data.train")
    parser.add_argument("--out", default=None,
                        help="cache folder (default: runs/saliency/<teacher>); set the training "
                             "config's saliency_cache to it")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="only the first N images (sorted), as data.train_limit")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--weights", default="auto", type=teacher_weights(),
                        help="teacher weights: auto, offline, online or a checkpoint path")
    parser.add_argument("--device", default="cpu", type=_device, help="cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="DataLoader worker processes")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def run(args: argparse.Namespace) -> int:
    """Build (or reuse, or finish) the cache and print what happened."""
    for folder in args.data:  # before torch and the teacher load
        if not Path(folder).exists():
            raise ValueError(f"--data {folder} not found: give image folders")
    import torch

    from frankensplit.backbones import create_classifier, resolve_data_config
    from frankensplit.data import ImageDataset, make_transform
    from frankensplit.saliency.cache import build_cache

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {args.device!r} requested but CUDA is not available")
    model = create_classifier(args.teacher, args.weights).eval().requires_grad_(False)
    model.to(args.device)
    transform = make_transform(resolve_data_config(model), "fixed")
    dataset = ImageDataset(args.data, transform, limit=args.limit)
    out = Path(args.out) if args.out else Path("runs") / "saliency" / args.teacher
    result = build_cache(
        model, dataset, out, f"{args.teacher} (weights: {args.weights})",
        batch_size=args.batch_size, workers=args.workers, dtype=args.dtype,
        progress=not args.no_progress,
    )
    print(f"saliency cache {result.cache_dir}: {result.status}, {result.computed} maps computed, "
          f"{result.total} in all", file=sys.stdout)
    return 0

"""Rate-accuracy curves of the standard codecs against the unmodified teacher.

Each codec compresses exactly the 224x224 RGB crop the teacher sees (timm's eval transform of the
backbone, before normalisation); the decoded crop is normalised and classified. Prints, per
setting, the mean bytes of the codec's whole output, bpp and top-1, to compare with
``shared/BASELINES.md``. Not a unit test.

    python benchmarks/codec_curves.py --limit 200 --codecs jpeg,webp
    python benchmarks/codec_curves.py --bytes-only            # rate only, all images, no teacher
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from frankensplit.backbones import SplitBackbone, create_backbone
from frankensplit.codecs import CODECS, available_codecs, bpp, create_codec, measure
from frankensplit.data import crop_transform, load_image, normalize_transform, read_labels_csv

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared/data/eval/ilsvrc2012_val_dev"


def top1(
    teacher: SplitBackbone, crops: Sequence[Image.Image], labels: Sequence[int], batch_size: int
) -> float:
    """Top-1 accuracy (%) of the teacher on RGB crops, in batches."""
    normalize = normalize_transform(teacher.data_config)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(crops), batch_size):
            x = torch.stack([normalize(c) for c in crops[i : i + batch_size]])  # (B, 3, 224, 224)
            pred = teacher(x).argmax(dim=1)  # (B,)
            correct += int((pred == torch.tensor(labels[i : i + batch_size])).sum())
    return 100.0 * correct / len(crops)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder with labels.csv")
    p.add_argument("--limit", type=int, default=None, help="use the first N images of labels.csv")
    p.add_argument("--codecs", default=None, help="comma-separated names (default: all available)")
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bytes-only", action="store_true", help="skip the teacher: rate only")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.codecs.split(",") if args.codecs else available_codecs()
    codecs = [create_codec(n) for n in names]  # fail early on a bad name, listing CODECS.names()
    files, labels = read_labels_csv(args.root / "labels.csv")
    if args.limit is not None:
        files, labels = files[: args.limit], labels[: args.limit]

    # Random weights carry the same timm preprocessing config; rate needs no trained teacher.
    teacher = create_backbone(args.backbone, weights=None if args.bytes_only else "auto")
    data_config = teacher.data_config
    if args.bytes_only:
        teacher = None
    crop = crop_transform(data_config)
    crops = [crop(load_image(f)) for f in files]
    print(
        f"{len(crops)} images from {args.root}, crop {crops[0].size}, {args.backbone}, "
        f"codecs {names} of {CODECS.names()}"
    )
    if teacher is not None:
        print(f"teacher top-1 uncompressed: {top1(teacher, crops, labels, args.batch_size):.2f}%")
    print(f"{'codec':6} {'setting':>7} {'bytes':>8} {'bpp':>6} {'top-1':>6} {'s/img':>7}")
    for codec in codecs:
        for q in codec.qualities:
            t0 = time.perf_counter()
            coded = measure(codec, crops, q)
            sec = (time.perf_counter() - t0) / len(crops)
            mean_bytes = sum(c.num_bytes for c in coded) / len(coded)
            mean_bpp = sum(bpp(c.num_bytes, c.x_hat) for c in coded) / len(coded)
            acc = "-"
            if teacher is not None:
                acc = f"{top1(teacher, [c.x_hat for c in coded], labels, args.batch_size):.1f}"
            print(
                f"{codec.name:6} {q:>7g} {mean_bytes:8.0f} {mean_bpp:6.3f} {acc:>6} {sec:7.4f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

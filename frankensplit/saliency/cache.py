"""The on-disk saliency map cache and the dataset that serves the maps next to the images.

Maps are computed once, offline (FRANKENSPLIT.md), so a cache must prove it still belongs to the
data it is read with. A cache folder holds::

    maps.npy        (N, 28, 28) float16/float32, row i = image i of the dataset (sorted file order)
    manifest.json   teacher, target layers, view (the exact transform), map size, progress, and
                    the dataset's files as [relative path, size, mtime] rows with their sha256

Any change to the files (added, removed, renamed, rewritten) changes the rows, so a reordered or
edited dataset is refused with the first differing file named, never silently misaligned. A
dataset may be a prefix of the cached one (``train_limit``). Building is resumable: rows are
written in place and ``done`` counts the finished ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from frankensplit.backbones import resolve_data_config
from frankensplit.data import ImageDataset, make_transform
from frankensplit.saliency.gradcam import MAP_SIZE, TargetLayers, saliency_maps, target_layers

__all__ = [
    "CACHE_FORMAT",
    "CacheResult",
    "SaliencyDataset",
    "build_cache",
    "file_rows",
    "read_manifest",
    "rows_sha256",
]

CACHE_FORMAT = "frankensplit-saliency-1"
_MAPS, _MANIFEST = "maps.npy", "manifest.json"
_DTYPES = ("float16", "float32")


def file_rows(files: list[Path]) -> list[list[Any]]:
    """``[relative path, size, mtime seconds]`` per file, relative to the files' common folder.

    Relative paths keep a cache valid when the whole dataset folder moves; size and mtime catch
    files rewritten in place.
    """
    if not files:
        return []
    paths = [Path(f).absolute() for f in files]  # not resolved: symlinked datasets keep their names
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    rows = []
    for p in paths:
        st = p.stat()
        rows.append([p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns // 1_000_000_000])
    return rows


def rows_sha256(rows: list[list[Any]]) -> str:
    """A stable hash of file rows (compact JSON, in order)."""
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def read_manifest(cache_dir: str | Path) -> dict[str, Any]:
    """The manifest of a cache folder.

    Raises:
        ValueError: no cache there, or an unreadable / foreign manifest.
    """
    path = Path(cache_dir) / _MANIFEST
    if not path.is_file():
        raise ValueError(
            f"no saliency cache in {cache_dir}: compute it with "
            f"`frankensplit saliency --teacher NAME --data DIR --out {cache_dir}`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path} is not a {CACHE_FORMAT} manifest")
    return manifest


def _write_manifest(cache_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = cache_dir / (_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, separators=(",", ":")))
    tmp.replace(cache_dir / _MANIFEST)  # atomic: a crash never leaves a half-written manifest


def _check_rows(cached: list[list[Any]], rows: list[list[Any]], where: str) -> None:
    """Refuse a dataset that is not (a prefix of) the cached one, naming the first difference."""
    if len(rows) > len(cached):
        raise ValueError(f"{where} holds maps for {len(cached)} images, the dataset has {len(rows)}")
    for i, (a, b) in enumerate(zip(cached, rows)):
        if list(a) != list(b):
            raise ValueError(
                f"{where} does not match the dataset (changed or reordered files): image {i} is "
                f"{a} in the cache, {b} in the dataset; recompute it with `frankensplit saliency`"
            )


@dataclass(frozen=True)
class CacheResult:
    """What :func:`build_cache` did.

    Attributes:
        cache_dir: the cache folder.
        status: "hit" (valid and complete, nothing computed), "resumed" or "computed".
        computed: maps computed by this call.
        total: maps in the cache.
    """

    cache_dir: Path
    status: str
    computed: int
    total: int


def _cache_key(
    dataset: ImageDataset, teacher: str, layers: TargetLayers, size: int
) -> dict[str, Any]:
    rows = file_rows(dataset.files)
    return {
        "format": CACHE_FORMAT, "teacher": teacher, "layers": list(layers.names),
        "layout": layers.layout, "size": size, "transform": repr(dataset.transform),
        "count": len(rows), "files_sha256": rows_sha256(rows), "files": rows,
    }


def _resume_from(cache_dir: Path, key: dict[str, Any], dtype: str) -> int:
    """Maps already done in a cache built with the same key (0 when it must start over)."""
    try:
        old = read_manifest(cache_dir)
    except ValueError:
        return 0
    same = all(old.get(k) == v for k, v in key.items() if k != "files")
    if not same or old.get("dtype") != dtype or not (cache_dir / _MAPS).is_file():
        return 0
    return int(old.get("done", 0))


def build_cache(
    model: nn.Module,
    dataset: ImageDataset,
    cache_dir: str | Path,
    teacher: str,
    *,
    batch_size: int = 16,
    workers: int = 0,
    dtype: str = "float16",
    size: int | None = None,
    layers: TargetLayers | None = None,
    flush_every: int = 64,
    progress: bool = False,
) -> CacheResult:
    """Compute (or reuse, or finish) the saliency maps of every image of ``dataset``.

    Args:
        model: the unsplit teacher classifier, in eval mode, on its device.
        dataset: the images, with the fixed view (``make_transform(data_config, "fixed")``): the
            maps must stay aligned with the crop the codec is trained on.
        cache_dir: the cache folder (created).
        teacher: the teacher's identity, recorded and part of the cache key (e.g. its timm name).
        batch_size: images per grad-cam pass.
        workers: DataLoader worker processes.
        dtype: "float16" (half the disk) or "float32".
        size: side of the maps (default ``MAP_SIZE``).
        layers: target layers (default: :func:`target_layers` of the model).
        flush_every: batches between progress records (an interrupted build resumes there).
        progress: show a progress bar.

    Raises:
        ValueError: bad dtype or batch size, or a dataset without the teacher's fixed view.
    """
    if dtype not in _DTYPES or batch_size < 1:
        raise ValueError(f"dtype must be one of {_DTYPES} and batch_size >= 1, got {dtype}, "
                         f"{batch_size}")
    fixed = make_transform(resolve_data_config(model), "fixed")
    if repr(dataset.transform) != repr(fixed):
        raise ValueError(f"saliency maps need the teacher's fixed view {fixed!r}, the dataset "
                         f"uses {dataset.transform!r}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _cache_key(dataset, teacher, layers or target_layers(model), size or MAP_SIZE)
    done, n = _resume_from(cache_dir, key, dtype), key["count"]
    if done >= n:
        return CacheResult(cache_dir, "hit", 0, n)
    manifest = {**key, "dtype": dtype, "done": done}
    _write_manifest(cache_dir, manifest)
    loader = DataLoader(Subset(dataset, range(done, n)), batch_size=batch_size, num_workers=workers)
    _fill(model, loader, cache_dir, manifest, flush_every, progress)
    return CacheResult(cache_dir, "resumed" if done else "computed", n - done, n)


def _fill(model: nn.Module, loader: DataLoader, cache_dir: Path, manifest: dict[str, Any],
          flush_every: int, progress: bool) -> None:
    """Compute the maps of ``loader``'s images into ``maps.npy`` rows, recording progress."""
    from tqdm.auto import tqdm

    n, size, dtype = manifest["count"], manifest["size"], manifest["dtype"]
    layers = TargetLayers(tuple(manifest["layers"]), manifest["layout"])
    maps = np.lib.format.open_memmap(cache_dir / _MAPS, mode="r+" if manifest["done"] else "w+",
                                     dtype=dtype, shape=(n, size, size))
    device = next(model.parameters()).device
    for i, (x, label, index) in enumerate(tqdm(loader, disable=not progress, desc="saliency")):
        s = saliency_maps(model, x.to(device), label, layers, size)  # (B, size, size)
        maps[int(index[0]) : int(index[-1]) + 1] = s.numpy().astype(dtype)
        manifest["done"] = int(index[-1]) + 1
        if (i + 1) % flush_every == 0 or manifest["done"] == n:
            maps.flush()  # rows first, then the record that counts them
            _write_manifest(cache_dir, manifest)


class SaliencyDataset(Dataset):
    """An :class:`ImageDataset` with its precomputed saliency maps: items ``(x, label, index, s)``.

    ``s`` is a float32 tensor (size, size) in [0, 1] aligned with ``x``.

    Args:
        image_dataset: the images; it must use the exact transform the maps were computed on (the
            fixed view) and be the cached file list or a prefix of it.
        cache_dir: the cache folder written by :func:`build_cache`.

    Raises:
        ValueError: missing or incomplete cache, another view, or other files.
    """

    def __init__(self, image_dataset: ImageDataset, cache_dir: str | Path) -> None:
        self.images = image_dataset
        self.cache_dir = Path(cache_dir)
        manifest = read_manifest(self.cache_dir)
        where = f"saliency cache {self.cache_dir}"
        if manifest.get("done") != manifest.get("count"):
            raise ValueError(f"{where} is incomplete ({manifest.get('done')}/"
                             f"{manifest.get('count')}): rerun `frankensplit saliency` to finish it")
        if repr(image_dataset.transform) != manifest["transform"]:
            raise ValueError(
                f"{where} was computed on another view; the dataset must use the fixed view "
                f"{manifest['transform']}, got {image_dataset.transform!r}"
            )
        rows = file_rows(image_dataset.files)
        if len(rows) != manifest["count"] or rows_sha256(rows) != manifest["files_sha256"]:
            _check_rows(manifest["files"], rows, where)
        self._maps: np.ndarray | None = None  # opened lazily: one memory map per worker process

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, torch.Tensor]:
        if self._maps is None:
            self._maps = np.load(self.cache_dir / _MAPS, mmap_mode="r")
        x, label, index = self.images[index]
        s = torch.from_numpy(np.asarray(self._maps[index], dtype=np.float32))  # (size, size)
        return x, label, index, s

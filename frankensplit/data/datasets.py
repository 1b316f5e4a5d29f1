"""Datasets: a folder of images, an ImageFolder tree, or a ``labels.csv`` (file,label,...).

Labels use the ILSVRC-2012 class index. Unlabelled images get label -1: head distillation needs no
labels, only the teacher.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from frankensplit.data.photos import load_image

__all__ = ["IMAGE_SUFFIXES", "ImageDataset", "find_images", "read_labels_csv"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def find_images(root: str | Path) -> list[Path]:
    """All image files under ``root``, recursively, sorted (stable order = stable caches)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_labels_csv(path: str | Path) -> tuple[list[Path], list[int]]:
    """Files and labels from a CSV with at least the columns ``file`` and ``label``.

    Files are relative to the CSV's folder.

    Raises:
        ValueError: missing file, missing columns or a non-integer label (with its line number).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"labels file not found: {path}")
    files: list[Path] = []
    labels: list[int] = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path} needs the columns 'file' and 'label', has {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                labels.append(int(row["label"]))
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: label {row['label']!r} is not an integer") from None
            files.append(path.parent / row["file"])
    return files, labels


def _wnid_labels(files: Sequence[Path], root: Path) -> list[int] | None:
    """Labels for an ImageFolder tree whose folder names are ImageNet wnids, else None."""
    from frankensplit.backbones import ImageNetInfo

    info = ImageNetInfo()
    wnids = {info.index_to_label_name(i): i for i in range(info.num_classes())}
    labels = [wnids.get(p.relative_to(root).parts[0]) if len(p.relative_to(root).parts) > 1 else None
              for p in files]
    return None if any(lbl is None for lbl in labels) else labels  # type: ignore[return-value]


class ImageDataset(Dataset):
    """Images with optional ILSVRC labels.

    Args:
        source: a folder (uses ``labels.csv`` inside it when present, wnid folder names otherwise,
            else unlabelled), a ``labels.csv`` file, or a list of folders (concatenated, unlabelled
            unless each is labelled).
        transform: PIL image -> tensor.
        limit: keep only the first ``limit`` images (after sorting), for quick runs.

    Items are ``(x, label, index)``; label is -1 when unknown.
    """

    def __init__(
        self,
        source: str | Path | Sequence[str | Path],
        transform: Callable[[Any], torch.Tensor],
        limit: int | None = None,
    ) -> None:
        sources = [source] if isinstance(source, (str, Path)) else list(source)
        if not sources:
            raise ValueError("no dataset source given")
        self.files: list[Path] = []
        self.labels: list[int] = []
        for src in sources:
            files, labels = self._resolve(Path(src))
            self.files += files
            self.labels += labels
        if limit is not None:
            self.files, self.labels = self.files[:limit], self.labels[:limit]
        if not self.files:
            raise ValueError(f"no images found in {', '.join(map(str, sources))}")
        self.transform = transform

    @staticmethod
    def _resolve(src: Path) -> tuple[list[Path], list[int]]:
        if src.is_file() and src.suffix.lower() == ".csv":
            return read_labels_csv(src)
        if src.is_dir() and (src / "labels.csv").is_file():
            return read_labels_csv(src / "labels.csv")
        files = find_images(src)
        labels = _wnid_labels(files, src) if files else None
        return files, labels if labels is not None else [-1] * len(files)

    @property
    def labelled(self) -> bool:
        """Whether every image has a label."""
        return all(lbl >= 0 for lbl in self.labels)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(load_image(self.files[index])), self.labels[index], index

"""Preprocessing derived from the backbone's timm config (STYLE.md rule 2: derive, don't copy).

Three views of an image, all ending at the teacher's input size:

- ``eval``: timm's eval transform (resize short side to size/crop_pct, center crop), normalised.
- ``train``: RandomResizedCrop + horizontal flip (stage 1 of the paper's recipe).
- ``fixed``: Resize(256, 256) -> CenterCrop(224), deterministic so precomputed saliency maps stay
  aligned with the crop (stage 2).
- ``patch``: the eval resize, then random square patches + flip. Objects keep the scale the teacher
  sees at test time while each step costs (patch/224)^2 of a full crop: how CPU-scale training
  stays affordable for the fully convolutional CNN codecs (learned image codecs train the same way).

``crop`` is the eval view *before* tensor conversion: the exact 224x224 RGB picture the teacher sees,
which the standard-codec baselines compress.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms as T

__all__ = [
    "crop_transform", "make_transform", "normalize_batch", "normalize_transform",
]

_INTERP = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


def _size_and_interp(data_config: dict[str, Any]) -> tuple[int, T.InterpolationMode]:
    size = int(data_config["input_size"][-1])
    interp = _INTERP.get(str(data_config.get("interpolation", "bicubic")), _INTERP["bicubic"])
    return size, interp


def crop_transform(
    data_config: dict[str, Any], view: str = "eval", patch_size: int = 128
) -> Callable[[Image.Image], Image.Image]:
    """PIL -> PIL crop at the teacher's input size (no normalisation).

    Args:
        data_config: timm data config of the backbone.
        view: "eval", "train", "fixed" or "patch" (random ``patch_size`` crops at the eval scale,
            for cheap CPU training of fully convolutional codecs; see module docstring).
        patch_size: side of the "patch" view.
    """
    size, interp = _size_and_interp(data_config)
    if view == "patch":
        resize = int(size / float(data_config.get("crop_pct", 0.875)))
        return T.Compose(
            [T.Resize(resize, interpolation=interp), T.RandomCrop(patch_size),
             T.RandomHorizontalFlip()]
        )
    if view == "eval":
        resize = int(size / float(data_config.get("crop_pct", 0.875)))
        return T.Compose([T.Resize(resize, interpolation=interp), T.CenterCrop(size)])
    if view == "train":
        return T.Compose(
            [T.RandomResizedCrop(size, interpolation=interp), T.RandomHorizontalFlip()]
        )
    if view == "fixed":
        resize = round(size * 256 / 224)
        return T.Compose([T.Resize((resize, resize), interpolation=interp), T.CenterCrop(size)])
    raise ValueError(f"unknown view {view!r}; expected 'eval', 'train', 'fixed' or 'patch'")


def normalize_transform(data_config: dict[str, Any]) -> Callable:
    """PIL crop -> normalised float tensor (3, H, W) with the backbone's mean/std."""
    return T.Compose(
        [T.ToTensor(), T.Normalize(mean=data_config["mean"], std=data_config["std"])]
    )


def normalize_batch(x: Tensor, data_config: dict[str, Any]) -> Tensor:
    """Images in [0, 1] (N, 3, H, W) -> the teacher's normalised input (its mean and std).

    What a learned image codec's reconstruction goes through before the teacher sees it.
    """
    mean = torch.tensor(data_config["mean"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(data_config["std"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def make_transform(
    data_config: dict[str, Any], view: str = "eval", patch_size: int = 128, normalize: bool = True
) -> Callable:
    """PIL image -> tensor (3, H, W) for ``view``: normalised with the teacher's mean and std, or
    (``normalize=False``) RGB in [0, 1], the input of learned image codecs."""
    last = normalize_transform(data_config) if normalize else T.ToTensor()
    return T.Compose([crop_transform(data_config, view, patch_size), last])

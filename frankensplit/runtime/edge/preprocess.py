"""Torch-free image preprocessing, numerically identical to the torchvision eval transform.

torchvision's ``Resize(n)`` on a PIL image computes the size as ``(n, int(n * long / short))`` and
calls ``PIL.Image.resize`` (always antialiased); ``CenterCrop`` pads with zeros when the image is
smaller, then crops at ``int(round((size - crop) / 2))``; ``ToTensor`` divides uint8 by 255 in
float32 and ``Normalize`` subtracts the mean and divides by the std in float32. Doing the same
steps with PIL and numpy gives the same float32 array bit for bit (``tests/test_runtime_client.py``
checks this on the fixture images), so the ONNX encoder sees exactly what g_a saw in torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from frankensplit.data.photos import load_image
from frankensplit.runtime.edge.bundle import Preprocess

__all__ = ["ImageInput", "preprocess"]

#: What the edge client accepts as an image: a path or an already-opened PIL image.
ImageInput = str | Path | Image.Image

_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def _resize_short_side(img: Image.Image, size: int, interpolation: str) -> Image.Image:
    width, height = img.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) == (width, height):
        return img
    return img.resize((new_w, new_h), _FILTERS[interpolation])


def _center_crop(img: Image.Image, crop: int) -> Image.Image:
    width, height = img.size
    if crop > width or crop > height:  # torchvision pads with zeros (black), centred
        left, top = max(crop - width, 0) // 2, max(crop - height, 0) // 2
        padded = Image.new("RGB", (max(width, crop), max(height, crop)))
        padded.paste(img, (left, top))
        img, (width, height) = padded, padded.size
        if (width, height) == (crop, crop):
            return img
    top = round((height - crop) / 2.0)  # round half to even, as torchvision's int(round(...))
    left = round((width - crop) / 2.0)
    return img.crop((left, top, left + crop, top + crop))


def preprocess(image: ImageInput, config: Preprocess) -> np.ndarray:
    """Image -> normalised float32 array x (3, crop, crop), as the model's eval transform
    (`FrankenSplit.data_config`: the teacher's at the model's input size).

    Args:
        image: a path or a PIL image (converted to RGB).
        config: the bundle's preprocessing.
    """
    img = _center_crop(_resize_short_side(load_image(image), config.resize, config.interpolation),
                       config.crop)
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255)  # (H, W, 3)
    x = x.transpose(2, 0, 1)  # (3, H, W)
    mean = np.asarray(config.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(config.std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)

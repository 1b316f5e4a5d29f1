"""Measuring standard codecs: real bytes, decoded images, PSNR and wall-clock time.

Rate is always the length of the codec's actual output (STYLE.md rule 6: honest rate); there is
no estimate to report for a standard codec. The evaluation feeds the decoded crops ``x_hat`` to the
unmodified teacher.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image

from frankensplit.codecs.base import ImageCodec

__all__ = ["Coded", "TimedCoded", "bpp", "encode_decode_timed", "measure", "psnr"]


class Coded(NamedTuple):
    """One image through a codec: ``num_bytes`` sent, ``x_hat`` decoded (RGB, original size)."""

    num_bytes: int
    x_hat: Image.Image


class TimedCoded(NamedTuple):
    """One timed round trip.

    Attributes:
        data: the codec's whole output.
        x_hat: the decoded RGB image.
        encode_s: encoder wall-clock seconds (best of the repeats).
        decode_s: decoder wall-clock seconds (best of the repeats).
    """

    data: bytes
    x_hat: Image.Image
    encode_s: float
    decode_s: float


def _round_trip(codec: ImageCodec, x: Image.Image, quality: float) -> tuple[bytes, Image.Image]:
    data = codec.encode(x, quality)
    x_hat = codec.decode(data)
    if x_hat.size != x.size or x_hat.mode != "RGB":
        # A contract breach inside a codec, not bad user input; still a ValueError naming it.
        raise ValueError(f"{codec.name} decoded {x_hat.mode} {x_hat.size}, expected RGB {x.size}")
    return data, x_hat


def measure(codec: ImageCodec, crops: Sequence[Image.Image], quality: float) -> list[Coded]:
    """Encode and decode every crop at one quality.

    Args:
        codec: a codec from :func:`~frankensplit.codecs.base.create_codec`.
        crops: RGB images, normally the teacher's eval crops (``crop_transform``).
        quality: one setting of ``codec.qualities`` (for JPEG XL a distance).

    Returns:
        One :class:`Coded` per crop, in order.

    Raises:
        ValueError: bad quality or image (from the codec), or a decoded image of the wrong size.
    """
    out = []
    for x in crops:
        data, x_hat = _round_trip(codec, x, quality)
        out.append(Coded(len(data), x_hat))
    return out


def encode_decode_timed(
    codec: ImageCodec, x: Image.Image, quality: float, repeats: int = 1
) -> TimedCoded:
    """Round-trip one image and time encoder and decoder separately.

    The best of ``repeats`` runs is kept: on a shared machine the minimum is the least disturbed
    estimate of what the code itself costs.

    Args:
        codec: the codec to time.
        x: RGB image.
        quality: the setting to time.
        repeats: runs per side, at least 1.

    Raises:
        ValueError: ``repeats`` < 1, or what the codec raises.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    enc_s = dec_s = math.inf
    data, x_hat = b"", x
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = codec.encode(x, quality)
        t1 = time.perf_counter()
        x_hat = codec.decode(data)
        t2 = time.perf_counter()
        enc_s, dec_s = min(enc_s, t1 - t0), min(dec_s, t2 - t1)
    if x_hat.size != x.size:
        raise ValueError(f"{codec.name} decoded size {x_hat.size}, expected {x.size}")
    return TimedCoded(data, x_hat, enc_s, dec_s)


def bpp(num_bytes: int, img: Image.Image) -> float:
    """Bits per pixel of ``num_bytes`` over ``img``'s area (1 bpp at 224x224 = 6,272 bytes)."""
    return 8.0 * num_bytes / (img.width * img.height)


def psnr(x: Image.Image, x_hat: Image.Image) -> float:
    """PSNR in dB between two 8-bit RGB images of equal size (``inf`` when identical).

    Raises:
        ValueError: sizes differ.
    """
    if x.size != x_hat.size:
        raise ValueError(f"psnr needs equal sizes, got {x.size} and {x_hat.size}")
    a = np.asarray(x.convert("RGB"), dtype=np.float64)
    b = np.asarray(x_hat.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)

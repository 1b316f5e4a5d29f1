"""JPEG XL through imagecodecs (libjxl).

For this codec the "quality" of the :class:`~frankensplit.codecs.base.ImageCodec` contract is the
**butteraugli distance**: about 1 is visually lossless, larger numbers mean *worse* images and
fewer bytes, and 0 is the finest lossy setting (not bit-exact lossless: the codec stays lossy).
The default sweep 12/8/5/3/2/1/0.5 is therefore decreasing, which keeps the contract's promise
that sweeps run from low to high quality (bytes grow along them). Distance rather than a 0-100
"quality" is what libjxl itself exposes and what ``shared/BASELINES.md`` reports.

The output is the bare JPEG XL codestream (no ISOBMFF container): that is the whole file libjxl
writes for a plain RGB image, so it is what would be sent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from frankensplit.codecs.base import (
    CODECS,
    CodecUnavailableError,
    check_data,
    check_image,
    check_quality,
)

__all__ = ["DEFAULT_DISTANCES", "JpegXLCodec", "jxl"]

#: Default sweep of butteraugli distances, low to high quality (so *decreasing*).
DEFAULT_DISTANCES: tuple[float, ...] = (12, 8, 5, 3, 2, 1, 0.5)

#: libjxl accepts distances in [0, 25]; beyond that it errors or clamps.
_DISTANCE_RANGE = (0.0, 25.0)


class JpegXLCodec:
    """Lossy JPEG XL (VarDCT) by libjxl.

    Args:
        effort: encoder effort 1 (fast) to 9 (slow); 7 is libjxl's default and the reference.
        qualities: default sweep of distances, low to high quality.
        threads: encoder/decoder threads. One by default so that timings describe a single edge
            core, like the other codecs.
    """

    name = "jxl"
    quality_range = _DISTANCE_RANGE

    def __init__(
        self,
        effort: int = 7,
        qualities: tuple[float, ...] = DEFAULT_DISTANCES,
        threads: int = 1,
    ) -> None:
        try:
            import imagecodecs
        except ImportError as e:  # pragma: no cover - imagecodecs is a core dependency
            raise CodecUnavailableError(
                "codec 'jxl' needs imagecodecs: pip install imagecodecs"
            ) from e
        if not imagecodecs.JPEGXL.available:
            raise CodecUnavailableError(
                "codec 'jxl' needs imagecodecs built with JPEG XL; pip install -U imagecodecs"
            )
        if isinstance(effort, bool) or not isinstance(effort, int) or not 1 <= effort <= 9:
            raise ValueError(f"jxl effort must be an integer in [1, 9], got {effort!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"jxl threads must be a positive integer, got {threads!r}")
        self._ic = imagecodecs
        self.effort = effort
        self.threads = threads
        self.qualities = tuple(qualities)
        if not self.qualities:
            raise ValueError("jxl: the default quality sweep is empty")
        for d in self.qualities:
            self._distance(d)

    def _distance(self, quality: object) -> float:
        return check_quality(self.name, quality, *self.quality_range)

    def encode(self, img: Image.Image, quality: float) -> bytes:
        """Compress ``img`` at butteraugli distance ``quality`` (lower = better, larger).

        Raises:
            TypeError: ``img`` is not a PIL image or ``quality`` not a number.
            ValueError: non-RGB image or distance outside [0, 25].
        """
        img = check_image(self.name, img)
        distance = self._distance(quality)
        x = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
        return bytes(
            self._ic.jpegxl_encode(
                x, effort=self.effort, distance=distance, numthreads=self.threads
            )
        )

    def decode(self, data: bytes) -> Image.Image:
        """Decompress a JPEG XL codestream (or container) to an RGB image.

        Raises:
            TypeError: ``data`` is not bytes-like.
            ValueError: empty, corrupt or truncated data, or an image that is not 8-bit.
        """
        data = check_data(self.name, data)
        try:
            x = self._ic.jpegxl_decode(data, numthreads=self.threads)
        except (ValueError, RuntimeError) as e:  # imagecodecs.JpegxlError is a RuntimeError
            raise ValueError(
                f"jxl cannot decode {len(data)} bytes (corrupt, truncated or not JPEG XL): {e}"
            ) from e
        if x.dtype != np.uint8:
            raise ValueError(f"jxl decoded a {x.dtype} image; only 8-bit images are supported")
        if x.ndim == 3 and x.shape[-1] == 1:
            x = x[..., 0]
        if not (x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (3, 4))):
            raise ValueError(f"jxl decoded an image of unexpected shape {x.shape}")
        # (H, W) -> L, (H, W, 3) -> RGB, (H, W, 4) -> RGBA; all returned as RGB.
        return Image.fromarray(np.ascontiguousarray(x)).convert("RGB")

    def __repr__(self) -> str:
        return f"JpegXLCodec(effort={self.effort}, threads={self.threads})"


@CODECS.register("jxl")
def jxl(**kwargs: Any) -> JpegXLCodec:
    """JPEG XL at effort 7 swept over distance 12/8/5/3/2/1/0.5 (see the module docstring).

    Args:
        **kwargs: :class:`JpegXLCodec` arguments (``effort``, ``qualities``, ``threads``).
    """
    return JpegXLCodec(**kwargs)

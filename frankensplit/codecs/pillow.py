"""JPEG, WebP, AVIF (and optionally HEVC-intra) through Pillow.

One class, :class:`PillowCodec`, drives any Pillow format: the codecs differ only in the format
name and the save options, so each is a registered factory returning a configured instance
(variants are arguments, as in timm). The settings follow the reference curves in
``shared/BASELINES.md``: JPEG at libjpeg-turbo's default 4:2:0 subsampling, WebP at method 4,
AVIF at speed 6, all swept over quality 5/10/20/30/50/70/90.

HEVC-intra (a HEIC file) comes from ``pillow-heif``, which is GPL-licensed and therefore not a
dependency: the factory is registered everywhere and only imports the package when called.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import Any

from PIL import Image, UnidentifiedImageError, features

from frankensplit.codecs.base import (
    CODECS,
    CodecUnavailableError,
    check_data,
    check_image,
    check_quality,
)

__all__ = ["DEFAULT_QUALITIES", "PillowCodec", "avif", "hevc", "jpeg", "webp"]

#: The quality sweep shared by the Pillow codecs, low to high.
DEFAULT_QUALITIES: tuple[float, ...] = (5, 10, 20, 30, 50, 70, 90)

# Everything Pillow raises for data it cannot decode: unknown format, truncated stream, bad header,
# absurd dimensions. Wrapped in one ValueError so callers need not know Pillow's zoo.
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    EOFError,
    ValueError,
    Image.DecompressionBombError,
)


class PillowCodec:
    """A standard codec implemented by a Pillow image plugin.

    Args:
        name: registry name, used in messages.
        fmt: Pillow format name ("JPEG", "WEBP", "AVIF", "HEIF"). Decoding only accepts this format,
            so bytes of another codec are an error rather than a silently different measurement.
        save_options: fixed keyword arguments for ``Image.save`` (method, speed, ...).
        qualities: default sweep, low to high quality.
        quality_range: inclusive range of ``quality``.
        integral_quality: the plugin only takes whole-number qualities.
        prepare: called before each encode/decode (e.g. to register a third-party plugin).
    """

    def __init__(
        self,
        name: str,
        fmt: str,
        save_options: dict[str, Any] | None = None,
        qualities: tuple[float, ...] = DEFAULT_QUALITIES,
        quality_range: tuple[float, float] = (0, 100),
        integral_quality: bool = True,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.format = fmt
        self.save_options = dict(save_options or {})
        if "quality" in self.save_options:
            raise ValueError(f"{name}: pass quality to encode(), not as a save option")
        if not qualities:
            raise ValueError(f"{name}: the default quality sweep is empty")
        self.qualities = tuple(qualities)
        self.quality_range = quality_range
        self.integral_quality = integral_quality
        self._prepare = prepare
        for q in self.qualities:
            self._quality(q)

    def _quality(self, quality: object) -> float:
        lo, hi = self.quality_range
        return check_quality(self.name, quality, lo, hi, integral=self.integral_quality)

    def encode(self, img: Image.Image, quality: float) -> bytes:
        """Compress ``img`` at ``quality``; returns the whole file Pillow writes.

        Raises:
            TypeError: ``img`` is not a PIL image or ``quality`` not a number.
            ValueError: non-RGB image or quality out of range / not whole.
        """
        img = check_image(self.name, img)
        q = self._quality(quality)
        if self._prepare is not None:
            self._prepare()
        buf = io.BytesIO()
        img.save(
            buf, self.format, quality=int(q) if self.integral_quality else q, **self.save_options
        )
        return buf.getvalue()

    def decode(self, data: bytes) -> Image.Image:
        """Decompress ``data`` (output of :meth:`encode`) to an RGB image.

        Raises:
            TypeError: ``data`` is not bytes-like.
            ValueError: empty, corrupt, truncated or not this codec's format.
        """
        data = check_data(self.name, data)
        if self._prepare is not None:
            self._prepare()
        try:
            with Image.open(io.BytesIO(data), formats=[self.format]) as img:
                img.load()
                return img.convert("RGB")
        except _DECODE_ERRORS as e:
            raise ValueError(
                f"{self.name} cannot decode {len(data)} bytes (corrupt, truncated or not "
                f"{self.format}): {e}"
            ) from e

    def __repr__(self) -> str:
        return f"PillowCodec(name={self.name!r}, format={self.format!r}, {self.save_options})"


def _require_feature(feature: str, codec: str) -> None:
    if not features.check(feature):
        raise CodecUnavailableError(
            f"codec {codec!r} needs Pillow built with {feature.upper()} support "
            "(Pillow >= 11.3 wheels include it); upgrade with pip install -U pillow"
        )


@CODECS.register("jpeg")
def jpeg(qualities: tuple[float, ...] = DEFAULT_QUALITIES, **save_options: Any) -> PillowCodec:
    """Baseline JPEG by libjpeg-turbo, default (4:2:0) subsampling, no optimisation pass.

    Args:
        qualities: default sweep.
        **save_options: extra Pillow JPEG options (``subsampling``, ``optimize``, ...).
    """
    return PillowCodec("jpeg", "JPEG", save_options, qualities)


@CODECS.register("webp")
def webp(
    qualities: tuple[float, ...] = DEFAULT_QUALITIES, method: int = 4, **save_options: Any
) -> PillowCodec:
    """Lossy WebP (VP8 intra) by libwebp.

    Args:
        qualities: default sweep; libwebp takes fractional qualities too.
        method: effort 0 (fast) to 6 (slow); 4 is libwebp's default and the reference setting.
        **save_options: extra Pillow WebP options.
    """
    _require_feature("webp", "webp")
    if isinstance(method, bool) or not isinstance(method, int) or not 0 <= method <= 6:
        raise ValueError(f"webp method must be an integer in [0, 6], got {method!r}")
    options = {"method": method, "lossless": False, **save_options}
    return PillowCodec("webp", "WEBP", options, qualities, integral_quality=False)


@CODECS.register("avif")
def avif(
    qualities: tuple[float, ...] = DEFAULT_QUALITIES,
    speed: int = 6,
    max_threads: int = 2,
    **save_options: Any,
) -> PillowCodec:
    """AVIF (AV1 intra) through Pillow's built-in plugin (libavif).

    Args:
        qualities: default sweep.
        speed: encoder speed 0 (slow) to 10 (fast); 6 is Pillow's default and the reference setting.
        max_threads: encoder threads. libaom writes one bitstream single-threaded and another
            (0.5-1% smaller) with row multi-threading, identical for any count >= 2. Pillow's
            default (all CPUs) is multi-threaded and so is the reference curve; 2 keeps those
            bytes on every machine while bounding the threads in timings. Pass 1 to time a
            strictly single-core encoder (slightly larger files).
        **save_options: extra Pillow AVIF options (``subsampling``, ...).

    Raises:
        CodecUnavailableError: this Pillow has no AVIF support.
    """
    _require_feature("avif", "avif")
    if isinstance(speed, bool) or not isinstance(speed, int) or not 0 <= speed <= 10:
        raise ValueError(f"avif speed must be an integer in [0, 10], got {speed!r}")
    if isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1:
        raise ValueError(f"avif max_threads must be a positive integer, got {max_threads!r}")
    options = {"speed": speed, "max_threads": max_threads, **save_options}
    return PillowCodec("avif", "AVIF", options, qualities)


@functools.cache
def _register_heif_opener() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()


@CODECS.register("hevc")
def hevc(qualities: tuple[float, ...] = DEFAULT_QUALITIES, **save_options: Any) -> PillowCodec:
    """HEVC-intra in a HEIC file (libheif + x265) through the optional ``pillow-heif`` plugin.

    ``pillow-heif`` is GPL-licensed, so it is not part of the default install.

    Args:
        qualities: default sweep.
        **save_options: extra pillow-heif save options (``chroma``, ``enc_params``, ...).

    Raises:
        CodecUnavailableError: ``pillow-heif`` is not installed; the message says how to add it.
    """
    try:
        import pillow_heif  # noqa: F401 - availability check; the plugin is registered lazily
    except ImportError as e:
        raise CodecUnavailableError(
            "codec 'hevc' needs the optional package pillow-heif (GPL): pip install pillow-heif"
        ) from e
    return PillowCodec("hevc", "HEIF", save_options, qualities, prepare=_register_heif_opener)

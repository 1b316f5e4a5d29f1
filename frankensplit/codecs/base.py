"""The standard-codec contract, the codec registry and the checks every codec shares.

A standard codec is the baseline FrankenSplit is compared against: the edge device compresses the
very 224x224 crop the teacher would see, sends the codec's whole output (container included, since
that is what crosses the link), and the server decodes it and runs the unmodified teacher::

    x (PIL RGB crop) --encode(quality)--> bytes --decode--> x_hat (PIL RGB, same size) --> teacher

Codecs are created by name, like timm models: ``create_codec("webp", method=6)``; a variant is an
argument, not a subclass. Every factory is registered even when its library is missing, so that
``CODECS.names()`` is the same on every machine; :func:`create_codec` then raises
:class:`CodecUnavailableError` naming what to install.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from frankensplit import bitstream
from frankensplit.registry import Registry

__all__ = [
    "CODECS",
    "DEFAULT_CODECS",
    "CodecUnavailableError",
    "EstimatesBits",
    "ImageCodec",
    "available_codecs",
    "check_data",
    "check_image",
    "check_quality",
    "create_codec",
    "parse_codecs",
    "parse_qualities",
    "unpack_packet",
]

#: The standard codecs compared by default (those of shared/BASELINES.md).
DEFAULT_CODECS = ("jpeg", "webp", "avif", "jxl")


@runtime_checkable
class ImageCodec(Protocol):
    """What every standard codec offers.

    Attributes:
        name: registry name ("jpeg", "webp", "avif", "jxl", ...).
        qualities: the default sweep, ordered from low to high quality (so bytes grow along it).
            For most codecs it is the encoder's quality setting; for JPEG XL it is the butteraugli
            distance, where lower means better, so that sweep is decreasing.
        quality_range: the inclusive range :meth:`encode` accepts for ``quality``.
    """

    name: str
    qualities: tuple[float, ...]
    quality_range: tuple[float, float]

    def encode(self, img: Image.Image, quality: float) -> bytes:
        """Compress an RGB image; returns the codec's whole output, container included."""
        ...

    def decode(self, data: bytes) -> Image.Image:
        """Decompress bytes from :meth:`encode` to an RGB image of the original size."""
        ...


@runtime_checkable
class EstimatesBits(Protocol):
    """A learned codec that also reports its latent's information content (``bits_estimated``
    beside the real bytes in the results): ours and CompressAI's published models."""

    def estimated_bits(self, img: Image.Image, quality: float) -> float:
        """``-sum(log2 likelihoods)`` of the image's latents at ``quality``."""
        ...


class CodecUnavailableError(ValueError):
    """A registered codec whose library (or library feature) is missing on this machine.

    A ``ValueError`` so that the CLI reports it as one line like any other bad choice; its own
    type lets callers (tests, sweeps) skip such a codec deliberately rather than by message.
    """


#: name -> factory returning an :class:`ImageCodec`; keyword arguments select a variant.
CODECS: Registry[Callable[..., ImageCodec]] = Registry("codec")


def create_codec(name: str, **kwargs: Any) -> ImageCodec:
    """Create the codec registered as ``name``.

    Args:
        name: one of ``CODECS.names()``, or ``NAME:SOURCE`` for a codec that takes a source (the
            learned codecs: their trained weights, ``bmshj2018-factorized:runs/balle_cpu``); the
            source is passed as the factory's ``source`` argument.
        **kwargs: variant settings forwarded to the codec (e.g. ``method`` for WebP).

    Raises:
        ValueError: unknown name (the message lists the known ones), a source for a codec that
            takes none, or bad settings.
        CodecUnavailableError: the codec's library (or, for a learned codec, its weights) is not
            available; the message names it.
    """
    base, sep, source = name.partition(":")
    factory = CODECS.get(base)
    if not sep:
        return factory(**kwargs)
    if "source" not in inspect.signature(factory).parameters:
        raise ValueError(f"codec {base!r} takes no ':SOURCE' argument, got {name!r}")
    if not source:
        raise ValueError(f"codec {name!r}: empty source after ':'")
    return factory(source=source, **kwargs)


def available_codecs() -> list[str]:
    """Names of the registered codecs that can be created on this machine, sorted."""
    names = []
    for name in CODECS.names():
        try:
            create_codec(name)
        except CodecUnavailableError:
            continue
        names.append(name)
    return names


def parse_codecs(text: str | None) -> tuple[list[str], list[str]]:
    """Codec names from ``--codecs``.

    Returns:
        (codecs to use, default codecs skipped because their library is missing here). Only the
        default list skips; a codec named explicitly must be available.

    Raises:
        ValueError: an unknown or (explicitly named) unavailable codec.
    """
    if text is not None:
        names = [c.strip() for c in text.split(",") if c.strip()]
        if names == ["none"]:
            return [], []
        for name in names:
            create_codec(name)
        return names, []
    use, skipped = [], []
    for name in DEFAULT_CODECS:
        try:
            create_codec(name)
            use.append(name)
        except CodecUnavailableError:
            skipped.append(name)
    return use, skipped


def _numbers(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"qualities {what} must be numbers separated by commas, got {text!r}"
        ) from None
    if not values:
        raise ValueError(f"qualities {what} are empty")
    return values


def parse_qualities(specs: Sequence[str], codecs: Sequence[str]) -> dict[str, tuple | None]:
    """``{codec: qualities or None}`` from ``--qualities`` values.

    Args:
        specs: each ``"Q1,Q2"`` (every codec) or ``"codec=Q1,Q2"`` (that codec; wins over the
            former). A codec given as ``NAME:SOURCE`` may be named by ``NAME`` alone.
        codecs: the codecs of the run.

    Raises:
        ValueError: a spec for a codec not in the run, or values that are not numbers.
    """
    out: dict[str, tuple | None] = {c: None for c in codecs}
    specific: dict[str, tuple] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep:
            out = {c: _numbers(spec, "for every codec") for c in codecs}
            continue
        name = name.strip()
        if name not in out:  # NAME for a NAME:SOURCE codec
            name = next((c for c in codecs if c.partition(":")[0] == name), name)
        if name not in out:
            raise ValueError(f"--qualities names codec {name!r}, not among {list(codecs)}")
        specific[name] = _numbers(values, f"of {name}")
    return {**out, **specific}


def check_quality(
    codec: str, quality: object, low: float, high: float, *, integral: bool = False
) -> float:
    """Validate a quality setting before it reaches a C library that may clamp it silently.

    Args:
        codec: codec name for the message.
        quality: the value to check (a real number, not a bool).
        low: smallest accepted value.
        high: largest accepted value.
        integral: the encoder only takes whole numbers; 50.0 passes, 50.5 does not (rounding it
            would report a point that was never measured).

    Returns:
        The quality as a float.

    Raises:
        TypeError: not a real number.
        ValueError: NaN, out of range, or not whole where ``integral`` is required.
    """
    if isinstance(quality, bool) or not isinstance(quality, Real):
        raise TypeError(f"{codec} quality must be a number, got {type(quality).__name__}")
    q = float(quality)
    if math.isnan(q) or not low <= q <= high:
        raise ValueError(f"{codec} quality {quality!r} is out of range [{low:g}, {high:g}]")
    if integral and not q.is_integer():
        raise ValueError(f"{codec} quality must be a whole number, got {quality!r}")
    return q


def check_image(codec: str, img: object) -> Image.Image:
    """Require a non-empty RGB PIL image.

    Other modes are refused rather than converted: silently dropping alpha or widening grey would
    change what is being measured.

    Raises:
        TypeError: not a PIL image.
        ValueError: not RGB, or zero-sized.
    """
    if not isinstance(img, Image.Image):
        raise TypeError(f"{codec} encode needs a PIL image, got {type(img).__name__}")
    if img.mode != "RGB":
        raise ValueError(
            f"{codec} encode needs an RGB image, got mode {img.mode!r}; use img.convert('RGB')"
        )
    if img.width < 1 or img.height < 1:
        raise ValueError(f"{codec} encode got an empty image of size {img.size}")
    return img


def check_data(codec: str, data: object) -> bytes:
    """Require non-empty bytes-like input for ``decode``.

    Raises:
        TypeError: not bytes, bytearray or memoryview.
        ValueError: empty.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{codec} decode needs bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ValueError(f"{codec} decode got empty data")
    return data


def unpack_packet(codec: str, data: object, limits: bitstream.Limits) -> bitstream.Packet:
    """A learned codec's ``decode`` input as a packet (`check_data`, then `bitstream.unpack`).

    Raises:
        TypeError: not bytes-like. ValueError: empty or not a valid packet within ``limits``.
    """
    try:
        return bitstream.unpack(check_data(codec, data), limits)
    except bitstream.BitstreamError as e:
        raise ValueError(f"{codec} decode: {e}") from e

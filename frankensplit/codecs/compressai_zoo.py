"""CompressAI's published pretrained image codecs behind the standard-codec interface.

``create_codec("compressai-ARCH:PATH")`` loads the MSE-optimised checkpoints that CompressAI
publishes (``compressai.zoo``) from files the user downloaded, into compressai's own model classes,
and codes for real with their ``compress`` / ``decompress``. These are the learned image codec
baselines with their authors' training budget; ``bmshj2018-factorized:SOURCE``
(:mod:`frankensplit.codecs.learned`) is ours, trained on CPU for a few thousand steps.

ARCH is one of :data:`ARCHITECTURES`: ``bmshj2018-factorized`` (Balle et al. 2018, factorized
prior), ``bmshj2018-hyperprior`` (Balle et al. 2018, scale hyperprior), ``mbt2018-mean`` (Minnen et
al. 2018, mean-scale hyperprior without context model) and ``cheng2020-anchor`` (Cheng et al. 2020,
with the autoregressive context model: slow, about 2-3 s of CPU per 224x224 decode).
PATH is one published checkpoint file, or a folder: every published MSE checkpoint of ARCH found in
it is loaded (e.g. torch hub's cache ``$TORCH_HOME/hub/checkpoints``, where
``compressai.zoo.bmshj2018_hyperprior(3, pretrained=True)`` downloads to).

The sweep value ("quality") is CompressAI's quality index (1..8; 1..6 for cheng2020-anchor), read
from each file's published name, e.g. ``bmshj2018-hyperprior-3-6d87be32.pth.tar`` is quality 3.
Every file is verified before it is unpickled: its name must be the published name of ARCH at that
quality (the table in ``compressai.zoo``), and its sha256 must begin with the hex digits that name
carries; a wrong, renamed, truncated or corrupt file gets one ValueError naming the file, what was
expected and the URL to download it from. Loading is compressai.zoo's own path: the zoo's key
renaming, ``Model.from_state_dict``, then ``update()`` (which keeps the CDF tables stored in the
checkpoint and builds them only where missing).

The codec compresses the exact crop the teacher sees, padded with zeros, centred, to a multiple of
64 px (compressai's ``eval_model``); the server decodes and crops back, and the unmodified teacher
classifies the picture (clamped to [0, 1] by compressai, rounded to 8 bits). Wire format, every byte
of which counts in the rate: one :mod:`frankensplit.bitstream` packet per image (model id
``ARCH-qQ``, shape ``(C, h, w)`` = the entropy bottleneck's channels and the ``shape`` that
``compress`` returns, CRC-32; 15 bytes + the id + a 1-5 byte length field: 32-40 bytes for these
ids and 128 B - 16 KiB payloads) whose payload is ``pad_h, pad_w`` (one byte each, the padding's
total per axis), the byte lengths of every compressai string but the last (unsigned LEB128), then
the strings in compressai's order.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from frankensplit import bitstream
from frankensplit.codecs.base import (
    CODECS,
    CodecUnavailableError,
    check_image,
    check_quality,
    unpack_packet,
)

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "ARCHITECTURES",
    "LABELS",
    "METRIC",
    "PublishedArchitecture",
    "PublishedImageCodec",
    "compressai_codec",
    "load_published",
]

#: The metric of the published checkpoints this codec loads (compressai.zoo also has "ms-ssim").
METRIC = "mse"
#: compressai's padding: every image is coded at a multiple of 64 px (6 stride-2 stages).
_MIN_DIV = 64
#: A published checkpoint's file name: ``<stem>-<quality>-<first hex digits of its sha256>.pth.tar``.
_NAME = re.compile(r"(?P<stem>.+)-(?P<quality>\d+)-(?P<sha>[0-9a-f]{8,64})\.pth\.tar")


@dataclass(frozen=True)
class PublishedArchitecture:
    """One compressai.zoo architecture this codec loads.

    Attributes:
        name: compressai.zoo's name ("bmshj2018-hyperprior"); the codec is ``compressai-<name>``.
        label: display name in results ("..., CompressAI weights").
        stride: pixels per element of the ``shape`` its ``compress`` returns (16: the latent y of
            the factorized prior; 64: the hyper-latent z).
        streams: number of strings its ``compress`` returns per image (y; or y and z).
    """

    name: str
    label: str
    stride: int
    streams: int

    @property
    def codec(self) -> str:
        """The codec's registry name and ``method`` in results: ``compressai-<name>``."""
        return f"compressai-{self.name}"


#: zoo name -> architecture, for every codec registered here.
ARCHITECTURES: dict[str, PublishedArchitecture] = {a.name: a for a in (
    PublishedArchitecture("bmshj2018-factorized",
                          "Balle 2018 factorized (MSE, CompressAI weights)", 16, 1),
    PublishedArchitecture("bmshj2018-hyperprior",
                          "Balle 2018 hyperprior (MSE, CompressAI weights)", 64, 2),
    PublishedArchitecture("mbt2018-mean", "Minnen 2018 mean-scale (MSE, CompressAI weights)", 64, 2),
    PublishedArchitecture("cheng2020-anchor", "Cheng 2020 anchor (MSE, CompressAI weights)", 64, 2),
)}
#: codec name ("compressai-<zoo name>") -> display name in results.
LABELS: dict[str, str] = {a.codec: a.label for a in ARCHITECTURES.values()}


def _file_name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _published_as(file_name: str) -> tuple[str, str, int] | None:
    """(zoo name, metric, quality) of the checkpoint compressai.zoo publishes as ``file_name``."""
    from frankensplit._compressai import ZOO_URLS

    for arch, metrics in ZOO_URLS.items():
        for metric, urls in metrics.items():
            for quality, url in urls.items():
                if _file_name(url) == file_name:
                    return arch, metric, quality
    return None


def _wrong_name(path: Path, arch: str, urls: Mapping[int, str]) -> ValueError:
    found = _published_as(path.name)
    if found is not None:
        other, metric, quality = found
        use = (f"use {ARCHITECTURES[other].codec}:{path}"
               if other in ARCHITECTURES and metric == METRIC
               else "this codec loads only the architectures "
                    f"{sorted(ARCHITECTURES)} optimised for {METRIC}")
        return ValueError(f"{path} is CompressAI's {other} ({metric}) checkpoint at quality "
                          f"{quality}, not {arch} ({METRIC}); {use}")
    example = next(iter(urls.values()))
    return ValueError(
        f"{path}: not the published name of a CompressAI {arch} ({METRIC}) checkpoint; expected "
        f"one of {[_file_name(u) for u in urls.values()]} (the name carries the start of the "
        f"file's sha256, so keep it as downloaded), e.g. {example}")


def load_published(
    path: str | Path, arch: str, urls: Mapping[int, str] | None = None
) -> tuple[int, Any]:
    """(quality, model) of one published CompressAI checkpoint, checksum-verified.

    Args:
        path: the downloaded file, under its published name.
        arch: a name of :data:`ARCHITECTURES`.
        urls: quality -> the published URL of each checkpoint of ``arch``; default compressai.zoo's
            table for ``arch`` and :data:`METRIC` (tests and mirrors pass their own).

    Returns:
        The quality index and the model (compressai's class, eval mode, CDF tables built).

    Raises:
        ValueError: an unknown ``arch``; a file that is missing, not named as published for
            ``arch``, whose sha256 does not begin with its name's digits, or that does not hold a
            state dict of ``arch``. The message names the file and the URL to get it from.
    """
    import torch

    from frankensplit._compressai import (
        ZOO_ARCHITECTURES,
        ZOO_URLS,
        load_pretrained_state_dict,
    )
    from frankensplit.files import file_sha256

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown CompressAI architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    urls = dict(ZOO_URLS[arch][METRIC] if urls is None else urls)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    by_name = {_file_name(url): (quality, url) for quality, url in urls.items()}
    if path.name not in by_name:
        raise _wrong_name(path, arch, urls)
    quality, url = by_name[path.name]
    expected = _NAME.fullmatch(path.name)
    sha = file_sha256(path)
    if expected is None or not sha.startswith(expected["sha"]):
        want = expected["sha"] if expected else "(none in the name)"
        raise ValueError(f"{path}: sha256 begins {sha[:8]}, but CompressAI's published {arch} "
                         f"quality {quality} begins {want}: the file is corrupt or incomplete; "
                         f"download it again from {url}")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        model = ZOO_ARCHITECTURES[arch].from_state_dict(load_pretrained_state_dict(state_dict))
    except Exception as e:  # unpickling and strict loading raise many types
        raise ValueError(f"{path} does not hold a CompressAI {arch} state dict ({e!r:.300}); the "
                         f"published file is {url}") from e
    model.eval()
    model.update()  # builds CDF tables only where the checkpoint has none
    return quality, model


def _files(source: Path, arch: str, urls: Mapping[int, str]) -> list[Path]:
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise ValueError(f"{source}: no such checkpoint file or folder")
    found = [source / _file_name(u) for _, u in sorted(urls.items())]
    found = [f for f in found if f.is_file()]
    if not found:
        raise ValueError(f"{source} holds none of CompressAI's {arch} ({METRIC}) checkpoints "
                         f"{[_file_name(u) for u in urls.values()]}; download them from "
                         f"{sorted(urls.values())}")
    return found


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(pos, min(pos + 5, len(data))):
        value |= (data[i] & 0x7F) << shift
        shift += 7
        if not data[i] & 0x80:
            return value, i + 1
    raise ValueError("string length field is truncated or longer than 5 bytes")


class PublishedImageCodec:
    """CompressAI's published models of one architecture, one per quality, as an image codec.

    Args:
        arch: the architecture (:data:`ARCHITECTURES`).
        models: quality index -> compressai model (eval mode, CDF tables built).

    Raises:
        ValueError: no model given.
    """

    def __init__(self, arch: PublishedArchitecture, models: Mapping[int, Any]) -> None:
        self.name = arch.codec
        if not models:
            raise ValueError(f"{self.name}: no model given")
        self.arch, self.label = arch, arch.label
        self.models = dict(sorted(models.items()))
        self.qualities = tuple(self.models)
        self.quality_range = (self.qualities[0], self.qualities[-1])
        self._ids = {q: f"{arch.name}-q{q}" for q in self.models}
        self._by_id = {model_id: q for q, model_id in self._ids.items()}
        channels = max(m.entropy_bottleneck.channels for m in self.models.values())
        # A forged header cannot make the decoder allocate more than for a 1024 x 1024 image.
        self.limits = bitstream.Limits(max_latent_elements=channels * (1024 // arch.stride) ** 2)

    def _quality(self, quality: float) -> int:
        q = int(check_quality(self.name, quality, *self.quality_range, integral=True))
        if q not in self.models:
            raise ValueError(f"{self.name} has no model for quality {quality!r}; loaded: "
                             f"{list(self.qualities)}")
        return q

    def _input(self, img: Image.Image) -> tuple[Tensor, int, int]:
        """(x (1, 3, H', W') in [0, 1], zero-padded, centred, to multiples of 64; pad_h, pad_w)."""
        import torch.nn.functional as F
        from torchvision.transforms.functional import to_tensor

        from frankensplit._compressai import compute_padding

        x = to_tensor(check_image(self.name, img))[None]  # (1, 3, H, W)
        pad, _ = compute_padding(x.shape[2], x.shape[3], min_div=_MIN_DIV)  # (l, r, t, b)
        x = F.pad(x, pad, mode="constant", value=0)  # (1, 3, H', W')
        return x, pad[2] + pad[3], pad[0] + pad[1]

    def encode(self, img: Image.Image, quality: float) -> bytes:
        """Compress an RGB image with the model of ``quality``; returns the whole packet."""
        import torch

        q = self._quality(quality)
        model = self.models[q]
        x, pad_h, pad_w = self._input(img)
        with torch.no_grad():
            coded = model.compress(x)
        strings = [s[0] for s in coded["strings"]]  # batch of one
        if len(strings) != self.arch.streams:
            raise ValueError(f"{self.name}: compress returned {len(strings)} strings, expected "
                             f"{self.arch.streams}")
        payload = (bytes([pad_h, pad_w]) + b"".join(_varint(len(s)) for s in strings[:-1])
                   + b"".join(strings))
        shape = (model.entropy_bottleneck.channels, *map(int, coded["shape"]))
        return bitstream.pack(bitstream.Packet(self._ids[q], shape, payload))

    def _strings(self, payload: bytes) -> tuple[int, int, list[bytes]]:
        """(pad_h, pad_w, compressai's strings) of a packet's payload."""
        if len(payload) < 2 + self.arch.streams - 1:
            raise ValueError(f"payload of {len(payload)} bytes is too short")
        pos, lengths = 2, []
        for _ in range(self.arch.streams - 1):
            length, pos = _read_varint(payload, pos)
            lengths.append(length)
        last = len(payload) - pos - sum(lengths)
        if last < 0:
            raise ValueError(f"string lengths {lengths} exceed the payload")
        strings = []
        for length in [*lengths, last]:
            strings.append(payload[pos : pos + length])
            pos += length
        return payload[0], payload[1], strings

    def decode(self, data: bytes) -> Image.Image:
        """Decompress a packet from :meth:`encode` into the RGB picture the teacher classifies."""
        packet = unpack_packet(self.name, data, self.limits)
        q = self._by_id.get(packet.model_id)
        channels, h, w = packet.shape
        if q is None or channels != self.models[q].entropy_bottleneck.channels:
            raise ValueError(f"{self.name} decode: packet for model {packet.model_id!r} with "
                             f"shape {packet.shape} does not fit models {sorted(self._by_id)}")
        s = self.arch.stride
        try:
            pad_h, pad_w, strings = self._strings(packet.payload)
            if (s * h) % _MIN_DIV or (s * w) % _MIN_DIV or pad_h >= _MIN_DIV or pad_w >= _MIN_DIV:
                raise ValueError(f"padding ({pad_h}, {pad_w}) and shape {packet.shape} do not "
                                 f"describe an image padded to a multiple of {_MIN_DIV} px")
            x_hat = self._decompress(q, strings, (h, w), (s * h - pad_h, s * w - pad_w))
        except (RuntimeError, ValueError, IndexError) as e:
            raise ValueError(f"{self.name} decode: {e}") from e
        pixels = (x_hat[0].permute(1, 2, 0) * 255).round().byte().numpy()  # (H, W, 3)
        return Image.fromarray(pixels, "RGB")

    def _decompress(
        self, q: int, strings: list[bytes], shape: tuple[int, int], size: tuple[int, int]
    ) -> Tensor:
        """x_hat (1, 3, H, W) in [0, 1] of an image of ``size`` (H, W)."""
        import torch
        import torch.nn.functional as F

        from frankensplit._compressai import compute_padding

        with torch.no_grad():
            x_hat = self.models[q].decompress([[s] for s in strings], shape)["x_hat"]  # (1,3,H',W')
        _, unpad = compute_padding(*size, min_div=_MIN_DIV)
        return F.pad(x_hat, unpad).clamp(0, 1)  # (1, 3, H, W)

    def estimated_bits(self, img: Image.Image, quality: float) -> float:
        """Information content of all latents, -sum(log2 p), for ``bpp_estimated``."""
        import torch

        model = self.models[self._quality(quality)]
        with torch.no_grad():
            likelihoods = model(self._input(img)[0])["likelihoods"]  # {"y": ..., "z": ...}
        return float(sum(-torch.log2(p).sum() for p in likelihoods.values()))

    def __repr__(self) -> str:
        return f"PublishedImageCodec({self.name!r}, qualities={list(self.qualities)})"


def compressai_codec(
    arch: str, source: str | Path | None = None, *, urls: Mapping[int, str] | None = None
) -> PublishedImageCodec:
    """The codec ``compressai-<arch>`` from the published checkpoints at ``source``.

    Args:
        arch: a name of :data:`ARCHITECTURES`.
        source: a published checkpoint file, or a folder with some (see the module docstring).
        urls: quality -> published URL, to verify against; default compressai.zoo's table.

    Raises:
        CodecUnavailableError: no ``source`` given (no weights ship with this project).
        ValueError: what :func:`load_published` raises, or a folder without any checkpoint.
    """
    from frankensplit._compressai import ZOO_URLS

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown CompressAI architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    table = dict(ZOO_URLS[arch][METRIC] if urls is None else urls)
    if source is None:
        raise CodecUnavailableError(
            f"codec {ARCHITECTURES[arch].codec!r} needs CompressAI's published weights: "
            f"{ARCHITECTURES[arch].codec}:PATH, a downloaded checkpoint or a folder of them, e.g. "
            f"{table[min(table)]}")
    models = dict(load_published(path, arch, table) for path in _files(Path(source), arch, table))
    return PublishedImageCodec(ARCHITECTURES[arch], models)


for _arch in ARCHITECTURES.values():
    CODECS.register(_arch.codec)(functools.partial(compressai_codec, _arch.name))

"""Learned image codecs behind the standard-codec interface (the Balle 2018 baseline).

``create_codec("bmshj2018-factorized:SOURCE")`` loads the factorized-prior image codec of Balle et
al. (ICLR 2018) trained by ``frankensplit train`` with ``objective: image`` (see
:mod:`frankensplit.models.image_codec`). SOURCE is one codec file (``.../best.safetensors``), a
training run folder, whose ``lmbda-*/best.safetensors`` are all loaded, or a folder of codec files.
Without SOURCE, the models shipped in ``frankensplit/zoo/bmshj2018/`` (trained by
``configs/balle_cpu.yaml`` and ``configs/balle_cpu_rates.yaml``) are used. The sweep value
("quality") is the lambda a model was trained with: each lambda is its own model, and a larger
lambda means more bytes and a better picture, so the sweep ascends like the other codecs'.

Like every codec it compresses the exact crop the teacher sees; the server decodes it and runs the
unmodified teacher on the reconstruction (clamped to [0, 1] and rounded to 8 bits, a picture).

Wire format, every byte of which counts in the rate: one :mod:`frankensplit.bitstream` packet per
image, the container FrankenSplit's latents travel in (magic, version, model id naming the lambda's
model, latent shape M x h x w, payload length, CRC-32; 15 bytes plus the id and a 1-5 byte length
field, e.g. 31 + 2 for a 16-character id and a 128 B - 16 KiB payload).
Its payload is one byte ``pad_h << 4 | pad_w`` (the image was padded right and bottom to a multiple
of 16 by edge replication; the decoder crops the padding off, so any image size round-trips)
followed by the rANS stream of the factorized prior.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

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

    from frankensplit.models.image_codec import Bmshj2018Factorized

__all__ = ["SHIPPED_DIR", "LearnedImageCodec", "bmshj2018_factorized", "load_image_codec"]

#: The shipped Balle 2018 models, one codec file per lambda (the default SOURCE).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "zoo" / "bmshj2018"


def load_image_codec(path: str | Path) -> tuple[float, Bmshj2018Factorized]:
    """(lambda, model) of a codec file written by ``frankensplit train`` (objective "image").

    Raises:
        ValueError: unreadable file, or one that is not a trained image codec.
    """
    from frankensplit.models.codec_file import codec_metadata, load_codec
    from frankensplit.models.image_codec import IMAGE_CODEC_NAME, Bmshj2018Factorized

    meta = codec_metadata(path)
    try:
        arch = json.loads(meta["architecture"])
        if arch["kind"] != "image_codec" or arch["name"] != IMAGE_CODEC_NAME:
            raise ValueError(f"{path} holds a {arch['kind']} {arch.get('name', '')!r} model, not "
                             f"a {IMAGE_CODEC_NAME} image codec")
        lmbda = float(meta["lmbda"])
        model = Bmshj2018Factorized(
            meta["model_id"], int(arch["hidden_channels"]), int(arch["latent_channels"])
        )
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not an image codec written by frankensplit train ({e!r})") from e
    load_codec(model, path)  # type: ignore[arg-type] - same g_a / entropy / g_s parts
    model.eval()
    model.update()  # no-op: the tables were saved with the codec
    return lmbda, model


def _files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        found = sorted(source.glob("lmbda-*/best.safetensors")) or sorted(source.glob("*.safetensors"))
        if found:
            return found
    raise ValueError(f"{source}: neither a codec file nor a folder with codec files "
                     "(*.safetensors, or a training run's lmbda-*/best.safetensors)")


class LearnedImageCodec:
    """Trained image-codec models, one per lambda, behind the :class:`ImageCodec` interface.

    Args:
        name: codec name (the method in evaluation results).
        models: lambda -> model (eval mode, CDF tables built).

    Raises:
        ValueError: no model, or two models with the same id.
    """

    def __init__(self, name: str, models: Mapping[float, Bmshj2018Factorized]) -> None:
        if not models:
            raise ValueError(f"{name}: no trained model given")
        self.name = name
        self.models = dict(sorted(models.items()))
        self._by_id = {m.model_id: m for m in self.models.values()}
        if len(self._by_id) != len(self.models):
            raise ValueError(f"{name}: model ids {[m.model_id for m in self.models.values()]} repeat")
        self.qualities = tuple(self.models)
        self.quality_range = (self.qualities[0], self.qualities[-1])
        latent = max(m.entropy.channels for m in self.models.values())
        # Latents of images up to 1024 x 1024: a forged header cannot make the decoder allocate more.
        self.limits = bitstream.Limits(max_latent_elements=latent * 64 * 64)

    def _model(self, quality: float) -> Bmshj2018Factorized:
        q = check_quality(self.name, quality, *self.quality_range)
        for lmbda, model in self.models.items():
            if math.isclose(q, lmbda, rel_tol=1e-9):
                return model
        raise ValueError(f"{self.name} has no model for lambda {quality!r}; trained lambdas: "
                         f"{list(self.qualities)}")

    def _input(self, img: Image.Image) -> tuple[Tensor, int, int]:
        """(x (1, 3, H', W') in [0, 1] padded to multiples of 16, pad_h, pad_w)."""
        import torch.nn.functional as F
        from torchvision.transforms.functional import to_tensor

        x = to_tensor(check_image(self.name, img))[None]  # (1, 3, H, W), like training
        pad_h, pad_w = -x.shape[2] % 16, -x.shape[3] % 16
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")  # (1, 3, H', W')
        return x, pad_h, pad_w

    def encode(self, img: Image.Image, quality: float) -> bytes:
        """Compress an RGB image with the model of lambda ``quality``; returns the whole packet."""
        model = self._model(quality)
        x, pad_h, pad_w = self._input(img)
        coded = model.compress(x)
        payload = bytes([pad_h << 4 | pad_w]) + coded["strings"][0]
        shape = (model.entropy.channels, *coded["shape"])
        return bitstream.pack(bitstream.Packet(model.model_id, shape, payload))

    def decode(self, data: bytes) -> Image.Image:
        """Decompress a packet from :meth:`encode` into the RGB picture the teacher classifies."""
        packet = unpack_packet(self.name, data, self.limits)
        model = self._by_id.get(packet.model_id)
        channels, h, w = packet.shape
        if model is None or channels != model.entropy.channels or not packet.payload:
            raise ValueError(f"{self.name} decode: packet for model {packet.model_id!r} with "
                             f"latent {packet.shape} does not fit models {sorted(self._by_id)}")
        pad_h, pad_w = packet.payload[0] >> 4, packet.payload[0] & 15
        try:
            x_hat = model.decompress([packet.payload[1:]], (h, w))["x_hat"]  # (1, 3, 16h, 16w)
        except (RuntimeError, ValueError, IndexError) as e:
            raise ValueError(f"{self.name} decode: entropy decoding failed: {e}") from e
        x_hat = x_hat[0, :, : 16 * h - pad_h, : 16 * w - pad_w].clamp(0, 1)  # (3, H, W)
        pixels = (x_hat.permute(1, 2, 0) * 255).round().byte().numpy()  # (H, W, 3)
        return Image.fromarray(pixels, "RGB")

    def estimated_bits(self, img: Image.Image, quality: float) -> float:
        """Information content of the latent, -sum(log2 p), for ``bpp_estimated``."""
        return float(self._model(quality).estimated_bits(self._input(img)[0])[0])


@CODECS.register("bmshj2018-factorized")
def bmshj2018_factorized(source: str | Path | None = None) -> LearnedImageCodec:
    """Balle et al. 2018 factorized prior trained for MSE, from ``source`` (see module docstring).

    Raises:
        CodecUnavailableError: no source given and no shipped models in :data:`SHIPPED_DIR`.
        ValueError: a source that holds no trained image codec, or repeated lambdas.
    """
    if source is None:
        if not any(SHIPPED_DIR.glob("*.safetensors")):
            raise CodecUnavailableError(
                "codec 'bmshj2018-factorized' needs trained weights: bmshj2018-factorized:PATH, a "
                "codec file or a run folder of `frankensplit train --config configs/balle_cpu.yaml`"
            )
        source = SHIPPED_DIR
    models: dict[float, Bmshj2018Factorized] = {}
    for path in _files(Path(source)):
        lmbda, model = load_image_codec(path)
        if lmbda in models:
            raise ValueError(f"{source}: lambda {lmbda:g} appears twice")
        models[lmbda] = model
    return LearnedImageCodec("bmshj2018-factorized", models)

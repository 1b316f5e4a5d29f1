"""A learned image codec baseline: Balle et al. 2018's factorized prior, trained for MSE.

J. Balle, D. Minnen, S. Singh, S. J. Hwang, N. Johnston, "Variational Image Compression with a Scale
Hyperprior", ICLR 2018: its factorized-prior model, CompressAI's ``bmshj2018-factorized`` (N = 128,
M = 192 for CompressAI's qualities 1-5). FrankenSplit compares against it as "compress the image,
let the server run the unmodified teacher on the reconstruction"::

    edge:    x (N,3,H,W) in [0,1] --g_a--> y (N,M,H/16,W/16) --round(y - median)--> rANS --> bytes
    server:  bytes --rANS--> y_hat --g_s--> x_hat (N,3,H,W) --clamp, 8 bits--> whole teacher

    g_a: conv5x5/2 3->N, GDN, conv5x5/2 N->N, GDN, conv5x5/2 N->N, GDN, conv5x5/2 N->M
    g_s: deconv5x5/2 M->N, IGDN, deconv5x5/2 N->N, IGDN, deconv5x5/2 N->N, IGDN, deconv5x5/2 N->3

The model is CompressAI's ``FactorizedPrior`` (through ``frankensplit._compressai``: its g_a, g_s,
entropy bottleneck, ``update`` and ``aux_loss``), with the bottleneck moved into
:class:`~frankensplit.models.entropy.FactorizedPrior`, the entropy model FrankenSplit codes with
(padded rANS decoding, one string per image), so both methods are measured with the same entropy
coder. It follows the codec contract (``forward``, ``compress``, ``decompress``, ``update``,
``aux_loss``) and names its parts ``g_a``, ``entropy``, ``g_s`` like the split models, so the
training loop, checkpoints and ``save_codec`` serve both. Training objective:
:func:`frankensplit.losses.image_rd_loss`.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
from torch import Tensor

from frankensplit import bitstream
from frankensplit._compressai import FactorizedPrior as CompressaiFactorizedPrior
from frankensplit.backbones import SplitBackbone
from frankensplit.models.entropy import FactorizedPrior

__all__ = ["IMAGE_CODEC_NAME", "Bmshj2018Factorized", "build_image_codec"]

#: Registry-style name of the architecture, recorded in saved files and used as the codec name.
IMAGE_CODEC_NAME = "bmshj2018-factorized"


class Bmshj2018Factorized(CompressaiFactorizedPrior):
    """Balle et al. 2018 factorized-prior image codec (see the module docstring).

    Args:
        model_id: stable id, written into every packet (one id per trained lambda).
        hidden_channels: N, channels of the hidden layers.
        latent_channels: M, channels of y.
        teacher: the classifier whose preprocessing it is trained with and whose accuracy on the
            reconstructions validates it (training only; never part of the codec's weights).

    Raises:
        ValueError: an invalid model id or non-positive channel counts.
    """

    #: Spatial stride of the latent: four stride-2 convolutions.
    reduction = 16

    def __init__(
        self,
        model_id: str,
        hidden_channels: int = 128,
        latent_channels: int = 192,
        teacher: SplitBackbone | None = None,
    ) -> None:
        bitstream.Packet(model_id, (1, 1, 1), b"")  # validates the id with the wire format's rules
        n, m = hidden_channels, latent_channels
        if n < 1 or m < 1:
            raise ValueError(f"hidden_channels and latent_channels must be positive, got {n}, {m}")
        super().__init__(n, m)  # compressai's entropy bottleneck, g_a and g_s
        self.model_id = model_id
        self.entropy = FactorizedPrior(m, self.entropy_bottleneck)  # moved: entropy.entropy_bottleneck
        del self.entropy_bottleneck
        self.teacher = teacher
        self.architecture: dict[str, Any] = {
            "kind": "image_codec", "name": IMAGE_CODEC_NAME, "hidden_channels": n,
            "latent_channels": m,
        }

    @property
    def data_config(self) -> dict[str, Any]:
        """Its preprocessing: the teacher's (timm's data config), as `FrankenSplit.data_config`.

        Raises:
            ValueError: a codec built without a teacher.
        """
        if self.teacher is None:
            raise ValueError(f"{self.model_id} has no teacher, whose preprocessing it would take")
        return dict(self.teacher.data_config)

    def _check(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % self.reduction or x.shape[3] % self.reduction:
            raise ValueError(f"expected images (N, 3, H, W) with H and W multiples of "
                             f"{self.reduction}, got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Training/analysis pass without entropy coding.

        Args:
            x: images in [0, 1], (N, 3, H, W), H and W multiples of 16.

        Returns:
            ``{"x_hat", "likelihoods": {"y"}}``: noisy latent in train mode, median-rounded in eval
            mode (what ``decompress(compress(x))`` gives).
        """
        self._check(x)
        y_hat, y_likelihoods = self.entropy(self.g_a(x))  # (N, M, H/16, W/16)
        return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_likelihoods}}  # x_hat (N, 3, H, W)

    @torch.no_grad()
    def compress(self, x: Tensor) -> dict[str, Any]:
        """Entropy-code images x in [0, 1] (N, 3, H, W): ``{"strings": [bytes] * N, "shape": (h, w)}``."""
        self._check(x)
        y = self.g_a(x)  # (N, M, H/16, W/16)
        return {"strings": self.entropy.compress(y), "shape": tuple(int(d) for d in y.shape[2:])}

    @torch.no_grad()
    def decompress(self, strings: list[bytes], shape: tuple[int, int]) -> dict[str, Tensor]:
        """Decode ``compress``'s strings: ``{"x_hat"}`` (N, 3, 16 h, 16 w), not clamped."""
        y_hat = self.entropy.decompress(strings, shape)  # (N, M, h, w)
        return {"x_hat": self.g_s(y_hat)}

    def train(self, mode: bool = True) -> Bmshj2018Factorized:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher never leaves eval mode
        return self

    def estimated_bits(self, x: Tensor) -> Tensor:
        """Estimated bits per image from the eval-mode likelihoods, (N,)."""
        self._check(x)
        with torch.no_grad():
            _, likelihoods = self.entropy(self.g_a(x))
        return -torch.log2(likelihoods).flatten(1).sum(1)


def build_image_codec(
    model_id: str,
    hidden_channels: int = 128,
    latent_channels: int = 192,
    teacher: SplitBackbone | None = None,
) -> Bmshj2018Factorized:
    """A Balle 2018 codec with weights seeded from the model id (like `Architecture.build`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(model_id.encode()))
        return Bmshj2018Factorized(model_id, hidden_channels, latent_channels, teacher)

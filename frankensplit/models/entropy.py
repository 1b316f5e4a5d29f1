"""Entropy models: latent y -> (y_hat, likelihoods) while training, y -> bytes -> y_hat when coding.

The main method uses a factorized prior (CompressAI ``EntropyBottleneck``): additive uniform noise in
training, rounding around the per-channel median at inference, and real rANS coding from fixed
quantized CDF tables. Fixed tables are what make decoding exact across devices: the edge and the
server read the same integer tables, so there is no floating-point hyperprior to disagree about.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from frankensplit._compressai import CompressionModel, EntropyBottleneck
from frankensplit.registry import Registry
from frankensplit.runtime.rans import pad_payload

__all__ = ["ENTROPY_MODELS", "FactorizedPrior", "NotUpdatedError"]

ENTROPY_MODELS: Registry = Registry("entropy model")


class NotUpdatedError(RuntimeError):
    """Entropy coding was asked for before ``update()`` built the CDF tables."""


class FactorizedPrior(CompressionModel):
    """Factorized-prior entropy model (Balle et al., ICLR 2018) behind the codec contract.

    ``forward(y) -> (y_hat, likelihoods)``, ``compress(y) -> list[bytes]`` (one string per batch item),
    ``decompress(strings, (H, W)) -> y_hat``; compressai's ``CompressionModel`` gives ``update()``
    (build the CDF tables, needed before coding), ``aux_loss()`` (the quantile loss, trained every
    step) and ``load_state_dict`` (sizes the empty CDF table buffers from the state dict first).

    Args:
        channels: latent channels.
        entropy_bottleneck: an existing bottleneck of ``channels`` to code with (compressai's
            image codec owns one); None: a new one.
    """

    def __init__(self, channels: int, entropy_bottleneck: EntropyBottleneck | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.entropy_bottleneck = (EntropyBottleneck(channels) if entropy_bottleneck is None
                                   else entropy_bottleneck)

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Noisy (train) or median-rounded (eval) latent and its likelihoods, both (N, C, H, W)."""
        return self.entropy_bottleneck(y)

    def quantize(self, y: Tensor) -> Tensor:
        """Eval-mode quantization: ``round(y - median) + median``, what ``decompress`` returns."""
        medians = self.medians().to(y).view(1, -1, 1, 1)
        return torch.round(y - medians) + medians

    def medians(self) -> Tensor:
        """Per-channel medians (C,), the quantization offsets the edge and server share.

        The middle column of the learned ``quantiles`` parameter, as compressai uses it.
        """
        return self.entropy_bottleneck.quantiles[:, 0, 1].detach()

    @property
    def ready(self) -> bool:
        """Whether the CDF tables exist (``update()`` was called or loaded)."""
        return self.entropy_bottleneck.quantized_cdf.numel() > 0

    def _check_ready(self) -> None:
        if not self.ready:
            raise NotUpdatedError("entropy model has no CDF tables: call update() before coding")

    def compress(self, y: Tensor) -> list[bytes]:
        """rANS-code each item of y (N, C, H, W) into its own byte string."""
        self._check_ready()
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(f"expected a latent (N, {self.channels}, H, W), got {tuple(y.shape)}")
        return self.entropy_bottleneck.compress(y)

    def decompress(self, strings: list[bytes], size: tuple[int, int]) -> Tensor:
        """Decode strings into y_hat (N, C, H, W) exactly equal to the eval-mode quantized latent.

        compressai's rANS decoder reads 32-bit words without bounds checks: it reads 8 bytes to
        start and at most one word per renormalisation, so a short or forged payload made it read
        past the buffer and crash the process (measured: payloads of 0-8 bytes, and 200 KB of 0xFF,
        segfaulted). Each payload is therefore zero-padded by more than the decoder can ever consume
        for this latent size (8 + 16 bytes per symbol, bypass-coded tails included); padding never
        changes what a valid stream decodes to, because the decoder stops after the last symbol.
        """
        self._check_ready()
        h, w = (int(v) for v in size)
        if h < 1 or w < 1:
            raise ValueError(f"latent size must be positive, got {tuple(size)}")
        symbols = self.channels * h * w  # one padding rule, shared with the edge/sandbox decoder
        return self.entropy_bottleneck.decompress([pad_payload(s, symbols) for s in strings], (h, w))

    def tables(self) -> dict[str, Tensor]:
        """The integer coding tables (quantized_cdf, cdf_length, offset) and the medians.

        These are all an external rANS coder needs to produce or read the same bytes (edge export).
        """
        self._check_ready()
        eb = self.entropy_bottleneck
        return {
            "quantized_cdf": eb.quantized_cdf.clone(),
            "cdf_length": eb.cdf_length.clone(),
            "offset": eb.offset.clone(),
            "medians": self.medians(),
        }


@ENTROPY_MODELS.register("factorized")
def factorized(channels: int) -> nn.Module:
    """Factorized prior (the paper's choice)."""
    return FactorizedPrior(channels)

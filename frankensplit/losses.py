"""Losses of the head-distilled rate-distortion objective (FRANKENSPLIT.md, "Training objective").

    L = sum w * ||h_hat - h||^2 + lmbda * sum(-log2 p(y_hat))       (+ aux quantile loss, separately)

with w = 1 (plain head distillation) or w = 1/2 (1 + s) (saliency-guided, s in [0, 1] per spatial
position). Sum reductions throughout: the rate term is total bits, not bpp, so lmbda has the paper's
meaning for a given batch size.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["head_distortion", "rate_bits", "rd_loss"]


def rate_bits(likelihoods: dict[str, Tensor]) -> Tensor:
    """Total information content in bits of all latents, ``sum(-log2 p)``."""
    return sum((-torch.log2(v)).sum() for v in likelihoods.values())  # type: ignore[return-value]


def head_distortion(h_hat: Tensor, h: Tensor, s: Tensor | None = None, layout: str = "NCHW") -> Tensor:
    """Summed squared error between decoded and teacher features, optionally saliency-weighted.

    Args:
        h_hat: decoded features, same shape as ``h``.
        h: teacher head features.
        s: saliency maps (N, H, W) in [0, 1] at the split's spatial size, or None.
        layout: "NCHW" or "NHWC", where the spatial axes of ``h`` are.
    """
    if h_hat.shape != h.shape:
        raise ValueError(f"h_hat {tuple(h_hat.shape)} and h {tuple(h.shape)} differ")
    err = (h_hat - h).pow(2)
    if s is None:
        return err.sum()
    if s.shape[0] != h.shape[0] or s.ndim != 3:
        raise ValueError(f"saliency must be (N, H, W) with N={h.shape[0]}, got {tuple(s.shape)}")
    w = 0.5 * (1.0 + s)  # non-salient positions weigh 0.5, the most salient 1.0
    w = w.unsqueeze(1) if layout == "NCHW" else w.unsqueeze(-1)  # broadcast over channels
    if w.shape[2:] != err.shape[2:] and layout == "NCHW" or layout == "NHWC" and w.shape[1:3] != err.shape[1:3]:
        raise ValueError(f"saliency {tuple(s.shape)} does not match features {tuple(h.shape)}")
    return (w * err).sum()


def rd_loss(
    h_hat: Tensor,
    h: Tensor,
    likelihoods: dict[str, Tensor],
    lmbda: float,
    s: Tensor | None = None,
    layout: str = "NCHW",
) -> dict[str, Tensor]:
    """The rate-distortion loss and its parts: ``{"loss", "distortion", "bits"}``."""
    distortion = head_distortion(h_hat, h, s, layout)
    bits = rate_bits(likelihoods)
    return {"loss": distortion + lmbda * bits, "distortion": distortion, "bits": bits}

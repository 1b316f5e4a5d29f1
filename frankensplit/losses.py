"""Losses of the head-distilled rate-distortion objective (FRANKENSPLIT.md, "Training objective").

    L = sum w * ||h_hat - h||^2 + lmbda * sum(-log2 p(y_hat))       (+ aux quantile loss, separately)

with w = 1 (plain head distillation) or w = 1/2 (1 + s) (saliency-guided, s in [0, 1] per spatial
position). Sum reductions throughout: the rate term is total bits, not bpp, so lmbda has the paper's
meaning for a given batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["head_distortion", "image_rd_loss", "rate_bits", "rd_loss"]


def rate_bits(likelihoods: dict[str, Tensor]) -> Tensor:
    """Total information content in bits of all latents, ``sum(-log2 p)``."""
    return sum((-torch.log2(v)).sum() for v in likelihoods.values())  # type: ignore[return-value]


def head_distortion(h_hat: Tensor, h: Tensor, s: Tensor | None = None, layout: str = "NCHW") -> Tensor:
    """Summed squared error between decoded and teacher features, optionally saliency-weighted.

    The weight 1/2 (1 + s) keeps every position in the objective (non-salient ones at half weight)
    while pulling the decoder's capacity towards what the teacher's decision depends on.

    Args:
        h_hat: decoded features, same shape as ``h``.
        h: teacher head features.
        s: saliency maps (N, H, W) in [0, 1] at the split's spatial size, or None.
        layout: "NCHW" or "NHWC", where the spatial axes of ``h`` are.

    Raises:
        ValueError: shapes that differ or do not fit the layout, or an unknown layout.
    """
    if h_hat.shape != h.shape:
        raise ValueError(f"h_hat {tuple(h_hat.shape)} and h {tuple(h.shape)} differ")
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    err = (h_hat - h).pow(2)
    if s is None:
        return err.sum()
    spatial = tuple(h.shape[2:] if layout == "NCHW" else h.shape[1:3])
    if h.ndim != 4 or s.ndim != 3 or s.shape[0] != h.shape[0] or tuple(s.shape[1:]) != spatial:
        raise ValueError(
            f"saliency must be (N, H, W) = ({h.shape[0]}, *{spatial}) for {layout} features "
            f"{tuple(h.shape)}, got {tuple(s.shape)}"
        )
    w = 0.5 * (1.0 + s)  # non-salient positions weigh 0.5, the most salient 1.0
    w = w.unsqueeze(1) if layout == "NCHW" else w.unsqueeze(-1)  # broadcast over channels
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


def image_rd_loss(
    x_hat: Tensor, x: Tensor, likelihoods: dict[str, Tensor], lmbda: float
) -> dict[str, Tensor]:
    """The learned image codec baseline's objective, exactly CompressAI's ``RateDistortionLoss``.

        L = bpp + lmbda * 255^2 * MSE(x_hat, x)

    with bpp = total bits / (N * H * W) and MSE the mean over pixels and channels of images in
    [0, 1] (Balle et al., ICLR 2018, as trained in CompressAI), so that lmbda has CompressAI's
    meaning: 0.0018 ... 0.0932 are its ``bmshj2018-factorized`` qualities 1 ... 7.

    Args:
        x_hat: reconstructions (N, 3, H, W).
        x: the images, in [0, 1].
        likelihoods: the latents' likelihoods.
        lmbda: rate-distortion weight (larger = better quality, more bits).

    Returns:
        ``{"loss", "distortion", "bits", "mse"}``: distortion is the per-image MSE summed over the
        batch (so per-image averages read as MSE), bits the batch's total.

    Raises:
        ValueError: shapes that differ or are not images.
    """
    if x_hat.shape != x.shape or x.ndim != 4:
        raise ValueError(f"x_hat {tuple(x_hat.shape)} and x {tuple(x.shape)} must be equal (N, C, H, W)")
    n, _, h, w = x.shape
    bits = rate_bits(likelihoods)
    mse = F.mse_loss(x_hat, x)
    loss = bits / (n * h * w) + lmbda * 255.0**2 * mse
    return {"loss": loss, "distortion": mse * n, "bits": bits, "mse": mse}

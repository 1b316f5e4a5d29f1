"""Losses of the head-distilled rate-distortion objective (FRANKENSPLIT.md, "Training objective").

    L = sum w * ||h_hat - h||^2 + lmbda * sum(-log2 p(y_hat))       (+ aux quantile loss, separately)

with w = 1 (plain head distillation) or w = 1/2 (1 + s) (saliency-guided, s in [0, 1] per spatial
position). Sum reductions throughout: the rate term is total bits, not bpp, so lmbda has the paper's
meaning for a given batch size.

Two options of ours, off by default (the paper has neither; see docs/training.md for the ablation
that decides whether the shipped models use them):

- per-channel weights ``c`` of the distortion, ``sum c_k w (h_hat - h)^2``: lite0's split features
  have channels whose energies differ by orders of magnitude, so a plain sum spends the decoder on
  the loudest few; :func:`channel_weights` makes every channel count by its own variance.
- output distillation through the frozen tail, ``kappa * numel(h_i) * KL(p_teacher || p_student)``
  per image (T = 1): the tail's decision on h_hat is pulled towards its decision on h, which the
  feature error only approximates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "channel_weights", "head_distortion", "image_rd_loss", "output_distillation", "rate_bits",
    "rd_loss",
]


def rate_bits(likelihoods: dict[str, Tensor]) -> Tensor:
    """Total information content in bits of all latents, ``sum(-log2 p)``."""
    return sum((-torch.log2(v)).sum() for v in likelihoods.values())  # type: ignore[return-value]


def head_distortion(
    h_hat: Tensor, h: Tensor, s: Tensor | None = None, layout: str = "NCHW",
    c: Tensor | None = None,
) -> Tensor:
    """Summed squared error between decoded and teacher features, optionally saliency-weighted.

    The weight 1/2 (1 + s) keeps every position in the objective (non-salient ones at half weight)
    while pulling the decoder's capacity towards what the teacher's decision depends on.

    Args:
        h_hat: decoded features, same shape as ``h``.
        h: teacher head features.
        s: saliency maps (N, H, W) in [0, 1] at the split's spatial size, or None.
        layout: "NCHW" or "NHWC", where the spatial axes of ``h`` are.
        c: per-channel weights (C,), or None (every channel weighs 1).

    Raises:
        ValueError: shapes that differ or do not fit the layout, or an unknown layout.
    """
    if h_hat.shape != h.shape:
        raise ValueError(f"h_hat {tuple(h_hat.shape)} and h {tuple(h.shape)} differ")
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    err = (h_hat - h).pow(2)
    if c is not None:
        channels = h.shape[1] if layout == "NCHW" else h.shape[-1]
        if c.shape != (channels,):
            raise ValueError(f"channel weights must be ({channels},) for {layout} features "
                             f"{tuple(h.shape)}, got {tuple(c.shape)}")
        err = err * (c.view(1, -1, 1, 1) if layout == "NCHW" else c)
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


def channel_weights(h: Tensor, layout: str = "NCHW", eps: float = 1e-6) -> Tensor:
    """Per-channel weights ``mean_k(var_k) / var_k`` from a batch of teacher features ``h``.

    Normalised to a mean of one over channels, so the weighted distortion keeps the plain sum's
    overall scale and lambda keeps its meaning; each channel then costs its error relative to its
    own spread instead of to the loudest channel's.

    Raises:
        ValueError: ``h`` is not 4-D or the layout is unknown.
    """
    if h.ndim != 4 or layout not in ("NCHW", "NHWC"):
        raise ValueError(f"expected 4-D features in NCHW or NHWC, got {tuple(h.shape)} {layout!r}")
    per_channel = h.transpose(0, 1) if layout == "NCHW" else h.permute(3, 0, 1, 2)
    var = per_channel.flatten(1).double().var(1).clamp_min(eps)  # (C,)
    w = 1.0 / var
    return (w / w.mean()).float()


def output_distillation(logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Summed KL divergence ``sum_i KL(softmax(teacher_i) || softmax(logits_i))`` in nats (T = 1).

    Raises:
        ValueError: shapes that differ or are not (N, classes).
    """
    if logits.shape != teacher_logits.shape or logits.ndim != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must be equal (N, classes)")
    log_p = F.log_softmax(logits.float(), dim=1)
    log_q = F.log_softmax(teacher_logits.float(), dim=1)
    return F.kl_div(log_p, log_q, reduction="sum", log_target=True)


def rd_loss(
    h_hat: Tensor,
    h: Tensor,
    likelihoods: dict[str, Tensor],
    lmbda: float,
    s: Tensor | None = None,
    layout: str = "NCHW",
    c: Tensor | None = None,
) -> dict[str, Tensor]:
    """The rate-distortion loss and its parts: ``{"loss", "distortion", "bits"}``.

    ``c``: per-channel distortion weights (:func:`channel_weights`), or None.
    """
    distortion = head_distortion(h_hat, h, s, layout, c)
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

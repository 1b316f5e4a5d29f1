"""Validation during training: accuracy through the codec and estimated rate, in eval mode.

Rounding (not noise) is used, as at test time, but no entropy coding: coded sizes are measured by
``frankensplit eval``; here the likelihood estimate (``bpp_estimated``) is enough to pick checkpoints.

What the teacher classifies depends on the model: a split model's ``h_hat`` goes to the teacher's
tail; an image codec's reconstruction, clamped to [0, 1] and rounded to 8 bits as the decoded
picture is at test time, goes to the whole teacher after its normalisation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from frankensplit.data import normalize_batch
from frankensplit.losses import rate_bits
from frankensplit.models.image_codec import Bmshj2018Factorized
from frankensplit.models.split import FrankenSplit

__all__ = ["validate"]


def _through_codec(
    model: FrankenSplit | Bmshj2018Factorized, x: Tensor
) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor | None]:
    """(logits through the codec, uncompressed teacher logits, likelihoods, per-image MSE)."""
    out = model(x)
    if isinstance(model, FrankenSplit):  # x is normalised; h_hat feeds the tail
        return model.classify(out["h_hat"]), model.teacher(x), out["likelihoods"], None
    config = model.teacher.data_config  # x is RGB in [0, 1]
    x_hat = torch.round(out["x_hat"].clamp(0, 1) * 255) / 255  # (N, 3, H, W), the decoded picture
    mse = (x_hat - x).pow(2).flatten(1).mean(1)  # (N,)
    logits = model.teacher(normalize_batch(x_hat, config))
    return logits, model.teacher(normalize_batch(x, config)), out["likelihoods"], mse


@torch.no_grad()
def validate(
    model: FrankenSplit | Bmshj2018Factorized, loader: DataLoader, device: torch.device
) -> dict[str, float]:
    """Top-1 (labels, when every item has one), teacher agreement and bpp_estimated.

    Returns:
        ``{"top1", "agreement", "teacher_top1", "bpp_estimated", "images"}``, plus ``"psnr"``
        (mean per-image PSNR in dB) for an image codec; ``top1`` and ``teacher_top1`` are NaN for
        unlabelled data.
    """
    was_training = model.training
    model.eval()
    n = correct = teacher_correct = agree = 0
    bits = psnr = 0.0
    pixels = 0
    labelled = True
    for x, label, _ in loader:
        x = x.to(device)
        logits, teacher_logits, likelihoods, mse = _through_codec(model, x)
        pred, teacher_pred = logits.argmax(1).cpu(), teacher_logits.argmax(1).cpu()
        labelled = labelled and bool((label >= 0).all())
        correct += int((pred == label).sum())
        teacher_correct += int((teacher_pred == label).sum())
        agree += int((pred == teacher_pred).sum())
        bits += float(rate_bits(likelihoods))
        if mse is not None:
            psnr += float((10 * torch.log10(1 / mse.clamp_min(1e-10))).sum())
        pixels += x.shape[0] * x.shape[2] * x.shape[3]
        n += x.shape[0]
    model.train(was_training)
    nan = float("nan")
    metrics = {
        "top1": 100.0 * correct / n if labelled else nan,
        "teacher_top1": 100.0 * teacher_correct / n if labelled else nan,
        "agreement": 100.0 * agree / n,
        "bpp_estimated": bits / pixels,
        "images": float(n),
    }
    if isinstance(model, Bmshj2018Factorized):
        metrics["psnr"] = psnr / n if n else math.nan
    return metrics

"""Validation during training: accuracy through the codec and estimated rate, in eval mode.

Rounding (not noise) is used, as at test time, but no entropy coding: coded sizes are measured by
``frankensplit eval``; here the likelihood estimate (``bpp_estimated``) is enough to pick checkpoints.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from frankensplit.losses import rate_bits
from frankensplit.models.split import FrankenSplit

__all__ = ["validate"]


@torch.no_grad()
def validate(model: FrankenSplit, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Top-1 (labels, when every item has one), teacher agreement and bpp_estimated.

    Returns:
        ``{"top1", "agreement", "teacher_top1", "bpp_estimated", "images"}``; ``top1`` and
        ``teacher_top1`` are NaN for unlabelled data.
    """
    was_training = model.training
    model.eval()
    n = correct = teacher_correct = agree = 0
    bits = 0.0
    pixels = 0
    labelled = True
    for x, label, _ in loader:
        x = x.to(device)
        out = model(x)
        logits = model.teacher.tail(out["h_hat"])
        teacher_logits = model.teacher(x)
        pred, teacher_pred = logits.argmax(1).cpu(), teacher_logits.argmax(1).cpu()
        labelled = labelled and bool((label >= 0).all())
        correct += int((pred == label).sum())
        teacher_correct += int((teacher_pred == label).sum())
        agree += int((pred == teacher_pred).sum())
        bits += float(rate_bits(out["likelihoods"]))
        pixels += x.shape[0] * x.shape[2] * x.shape[3]
        n += x.shape[0]
    model.train(was_training)
    nan = float("nan")
    return {
        "top1": 100.0 * correct / n if labelled else nan,
        "teacher_top1": 100.0 * teacher_correct / n if labelled else nan,
        "agreement": 100.0 * agree / n,
        "bpp_estimated": bits / pixels,
        "images": float(n),
    }

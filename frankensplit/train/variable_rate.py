"""Training a variable-rate model: its warm start from a fixed-rate codec, its loss over the rates
of a batch, its validation per rate.

A split objective (`frankensplit.train.objectives`) draws a rate per sample and sums
`variable_rate_loss`; the loop warm-starts the model with `warm_start_variable_rate` and validates
it with `validate_rates`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from frankensplit.losses import rate_bits, rd_loss
from frankensplit.models.codec_file import load_codec_state
from frankensplit.models.entropy import scaled_bottleneck_state
from frankensplit.models.split import FrankenSplit

__all__ = ["initial_gain", "validate_rates", "variable_rate_loss", "warm_start_variable_rate"]

_TABLES = ("_offset", "_quantized_cdf", "_cdf_length")


def initial_gain(source_lmbda: float, lmbda: float) -> float:
    """The gain a rate starts at, relative to the fixed-rate model it is warm-started from.

    Halving the quantisation step adds about one bit per active symbol; a fixed-rate model's bits
    grow by about half a bit per symbol for each halving of lambda (the lite0 zoo: 0.32, 0.70,
    1.40, 2.12 bpp at lambda 16, 4, 1, 0.25), so the gain starts at ``sqrt(source / lambda)`` and
    is trained from there.
    """
    return math.sqrt(source_lmbda / lmbda)


def warm_start_variable_rate(model: FrankenSplit, state: dict[str, Tensor],
                             meta: dict[str, str], source: str) -> None:
    """Load a codec file into a variable-rate model.

    A variable-rate file (a checkpoint of this model) loads whole. A fixed-rate one gives g_a and
    g_s unchanged, and every rate's prior from its prior rescaled to that rate's `initial_gain`
    (`scaled_bottleneck_state`), so every rate starts near where a fixed-rate model of its lambda
    would be.

    Raises:
        ValueError: a file of another architecture, or a fixed-rate file without its lambda.
    """
    if any(k.startswith("entropy.bottlenecks.") for k in state):
        load_codec_state(model, state, source=source)
        return
    if "lmbda" not in meta:
        raise ValueError(f"{source}: a fixed-rate codec file without its lambda in the metadata "
                         "cannot warm-start a variable-rate model")
    load_codec_state(model, {k: v for k, v in state.items() if k.split(".")[0] in ("g_a", "g_s")},
                     ("g_a", "g_s"), source=source)
    prefix = "entropy.entropy_bottleneck."
    prior = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    entropy = model.entropy
    # a variant whose rates share one prior (benchmarks/vr_ablation.py) starts from it unscaled
    shared = len({id(b) for b in entropy.bottlenecks}) < len(entropy.bottlenecks)
    with torch.no_grad():
        for r, lmbda in enumerate(model.rates):
            gain = initial_gain(float(meta["lmbda"]), lmbda)
            missing, unexpected = entropy.bottlenecks[r].load_state_dict(
                scaled_bottleneck_state(prior, 1.0 if shared else gain), strict=False)
            if unexpected or set(missing) - set(_TABLES):
                raise ValueError(f"{source}: its entropy model does not fit {model.model_id}: "
                                 f"missing {missing}, unexpected {unexpected}")
            entropy.log_gain[r].fill_(math.log(gain))
            entropy.log_inverse_gain[r].fill_(-math.log(gain))


def variable_rate_loss(
    h_hat: Tensor, h: Tensor, likelihoods: Tensor, rate: Tensor, lmbdas: tuple[float, ...],
    s: Tensor | None, layout: str, c: Tensor | None,
) -> dict[str, Tensor]:
    """`rd_loss` summed over the rates of the batch, each sample's bits weighted by its rate's
    lambda: the sum of the fixed-rate losses the samples would have in their own models.

    Args:
        h_hat, h, s, layout, c: as `frankensplit.losses.rd_loss` takes them, for the batch.
        likelihoods: the latent's likelihoods, (N, C, h, w).
        rate: each sample's rate index, (N,).
        lmbdas: the lambda of each rate index (`FrankenSplit.rates`).
    """
    total = None
    for value in rate.unique().tolist():
        idx = (rate == value).nonzero().squeeze(1).to(h.device)
        part = rd_loss(h_hat[idx], h[idx], {"y": likelihoods[idx]}, lmbdas[value],
                       None if s is None else s[idx], layout, c)
        total = part if total is None else {k: total[k] + v for k, v in part.items()}
    return total


@torch.no_grad()
def validate_rates(model: FrankenSplit, loader: DataLoader, device: torch.device
                   ) -> dict[str, float | list[dict[str, float]]]:
    """`frankensplit.train.validate.validate` at every rate: g_a and the teacher run once per
    batch, the entropy model, g_s and the tail once per rate.

    Returns:
        ``{"top1", "agreement", "teacher_top1", "bpp_estimated", "images"}`` averaged over the
        rates (what checkpoints are chosen by), and ``"rates"``: those figures per rate.
    """
    was_training = model.training
    model.eval()
    rates = len(model.rates)
    correct, agree, bits = [0] * rates, [0] * rates, [0.0] * rates
    n = teacher_correct = pixels = 0
    labelled = True
    for x, label, _ in loader:
        x = x.to(device)
        y, teacher_pred = model.g_a(x), model.teacher(x).argmax(1).cpu()
        labelled = labelled and bool((label >= 0).all())
        teacher_correct += int((teacher_pred == label).sum())
        for r in range(rates):
            y_hat, likelihoods = model.entropy_forward(y, r)
            pred = model.classify(model.g_s(y_hat)).argmax(1).cpu()
            correct[r] += int((pred == label).sum())
            agree[r] += int((pred == teacher_pred).sum())
            bits[r] += float(rate_bits({"y": likelihoods}))
        n += x.shape[0]
        pixels += x.shape[0] * x.shape[2] * x.shape[3]
    model.train(was_training)
    nan = float("nan")
    per_rate = [{"lmbda": lmbda, "top1": 100.0 * correct[r] / n if labelled else nan,
                 "agreement": 100.0 * agree[r] / n, "bpp_estimated": bits[r] / pixels}
                for r, lmbda in enumerate(model.rates)]
    return {
        "top1": sum(m["top1"] for m in per_rate) / rates,
        "teacher_top1": 100.0 * teacher_correct / n if labelled else nan,
        "agreement": sum(m["agreement"] for m in per_rate) / rates,
        "bpp_estimated": sum(m["bpp_estimated"] for m in per_rate) / rates,
        "images": float(n),
        "rates": per_rate,
    }

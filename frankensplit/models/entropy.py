"""Entropy models: latent y -> (y_hat, likelihoods) while training, y -> bytes -> y_hat when coding.

The main method uses a factorized prior (CompressAI ``EntropyBottleneck``): additive uniform noise in
training, rounding around the per-channel median at inference, and real rANS coding from fixed
quantized CDF tables. Fixed tables are what make decoding exact across devices: the edge and the
server read the same integer tables, so there is no floating-point hyperprior to disagree about.

`GainedFactorizedPrior` is the variable-rate model: one latent, a grid of rates, fixed integer
tables per rate:

```
edge:    y (N,C,h,w) --* gain[r]--> z --round(z - median[r])--> symbols --rANS(tables[r])--> bytes
server:  bytes --rANS(tables[r])--> z_hat --* inverse_gain[r]--> y_hat --g_s--> h_hat
```

The rate index ``r`` selects a per-channel gain vector (Cui et al., "Asymmetric Gained Deep Image
Compression With Continuous Rate Adaptation", CVPR 2021) that scales y before quantisation (a
larger gain: finer steps, more bits) and an inverse gain that scales the decoded latent back for
g_s. Why this mechanism and not the alternatives:

- It costs the edge one multiply per latent element (48 x 28 x 28 at 224 px, under 0.01% of g_a's
  0.53 GMAC): the encoder g_a and the decoder g_s are the fixed-rate ones, so the shipped weights
  warm-start them unchanged.
- Each rate keeps a factorized prior of its own, with its own fixed quantized CDF tables. A single
  density for every rate (QVRF's continuous one, or conditioning a hyperprior) cannot be a fixed
  integer table per channel at every quantisation step; with a table per rate the decoder reads
  stored integers as before and decoding stays exact on every machine. The cost is 2,928
  parameters and a few KB of tables per rate, none of it in g_a.
- Lambda-conditioning of g_a and g_s (FiLM) would change the encoder's cost and discard the
  trained weights the zoo holds.

Training draws a rate per sample and weighs its bits by that rate's lambda (the loop in
:mod:`frankensplit.train.loop`), so one model learns every rate at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frankensplit._compressai import CompressionModel, EntropyBottleneck, update_registered_buffers
from frankensplit.coding import pad_payload
from frankensplit.registry import Registry

__all__ = ["ENTROPY_MODELS", "FactorizedPrior", "GainedFactorizedPrior", "NotUpdatedError",
           "scaled_bottleneck_state"]

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
def factorized(channels: int, rates: int | None = None) -> nn.Module:
    """Factorized prior (the paper's choice): one fixed rate."""
    if rates is not None:
        raise ValueError(f"entropy model 'factorized' has one rate, got rates={rates}: a "
                         "variable-rate model uses 'gained_factorized'")
    return FactorizedPrior(channels)


class GainedFactorizedPrior(CompressionModel):
    """Gain vectors per rate around one latent, a factorized prior per rate.

    ``forward(y, rate) -> (y_hat, likelihoods)`` with ``rate`` one index per batch item (N,);
    ``compress(y, rate) -> list[bytes]`` and ``decompress(strings, (h, w), rate) -> y_hat`` code a
    batch at one rate; ``update()``, ``aux_loss()`` and ``load_state_dict`` come from compressai's
    ``CompressionModel`` (every bottleneck's tables and quantile loss).

    Args:
        channels: latent channels.
        rates: number of rates (rate indices 0 .. rates - 1, lowest bit rate first).
    """

    def __init__(self, channels: int, rates: int) -> None:
        super().__init__()
        if rates < 2:
            raise ValueError(f"a variable-rate entropy model needs at least 2 rates, got {rates}")
        self.channels = channels
        self.rates = rates
        self.log_gain = nn.Parameter(torch.zeros(rates, channels))  # gain = exp: always positive
        self.log_inverse_gain = nn.Parameter(torch.zeros(rates, channels))
        self.bottlenecks = nn.ModuleList(EntropyBottleneck(channels) for _ in range(rates))

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True,
                        assign: bool = False) -> Any:
        """Resize every rate's table buffers to the stored ones, then load with torch's own.

        compressai's ``CompressionModel.load_state_dict`` also renames pre-1.2 bottleneck keys,
        matching each bottleneck by a bare prefix: from 11 rates on, ``bottlenecks.1`` matches
        ``bottlenecks.10.*`` and the renaming fails (IndexError). Files of this model never hold
        those old names, so only the resizing is kept, with exact prefixes.
        """
        for i, bottleneck in enumerate(self.bottlenecks):
            update_registered_buffers(bottleneck, f"bottlenecks.{i}",
                                      ["_quantized_cdf", "_offset", "_cdf_length"], state_dict)
        return nn.Module.load_state_dict(self, state_dict, strict=strict, assign=assign)

    def _rate_index(self, rate: int | Tensor, n: int) -> Tensor:
        """``rate`` as one index per item (N,), checked against the grid."""
        r = torch.as_tensor(rate, dtype=torch.long, device=self.log_gain.device)
        if r.ndim == 0:
            r = r.expand(n)
        if r.shape != (n,):
            raise ValueError(f"rate must be an index or one index per item ({n},), got "
                             f"{tuple(r.shape)}")
        if n and (int(r.min()) < 0 or int(r.max()) >= self.rates):
            raise ValueError(f"rate indices must be in 0..{self.rates - 1}, got "
                             f"{sorted(set(r.tolist()))}")
        return r

    def _check_rate(self, rate: int) -> int:
        if isinstance(rate, bool) or not isinstance(rate, int) or not 0 <= rate < self.rates:
            raise ValueError(f"rate must be an index in 0..{self.rates - 1}, got {rate!r}")
        return rate

    def gains(self, rate: int) -> tuple[Tensor, Tensor]:
        """The gain and inverse gain vectors (C,) of one rate, as the edge and server apply them."""
        r = self._check_rate(rate)
        return self.log_gain[r].detach().exp(), self.log_inverse_gain[r].detach().exp()

    def forward(self, y: Tensor, rate: int | Tensor) -> tuple[Tensor, Tensor]:
        """Noisy (train) or median-rounded (eval) latent and its likelihoods, both (N, C, h, w).

        Each item goes through its own rate's gain and bottleneck.
        """
        r = self._rate_index(rate, y.shape[0])
        z = y * self.log_gain.exp()[r][:, :, None, None]  # (N, C, h, w)
        z_hat, likelihoods = torch.zeros_like(z), torch.zeros_like(z)
        for value in r.unique().tolist():
            idx = (r == value).nonzero().squeeze(1)
            zr, lr = self.bottlenecks[value](z.index_select(0, idx))
            z_hat = z_hat.index_copy(0, idx, zr)
            likelihoods = likelihoods.index_copy(0, idx, lr)
        return z_hat * self.log_inverse_gain.exp()[r][:, :, None, None], likelihoods

    def medians(self, rate: int) -> Tensor:
        """Per-channel medians (C,) of one rate's bottleneck (the quantisation offsets of z)."""
        return self.bottlenecks[self._check_rate(rate)].quantiles[:, 0, 1].detach()

    def quantize(self, y: Tensor, rate: int) -> Tensor:
        """Eval-mode quantisation at one rate: what ``decompress`` returns for ``compress(y)``."""
        gain, inverse = (g.to(y).view(1, -1, 1, 1) for g in self.gains(rate))
        medians = self.medians(rate).to(y).view(1, -1, 1, 1)
        return (torch.round(y * gain - medians) + medians) * inverse

    @property
    def ready(self) -> bool:
        """Whether every rate's CDF tables exist (``update()`` was called or loaded)."""
        return all(b.quantized_cdf.numel() > 0 for b in self.bottlenecks)

    def _check_ready(self) -> None:
        if not self.ready:
            raise NotUpdatedError("entropy model has no CDF tables: call update() before coding")

    def compress(self, y: Tensor, rate: int) -> list[bytes]:
        """rANS-code each item of y (N, C, h, w) at one rate into its own byte string."""
        self._check_ready()
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(f"expected a latent (N, {self.channels}, H, W), got {tuple(y.shape)}")
        gain, _ = self.gains(rate)
        return self.bottlenecks[rate].compress(y * gain.to(y).view(1, -1, 1, 1))

    def decompress(self, strings: list[bytes], size: tuple[int, int], rate: int) -> Tensor:
        """Decode strings of one rate into y_hat (N, C, h, w), equal to `quantize`'s latent.

        The payloads are padded as the fixed-rate model's are (`FactorizedPrior.decompress`:
        compressai's decoder reads past a short buffer).
        """
        self._check_ready()
        h, w = (int(v) for v in size)
        if h < 1 or w < 1:
            raise ValueError(f"latent size must be positive, got {tuple(size)}")
        _, inverse = self.gains(rate)
        padded = [pad_payload(s, self.channels * h * w) for s in strings]
        z_hat = self.bottlenecks[rate].decompress(padded, (h, w))
        return z_hat * inverse.to(z_hat).view(1, -1, 1, 1)

    def tables(self, rate: int) -> dict[str, Tensor]:
        """One rate's integer coding tables, its medians and its gain vectors."""
        self._check_ready()
        eb = self.bottlenecks[self._check_rate(rate)]
        gain, inverse = self.gains(rate)
        return {"quantized_cdf": eb.quantized_cdf.clone(), "cdf_length": eb.cdf_length.clone(),
                "offset": eb.offset.clone(), "medians": self.medians(rate), "gain": gain,
                "inverse_gain": inverse}


def scaled_bottleneck_state(state: dict[str, Tensor], gain: float) -> dict[str, Tensor]:
    """A trained bottleneck's parameters for the density of ``gain * y`` instead of ``y``.

    compressai's factorized density applies ``softplus(matrices[0]) @ x`` first, so dividing that
    first matrix's softplus by ``gain`` (and scaling the quantiles by it) gives exactly the
    density ``p(z / gain)`` of z = gain * y up to the 1/gain Jacobian, which the bottleneck's
    normalised CDF absorbs. A variable-rate model warm-started from a fixed-rate one starts each
    rate's prior where its initial gain puts the latent, instead of at a mismatched scale.

    Args:
        state: an ``EntropyBottleneck`` state dict (keys without prefix; CDF buffers are dropped).
        gain: the positive scale.
    """
    if not gain > 0 or not math.isfinite(gain):
        raise ValueError(f"gain must be positive and finite, got {gain}")
    tables = ("_offset", "_quantized_cdf", "_cdf_length")  # rebuilt by update()
    out = {k: v.clone() for k, v in state.items() if k not in tables}
    m0 = F.softplus(out["matrices.0"]) / gain
    out["matrices.0"] = m0 + torch.log(-torch.expm1(-m0))  # softplus^-1, stable for m0 > 0
    out["quantiles"] = out["quantiles"] * gain
    return out


@ENTROPY_MODELS.register("gained_factorized")
def gained_factorized(channels: int, rates: int = 0) -> nn.Module:
    """Gain vectors per rate with a factorized prior per rate (variable rate; needs ``rates``)."""
    return GainedFactorizedPrior(channels, rates)

"""The deployment halves of a split model: `EdgePart` (g_a + entropy encoder) and `ServerPart`
(check, entropy decoder through a pluggable `LatentCoder`, g_s + tail).

```
edge:    x (N,3,H,W) --g_a--> y (N,C,h,w) --round(y [* gain[r]] - median)--> rANS --> packet
server:  packet --check (id, latent shape, rate, limits)--> coder (rANS) --> y_hat
         --g_s--> h_hat --tail--> logits
```

`frankensplit.models.split.FrankenSplit` hands out both (``.edge``, ``.server``, sharing its
parameters); a server loads its half alone (`Architecture.build_server`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from frankensplit import bitstream
from frankensplit.accepts import Accepts, AcceptsPackets
from frankensplit.accepts import check_rate as check_rate_index
from frankensplit.models.entropy import FactorizedPrior

__all__ = ["EdgePart", "InProcessCoder", "LatentCoder", "ServerPart", "check_rate"]


def check_rate(entropy: nn.Module, rate: int | None, default: int | None = None) -> int | None:
    """Refuse a rate index a model does not have: a fixed-rate model takes None, a variable-rate
    one (``entropy.rates`` > 1) an index of its grid, or None where it has a ``default`` rate
    (`frankensplit.accepts.check_rate`).

    Returns:
        The rate to code at: ``rate``, or ``default`` when ``rate`` is None.

    Raises:
        ValueError: naming the rates the model has.
    """
    return check_rate_index(getattr(entropy, "rates", 1), rate, default)


class EdgePart(nn.Module):
    """What runs on the device: encoder and entropy encoder.

    Args:
        model_id: the id written into every packet (the server refuses packets for other models).
        g_a: the encoder.
        entropy: the entropy model (its CDF tables must be built, see ``FrankenSplit.update``).
        default_rate: a variable-rate model's rate index used when a call names none
            (`FrankenSplit.default_rate`); None: a variable-rate model needs a rate per call.

    Raises:
        ValueError: a default rate the model does not have (any, for a fixed-rate model).
    """

    def __init__(self, model_id: str, g_a: nn.Module, entropy: FactorizedPrior,
                 default_rate: int | None = None) -> None:
        super().__init__()
        self.model_id = model_id
        self.g_a = g_a
        self.entropy = entropy
        if default_rate is not None:
            check_rate(entropy, default_rate)
        self.default_rate = default_rate

    @torch.no_grad()
    def encode(self, x: Tensor, rate: int | None = None) -> list[bytes]:
        """Encode images x (N, 3, H, W), already preprocessed, into N self-describing packets.

        Args:
            x: the images.
            rate: a variable-rate model's rate index (the packets carry it); None for a fixed-rate
                model, and for a variable-rate one its `default_rate`.

        Raises:
            ValueError: images of another shape, a rate the model does not have, or none for a
                variable-rate model without a default rate.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got {tuple(x.shape)}")
        rate = check_rate(self.entropy, rate, self.default_rate)
        return self.pack(self.g_a(x), rate)  # y: (N, C, h, w)

    @torch.no_grad()
    def pack(self, y: Tensor, rate: int | None = None) -> list[bytes]:
        """The second half of `encode`: latents y (N, C, h, w) into N packets at ``rate`` (None:
        as `encode`; one g_a run can then be coded at every rate of a variable-rate model).

        Raises:
            ValueError: a rate the model does not have (none, without a default rate), or a
                latent of other channels.
        """
        rate = check_rate(self.entropy, rate, self.default_rate)
        strings = self.entropy.compress(y) if rate is None else self.entropy.compress(y, rate)
        shape = tuple(int(d) for d in y.shape[1:])
        return [bitstream.pack(bitstream.Packet(self.model_id, shape, s, rate)) for s in strings]


class LatentCoder(Protocol):
    """How a `ServerPart` entropy-decodes packets it has checked: in this process
    (`InProcessCoder`, the default) or in a sandboxed worker process
    (``frankensplit.runtime.server.sandbox.SandboxCoder``, what a server facing untrusted senders uses).
    """

    def decode(self, packets: Sequence[bitstream.Packet]) -> list[Any]:
        """y_hat (C, h, w) per packet, a tensor or a float32 array, each decoded at its own
        shape and rate; or, for a packet that cannot be decoded, its `bitstream.BitstreamError`."""


class InProcessCoder:
    """Decode with the entropy model's own rANS decoder, in this process, packet by packet (so a
    bad packet fails alone). compressai's decoder is not memory-safe on forged payloads (see
    ``runtime/server/sandbox.py``): use it for trusted packets.

    Args:
        entropy: the entropy model (`FactorizedPrior` or `GainedFactorizedPrior`), tables built.
    """

    def __init__(self, entropy: nn.Module) -> None:
        self.entropy = entropy

    def decode(self, packets: Sequence[bitstream.Packet]) -> list[Any]:
        """See `LatentCoder.decode`."""
        out: list[Any] = []
        for packet in packets:
            _, h, w = packet.shape
            rate = () if packet.rate is None else (packet.rate,)
            try:
                out.append(self.entropy.decompress([packet.payload], (h, w), *rate)[0])
            except (RuntimeError, ValueError, IndexError) as e:
                out.append(bitstream.CorruptError(f"entropy decoding failed: {e}"))
        return out


class ServerPart(AcceptsPackets, nn.Module):
    """What runs on the server: entropy decoder, blueprint decoder g_s and the frozen teacher tail.

    The server's path, each step once: `check` (or `parse` from bytes) a packet against this
    model, `decode_each` checked packets into latents through its coder, `classify` them. The
    checks, their properties, the copies (`with_coder`, `with_latent_shape`) and `decode_batch`
    come from `frankensplit.accepts.AcceptsPackets`, shared with the ONNX server half.

    Args:
        model_id: the model's own id (the decoder's: what a server labels its answers with).
        entropy: the entropy model with the same CDF tables as the edge.
        g_s: the blueprint decoder.
        tail: the unmodified teacher tail.
        limits: wire-format limits applied to every packet (default: latents of inputs up to
            512x512, i.e. C x 64 x 64 symbols).
        encoder_id: the id the packets it decodes carry; packets carrying another are rejected
            (None: ``model_id``; encoder reuse: the source model's, see `FrankenSplit.encoder_id`).
        latent_shape: the one latent shape (C, h, w) it accepts, derived from the architecture
            (`Architecture.latent_shape`): what a server takes from untrusted clients, so no packet
            makes it run g_s on another size. None: any size within ``limits`` (in-process use).
        coder: how packets are entropy-decoded (`LatentCoder`; None: `InProcessCoder`).
    """

    def __init__(
        self,
        model_id: str,
        entropy: FactorizedPrior,
        g_s: nn.Module,
        tail: nn.Module,
        limits: bitstream.Limits | None = None,
        encoder_id: str | None = None,
        latent_shape: tuple[int, int, int] | None = None,
        coder: LatentCoder | None = None,
    ) -> None:
        super().__init__()
        self.model_id = model_id
        self.entropy = entropy
        self.g_s = g_s
        self.tail = tail
        rates = getattr(entropy, "rates", 1)  # a variable-rate entropy model's rate count
        self.accepts = Accepts(model_id, model_id if encoder_id is None else encoder_id,
                               entropy.channels, None if rates == 1 else rates, latent_shape,
                               limits)
        self.coder: LatentCoder = InProcessCoder(entropy) if coder is None else coder

    def _args(self) -> tuple[Any, ...]:
        return self.model_id, self.entropy, self.g_s, self.tail

    def coding_tables(self) -> dict[int | None, dict[str, np.ndarray]]:
        """The integer rANS tables, medians (and a variable-rate model's gain vectors) per rate
        index (None: the fixed rate), as numpy arrays: what a decoder in another process needs."""
        if self.rates is None:
            tables = {None: self.entropy.tables()}
        else:
            tables = {r: self.entropy.tables(r) for r in range(self.rates)}
        return {r: {name: t.cpu().numpy() for name, t in ts.items()} for r, ts in tables.items()}

    def entropy_state(self) -> dict[str, np.ndarray]:
        """The entropy model's tensors (quantiles, CDF tables) as arrays: what every decoder of
        one encoder must hold alike (`runtime.server.routing.group_by_encoder`)."""
        return {k: v.detach().cpu().numpy() for k, v in self.entropy.state_dict().items()}

    @torch.no_grad()
    def decode_each(self, packets: Sequence[bitstream.Packet]) -> list[Tensor | bitstream.BitstreamError]:
        """Packets this part has checked (`check`, `parse`; not checked again) -> y_hat (C, h, w)
        per packet through the coder, or the error of a packet that could not be decoded."""
        return [y if isinstance(y, bitstream.BitstreamError) else torch.as_tensor(y)
                for y in self.coder.decode(packets)]

    @torch.no_grad()
    def decode_latent(self, packets: Sequence[bytes | bitstream.Packet]) -> Tensor:
        """Decode packets (bytes, or packets unpacked already) of one latent size into y_hat
        (N, C, h, w), each at its own rate.

        Raises:
            bitstream.BitstreamError: the first packet that does not fit or does not decode.
            ValueError: packets of several latent shapes.
        """
        return torch.stack(self.decode_batch(packets))  # (N, C, h, w)

    @torch.no_grad()
    def classify(self, y_hat: Tensor) -> Tensor:
        """Decoded latents y_hat (N, C, h, w) -> logits (N, num_classes): g_s, then the tail."""
        return self.tail(self.g_s(y_hat))

    @torch.no_grad()
    def decode(self, packets: Sequence[bytes | bitstream.Packet]) -> Tensor:
        """Packets -> logits (N, num_classes)."""
        return self.classify(self.decode_latent(packets))

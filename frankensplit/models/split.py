"""The split model: edge part (g_a + entropy encoder) and server part (entropy decoder + g_s + tail).

```
edge:    x (N,3,H,W) --g_a--> y (N,48,H/8,W/8) --round(y - median)--> rANS --> bytes (one packet/image)
server:  bytes --rANS--> y_hat --g_s--> h_hat (teacher features at the split) --tail--> logits
```

``FrankenSplit.forward`` is the training/analysis path and returns everything the loss needs;
``edge`` and ``server`` are the deployment halves, each usable alone (the edge never holds the
blueprint or the tail; the server never holds the encoder).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from frankensplit import bitstream
from frankensplit.backbones import SplitBackbone
from frankensplit.blueprints.common import count_parameters
from frankensplit.models.architecture import Architecture
from frankensplit.models.entropy import FactorizedPrior

__all__ = ["EdgePart", "FrankenSplit", "ServerPart", "check_rate", "count_parameters"]


def check_rate(entropy: nn.Module, rate: int | None) -> None:
    """Refuse a rate index a model does not have: a fixed-rate model takes None, a variable-rate
    one (``entropy.rates`` > 1) an index of its grid.

    Raises:
        ValueError: naming the rates the model has.
    """
    rates = getattr(entropy, "rates", 1)
    if rates == 1 and rate is not None:
        raise ValueError(f"this model has one fixed rate; got rate {rate!r}")
    if rates > 1 and (isinstance(rate, bool) or not isinstance(rate, int)
                      or not 0 <= rate < rates):
        raise ValueError(f"this variable-rate model needs a rate index in 0..{rates - 1}, "
                         f"got {rate!r}")


class EdgePart(nn.Module):
    """What runs on the device: encoder and entropy encoder.

    Args:
        model_id: the id written into every packet (the server refuses packets for other models).
        g_a: the encoder.
        entropy: the entropy model (its CDF tables must be built, see ``FrankenSplit.update``).
    """

    def __init__(self, model_id: str, g_a: nn.Module, entropy: FactorizedPrior) -> None:
        super().__init__()
        self.model_id = model_id
        self.g_a = g_a
        self.entropy = entropy

    @torch.no_grad()
    def encode(self, x: Tensor, rate: int | None = None) -> list[bytes]:
        """Encode images x (N, 3, H, W), already preprocessed, into N self-describing packets.

        Args:
            x: the images.
            rate: a variable-rate model's rate index (the packets carry it); None for a fixed-rate
                model.

        Raises:
            ValueError: images of another shape, or a rate the model does not have.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got {tuple(x.shape)}")
        check_rate(self.entropy, rate)
        y = self.g_a(x)  # (N, C, h, w)
        strings = self.entropy.compress(y) if rate is None else self.entropy.compress(y, rate)
        shape = tuple(int(d) for d in y.shape[1:])
        return [bitstream.pack(bitstream.Packet(self.model_id, shape, s, rate)) for s in strings]


class ServerPart(nn.Module):
    """What runs on the server: entropy decoder, blueprint decoder g_s and the frozen teacher tail.

    Args:
        model_id: the model's own id (the decoder's: what a server labels its answers with).
        entropy: the entropy model with the same CDF tables as the edge.
        g_s: the blueprint decoder.
        tail: the unmodified teacher tail.
        limits: wire-format limits applied to every packet (default: latents of inputs up to
            512x512, i.e. C x 64 x 64 symbols).
        encoder_id: the id the packets it decodes carry; packets carrying another are rejected
            (None: ``model_id``; encoder reuse: the source model's, see `FrankenSplit.encoder_id`).
    """

    def __init__(
        self,
        model_id: str,
        entropy: FactorizedPrior,
        g_s: nn.Module,
        tail: nn.Module,
        limits: bitstream.Limits | None = None,
        encoder_id: str | None = None,
    ) -> None:
        super().__init__()
        self.model_id = model_id
        self.encoder_id = model_id if encoder_id is None else encoder_id
        self.entropy = entropy
        self.g_s = g_s
        self.tail = tail
        if limits is None:
            # A 34-byte forged packet may declare any shape within the limits, and decoding costs
            # time and memory per declared symbol (fuzzing: about 1 s and 380 MiB at the wire
            # format's generic bound). Default to latents of inputs up to 512x512.
            limits = bitstream.Limits(max_latent_elements=entropy.channels * 64 * 64)
        self.limits = limits

    def parse(self, data: bytes) -> bitstream.Packet:
        """Unpack and validate one packet against this model.

        Raises:
            bitstream.BitstreamError: malformed packet, or one for another model / latent size.
        """
        return self._check_model(bitstream.unpack(data, self.limits))  # unpack checked limits

    def check(self, packet: bitstream.Packet) -> bitstream.Packet:
        """Validate an unpacked packet against this model: its encoder id, channels and limits
        (a server unpacks once to route, then checks here without unpacking again).

        Raises:
            bitstream.BitstreamError: a packet for another model, latent size or above the limits.
        """
        bitstream.check_limits(packet, self.limits)
        return self._check_model(packet)

    def _check_model(self, packet: bitstream.Packet) -> bitstream.Packet:
        if packet.model_id != self.encoder_id:
            raise bitstream.CorruptError(
                f"packet is for model {packet.model_id!r}, this server part decodes "
                f"{self.encoder_id!r}"
            )
        if packet.shape[0] != self.entropy.channels:
            raise bitstream.CorruptError(
                f"packet declares {packet.shape[0]} latent channels, model has {self.entropy.channels}"
            )
        try:
            check_rate(self.entropy, packet.rate)
        except ValueError as e:
            raise bitstream.CorruptError(f"packet rate {packet.rate!r} does not fit: {e}") from e
        return packet

    @torch.no_grad()
    def decode_latent(self, packets: Sequence[bytes | bitstream.Packet]) -> Tensor:
        """Decode packets (bytes, or packets unpacked already) of one latent size into y_hat
        (N, C, h, w)."""
        parsed = [self.check(p) if isinstance(p, bitstream.Packet) else self.parse(p)
                  for p in packets]
        shapes = {p.shape for p in parsed}
        if len(shapes) != 1:
            raise ValueError(f"packets of one batch must share a latent shape, got {sorted(shapes)}")
        _, h, w = parsed[0].shape
        try:
            if parsed[0].rate is None:  # fixed rate (check_rate: all None)
                return self.entropy.decompress([p.payload for p in parsed], (h, w))
            y_hat = [None] * len(parsed)  # one decompress per rate of the batch
            for rate in sorted({p.rate for p in parsed}):
                idx = [i for i, p in enumerate(parsed) if p.rate == rate]
                decoded = self.entropy.decompress([parsed[i].payload for i in idx], (h, w), rate)
                for i, one in zip(idx, decoded):
                    y_hat[i] = one
            return torch.stack(y_hat)
        except (RuntimeError, ValueError, IndexError) as e:
            raise bitstream.CorruptError(f"entropy decoding failed: {e}") from e

    @torch.no_grad()
    def classify(self, y_hat: Tensor) -> Tensor:
        """Decoded latents y_hat (N, C, h, w) -> logits (N, num_classes): g_s, then the tail."""
        return self.tail(self.g_s(y_hat))

    @torch.no_grad()
    def decode(self, packets: Sequence[bytes | bitstream.Packet]) -> Tensor:
        """Packets -> logits (N, num_classes)."""
        return self.classify(self.decode_latent(packets))


class FrankenSplit(nn.Module):
    """A FrankenSplit model: codec (g_a, entropy model, g_s) injected into a frozen teacher.

    Args:
        model_id: stable id, written into every packet.
        g_a: edge encoder (exposes ``latent_channels`` and ``reduction``).
        entropy: entropy model over the latent.
        g_s: blueprint decoder producing the teacher's features at the split.
        teacher: the split backbone (frozen; its head gives the distillation target h).
        architecture: what it was built from (`Architecture.build` passes itself), written
            into saved codec files so that a file alone rebuilds its model.
        tail: a tail of its own (``architecture.tail``), or None: the teacher's.
    """

    def __init__(
        self,
        model_id: str,
        g_a: nn.Module,
        entropy: FactorizedPrior,
        g_s: nn.Module,
        teacher: SplitBackbone,
        architecture: Architecture,
        tail: nn.Module | None = None,
    ) -> None:
        super().__init__()
        bitstream.Packet(model_id, (1, 1, 1), b"")  # validates the id with the wire format's rules
        self.model_id = model_id
        self.g_a = g_a
        self.entropy = entropy
        self.g_s = g_s
        self.teacher = teacher
        self.architecture = architecture
        # A tail of its own (Entropic Student's second stage fine-tunes a copy of the teacher's),
        # or None: the unmodified teacher tail, FrankenSplit's. The teacher itself never changes,
        # so the uncompressed reference stays the real teacher.
        self.tail = tail

    @property
    def serving_tail(self) -> nn.Module:
        """The tail decoded features go through: the model's own, else the teacher's."""
        return self.teacher.tail if self.tail is None else self.tail

    def classify(self, h_hat: Tensor) -> Tensor:
        """Logits of decoded features (through `serving_tail`)."""
        return self.serving_tail(h_hat)

    @property
    def encoder_id(self) -> str:
        """The id its packets carry: its own, or under encoder reuse its source model's.

        A reuse model (``architecture.reuses``) runs its source's g_a and entropy model, so
        its edge writes exactly the source's packets, id included, and one packet can be sent to
        any server decoder of that encoder (`frankensplit.runtime.service`); the bytes an
        evaluation counts are then the bytes the device really sends.
        """
        return self.architecture.reuses or self.model_id

    @property
    def method(self) -> str:
        """The method this model implements, as evaluations label it (``architecture.method``)."""
        return self.architecture.method

    @property
    def rates(self) -> tuple[float, ...] | None:
        """A variable-rate model's lambda grid (rate index -> lambda); None: one fixed rate."""
        return self.architecture.rates

    def forward(self, x: Tensor, rate: int | Tensor | None = None
                ) -> dict[str, Tensor | dict[str, Tensor]]:
        """Training/analysis pass (no entropy coding).

        Args:
            x: images (N, 3, H, W), preprocessed.
            rate: a variable-rate model's rate index, for the batch or per item (N,); None for a
                fixed-rate model.

        Returns:
            ``{"y_hat", "likelihoods": {"y"}, "h_hat"}``; noisy y_hat in train mode, rounded in eval.
        """
        y = self.g_a(x)  # (N, C, H/r, W/r), r = g_a.reduction (8; Entropic Student: 4)
        y_hat, y_likelihoods = self.entropy_forward(y, rate)
        h_hat = self.g_s(y_hat)  # (N, *spec.feature_shape)
        return {"y_hat": y_hat, "likelihoods": {"y": y_likelihoods}, "h_hat": h_hat}

    def entropy_forward(self, y: Tensor, rate: int | Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The entropy model on y: ``(y_hat, likelihoods)``, at ``rate`` for a variable-rate model.

        Raises:
            ValueError: a rate for a fixed-rate model, or none for a variable-rate one.
        """
        if self.rates is None:
            if rate is not None:
                raise ValueError(f"{self.model_id} has one fixed rate; got a rate")
            return self.entropy(y)
        if rate is None:
            raise ValueError(f"{self.model_id} is variable-rate: give a rate index in "
                             f"0..{len(self.rates) - 1}")
        return self.entropy(y, rate)

    def train(self, mode: bool = True) -> FrankenSplit:
        super().train(mode)
        self.teacher.eval()  # the teacher never leaves eval mode
        if self.tail is not None:
            self.tail.eval()  # fine-tuned on the teacher's batch statistics, as in deployment
        return self

    def codec_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters: encoder, entropy model, blueprint and an own tail (never the
        teacher)."""
        own = [] if self.tail is None else list(self.tail.parameters())
        return [*self.g_a.parameters(), *self.entropy.parameters(), *self.g_s.parameters(), *own]

    def aux_loss(self) -> Tensor:
        """The entropy model's auxiliary quantile loss."""
        return self.entropy.aux_loss()

    def update(self, force: bool = False) -> bool:
        """Build the entropy coder's CDF tables (required before ``edge``/``server`` coding)."""
        return self.entropy.update(force=force)

    @property
    def edge(self) -> EdgePart:
        """The device half (shares parameters with this model); packets carry `encoder_id`."""
        return EdgePart(self.encoder_id, self.g_a, self.entropy)

    @property
    def server(self) -> ServerPart:
        """The server half (shares parameters with this model): decodes `encoder_id`'s packets."""
        return ServerPart(self.model_id, self.entropy, self.g_s, self.serving_tail,
                          encoder_id=self.encoder_id)

    def estimated_bits(self, x: Tensor, rate: int | None = None) -> Tensor:
        """Estimated bits per image from the eval-mode likelihoods, (N,)."""
        with torch.no_grad():
            return self.latent_bits(self.g_a(x), rate)

    def latent_bits(self, y: Tensor, rate: int | None = None) -> Tensor:
        """Estimated bits per image of a latent (N, C, h, w), (N,).

        The eval-mode entropy model rounds ``y`` around its medians first, and rounding is
        idempotent: the decoded ``y_hat`` of a packet gives the same bits as the ``y`` it was coded
        from, which lets the evaluation skip a second run of g_a. (A variable-rate model's decoded
        latent is scaled back by the inverse gain, so only its ``y`` gives its bits.)
        """
        with torch.no_grad():
            _, likelihoods = self.entropy_forward(y, rate)
        return -torch.log2(likelihoods).flatten(1).sum(1)

    @staticmethod
    def bpp(num_bytes: float | Tensor, height: int = 224, width: int = 224) -> float:
        """Bits per pixel of ``num_bytes`` over an ``height x width`` image."""
        return float(num_bytes) * 8.0 / (height * width)

    @staticmethod
    def bpp_from_bits(bits: float | Tensor, height: int = 224, width: int = 224) -> float:
        """Bits per pixel of an information content in bits."""
        return float(bits) / (height * width)



"""The split model: edge part (g_a + entropy encoder) and server part (entropy decoder + g_s + tail).

```
edge:    x (N,3,H,W) --g_a--> y (N,48,H/8,W/8) --round(y - median)--> rANS --> bytes (one packet/image)
server:  bytes --rANS--> y_hat --g_s--> h_hat (teacher features at the split) --tail--> logits
```

``FrankenSplit.forward`` is the training/analysis path and returns everything the loss needs;
``edge`` and ``server`` are the deployment halves (`frankensplit.models.parts`), each usable
alone (the edge never holds the blueprint or the tail; the server never holds the encoder).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from frankensplit import bitstream
from frankensplit.backbones import SplitBackbone
from frankensplit.blueprints.common import count_parameters
from frankensplit.models.architecture import Architecture
from frankensplit.models.entropy import FactorizedPrior
from frankensplit.models.parts import EdgePart, InProcessCoder, LatentCoder, ServerPart, check_rate

__all__ = ["EdgePart", "FrankenSplit", "InProcessCoder", "LatentCoder", "ServerPart", "check_rate",
           "count_parameters"]


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
        self._default_rate: int | None = None

    @property
    def default_rate(self) -> int | None:
        """A variable-rate model's rate index that its edge codes at when a call names none
        (``edge.encode(x)``); None: every call names one (and always for a fixed-rate model).
        `frankensplit.models.zoo.create_model` sets a zoo entry's (`ModelEntry.default_rate`);
        a built model and a codec file's have none. The training and analysis paths
        (`forward`, `latent_bits`) always take the rate named.

        Raises:
            ValueError: (setting it) a rate the model does not have; any, for a fixed rate.
        """
        return self._default_rate

    @default_rate.setter
    def default_rate(self, rate: int | None) -> None:
        if rate is not None:
            try:
                check_rate(self.entropy, rate)
            except ValueError as e:
                raise ValueError(f"{self.model_id}: default_rate: {e}") from None
        self._default_rate = rate

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
        any server decoder of that encoder (`frankensplit.runtime.server.service`); the bytes an
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

    @property
    def data_config(self) -> dict[str, Any]:
        """The model's preprocessing (timm's data config), what its edge, training and evaluation
        feed g_a: the teacher's, at the architecture's input size when it sets one
        (`Architecture.data_config`; a reuse model takes its source encoder's input). The
        teacher's own ``data_config`` stays the teacher's."""
        return self.architecture.data_config(self.teacher.data_config)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the latent of one image at the edge's input size (derived from the
        architecture, `Architecture.latent_shape`; g_a is not run)."""
        return self.architecture.latent_shape(self.teacher.data_config)

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
        """The device half (shares parameters with this model); packets carry `encoder_id`,
        and the rate named, else `default_rate`."""
        return EdgePart(self.encoder_id, self.g_a, self.entropy, self.default_rate)

    @property
    def server(self) -> ServerPart:
        """The server half (shares parameters with this model): decodes `encoder_id`'s packets
        of any latent size within its limits (a server for untrusted clients narrows it to
        `latent_shape`: ``server.with_latent_shape(model.latent_shape)``)."""
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



"""What one server decoder accepts: the checks every packet meets before it costs decoding work.

```
packet --limits (declared latent size, payload)--> encoder id --> exact latent shape
       --> latent channels --> rate index --> decoder
```

Torch-free and below both its users: the torch server half (`frankensplit.models.parts.ServerPart`)
and its ONNX copy (`frankensplit.runtime.server.onnx_server.OnnxServerPart`) check packets
through one `Accepts`, so either server refuses a packet alike, with the same message; both
take what surrounds it (its properties, copies, batch decoding) from `AcceptsPackets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from frankensplit import bitstream

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

__all__ = ["Accepts", "AcceptsPackets", "check_rate", "describe_rates"]

#: Latent rows and columns accepted by default: the latents of inputs up to 512x512 at stride 8.
_DEFAULT_SIDE = 64


def check_rate(rates: int | None, rate: object, default: int | None = None) -> int | None:
    """Refuse a rate index a model does not have; return the rate to code at.

    Args:
        rates: how many rates the model has (None or 1: one fixed rate, packets carry none).
        rate: the index asked for (None: the fixed rate, or a variable-rate model's ``default``).
        default: a variable-rate model's default rate index, used when ``rate`` is None (None:
            it has none, so a rate must be named; a packet never has one).

    Returns:
        ``rate``, or ``default`` in its place when ``rate`` is None.

    Raises:
        ValueError: naming the rates the model has.
    """
    rate = default if rate is None else rate
    rates = rates or 1
    if rates == 1 and rate is not None:
        raise ValueError(f"this model has one fixed rate; got rate {rate!r}")
    if rates > 1 and (isinstance(rate, bool) or not isinstance(rate, int)
                      or not 0 <= rate < rates):
        raise ValueError(f"this variable-rate model needs a rate index in 0..{rates - 1}, "
                         f"got {rate!r}")
    return rate  # type: ignore[return-value]  # checked: None or an index



def describe_rates(rates: Sequence[float]) -> str:
    """A model's rates as every error and listing names them: ``0 (lambda 64), 1 (lambda 32),
    ...`` (index, then lambda; the index is what a packet carries)."""
    return ", ".join(f"{i} (lambda {v:g})" for i, v in enumerate(rates))


@dataclass(frozen=True)
class Accepts:
    """The packets one decoder takes.

    Attributes:
        model_id: the decoder's own id (messages name it).
        encoder_id: the id its packets carry (a reuse model's: its source's); others are refused.
        channels: latent channels of its entropy model.
        rates: a variable-rate model's rate count (None: one fixed rate).
        latent_shape: the one latent shape (C, h, w) it accepts, derived from the architecture:
            what a server takes from untrusted clients, so no packet makes it run g_s on another
            size. None: any size within ``limits`` (in-process use).
        limits: wire-format limits of every packet. None: latents of inputs up to 512x512
            (C x 64 x 64 symbols), because a 34-byte forged packet may declare any shape within
            the limits and decoding costs time and memory per declared symbol (fuzzing: about
            1 s and 380 MiB at the wire format's generic bound).

    Raises:
        ValueError: a ``latent_shape`` that is not (channels, h, w).
    """

    model_id: str
    encoder_id: str
    channels: int
    rates: int | None = None
    latent_shape: tuple[int, int, int] | None = None
    limits: bitstream.Limits | None = None

    def __post_init__(self) -> None:
        if self.limits is None:
            side = _DEFAULT_SIDE
            object.__setattr__(self, "limits",
                               bitstream.Limits(max_latent_elements=self.channels * side * side))
        if self.latent_shape is not None:
            shape = tuple(int(d) for d in self.latent_shape)
            if len(shape) != 3 or shape[0] != self.channels:
                raise ValueError(f"latent_shape must be ({self.channels}, h, w), got {shape!r}")
            object.__setattr__(self, "latent_shape", shape)

    def parse(self, data: bytes) -> bitstream.Packet:
        """Unpack (within the limits) and check one packet.

        Raises:
            bitstream.BitstreamError: malformed packet, or one this decoder does not take.
        """
        return self._check_model(bitstream.unpack(data, self.limits))

    def check(self, packet: bitstream.Packet) -> bitstream.Packet:
        """Check an unpacked packet: limits, encoder id, latent shape (or channels), rate.

        Raises:
            bitstream.BitstreamError: a packet for another model, latent size or rate, or one
                above the limits.
        """
        bitstream.check_limits(packet, self.limits)  # type: ignore[arg-type]
        return self._check_model(packet)

    def _check_model(self, packet: bitstream.Packet) -> bitstream.Packet:
        if packet.model_id != self.encoder_id:
            raise bitstream.CorruptError(
                f"packet is for model {packet.model_id!r}, this server part decodes "
                f"{self.encoder_id!r}"
            )
        if self.latent_shape is not None and packet.shape != self.latent_shape:
            raise bitstream.CorruptError(
                f"latent shape {packet.shape} does not match model {self.model_id!r}, which "
                f"accepts {self.latent_shape}"
            )
        if packet.shape[0] != self.channels:
            raise bitstream.CorruptError(
                f"packet declares {packet.shape[0]} latent channels, model has {self.channels}"
            )
        try:
            check_rate(self.rates, packet.rate)
        except ValueError as e:
            raise bitstream.CorruptError(f"packet rate {packet.rate!r} does not fit: {e}") from e
        return packet


class AcceptsPackets:
    """What a server half (`frankensplit.models.parts.ServerPart`, `frankensplit.runtime.server.
    onnx_server.OnnxServerPart`) shares around its `Accepts`: the checks, the properties read from
    them, copies with another coder or latent shape, and decoding a batch of one latent shape.

    A subclass sets ``accepts`` and ``coder`` and defines `decode_each` (checked packets -> y_hat
    per packet, or its error) and ``_args`` (its constructor's positional arguments; the
    keyword ones are ``limits``, ``encoder_id``, ``latent_shape`` and ``coder``).
    """

    accepts: Accepts
    coder: Any

    @property
    def encoder_id(self) -> str:
        """The id the packets it decodes carry."""
        return self.accepts.encoder_id

    @property
    def limits(self) -> bitstream.Limits:
        """The wire-format limits every packet is checked against."""
        return self.accepts.limits  # type: ignore[return-value]

    @property
    def latent_shape(self) -> tuple[int, int, int] | None:
        """The one latent shape it accepts (None: any within `limits`)."""
        return self.accepts.latent_shape

    @property
    def rates(self) -> int | None:
        """How many rates a variable-rate model's packets may carry; None: one fixed rate."""
        return self.accepts.rates

    def _args(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def _copy(self, **changes: Any) -> Self:
        kwargs = {"limits": self.limits, "encoder_id": self.encoder_id,
                  "latent_shape": self.latent_shape, "coder": self.coder, **changes}
        return type(self)(*self._args(), **kwargs)  # type: ignore[call-arg]

    def with_coder(self, coder: Any) -> Self:
        """This part (same model, same checks) decoding through ``coder``."""
        return self._copy(coder=coder)

    def with_latent_shape(self, latent_shape: tuple[int, int, int] | None) -> Self:
        """This part (same model and coder) accepting exactly ``latent_shape`` (None: any)."""
        return self._copy(latent_shape=latent_shape)

    def parse(self, data: bytes) -> bitstream.Packet:
        """Unpack and validate one packet against this model (`Accepts.parse`).

        Raises:
            bitstream.BitstreamError: malformed packet, or one for another model / latent size.
        """
        return self.accepts.parse(data)

    def check(self, packet: bitstream.Packet) -> bitstream.Packet:
        """Validate an unpacked packet against this model: its encoder id, latent shape (or
        channels), rate and limits (a server unpacks once to route, then checks here once).

        Raises:
            bitstream.BitstreamError: a packet for another model, latent size or rate, or one
                above the limits.
        """
        return self.accepts.check(packet)

    def decode_each(self, packets: Sequence[bitstream.Packet]) -> list[Any]:
        """Checked packets -> y_hat (C, h, w) per packet, or the error of one that failed."""
        raise NotImplementedError

    def decode_batch(self, packets: Sequence[bytes | bitstream.Packet]) -> list[Any]:
        """Packets (bytes, or packets unpacked already) of one latent shape, each checked, ->
        y_hat (C, h, w) per packet, each decoded at its own rate; ready to stack.

        Raises:
            bitstream.BitstreamError: the first packet that does not fit or does not decode.
            ValueError: packets of several latent shapes.
        """
        parsed = [self.check(p) if isinstance(p, bitstream.Packet) else self.parse(p)
                  for p in packets]
        shapes = {p.shape for p in parsed}
        if len(shapes) != 1:
            raise ValueError(f"packets of one batch must share a latent shape, got {sorted(shapes)}")
        y_hat = self.decode_each(parsed)
        for y in y_hat:
            if isinstance(y, bitstream.BitstreamError):
                raise y
        return y_hat

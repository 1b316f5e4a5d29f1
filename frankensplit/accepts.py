"""What one server decoder accepts: the checks every packet meets before it costs decoding work.

```
packet --limits (declared latent size, payload)--> encoder id --> exact latent shape
       --> latent channels --> rate index --> decoder
```

Torch-free and below both its users: the torch server half (`frankensplit.models.parts.ServerPart`)
and its ONNX copy (`frankensplit.runtime.server.onnx_server.OnnxServerPart`) check packets
through one `Accepts`, so either server refuses a packet alike, with the same message.
"""

from __future__ import annotations

from dataclasses import dataclass

from frankensplit import bitstream

__all__ = ["Accepts", "check_rate"]

#: Latent rows and columns accepted by default: the latents of inputs up to 512x512 at stride 8.
_DEFAULT_SIDE = 64


def check_rate(rates: int | None, rate: object) -> None:
    """Refuse a rate index a model does not have.

    Args:
        rates: how many rates the model has (None or 1: one fixed rate, packets carry none).
        rate: the index asked for (None: the fixed rate).

    Raises:
        ValueError: naming the rates the model has.
    """
    rates = rates or 1
    if rates == 1 and rate is not None:
        raise ValueError(f"this model has one fixed rate; got rate {rate!r}")
    if rates > 1 and (isinstance(rate, bool) or not isinstance(rate, int)
                      or not 0 <= rate < rates):
        raise ValueError(f"this variable-rate model needs a rate index in 0..{rates - 1}, "
                         f"got {rate!r}")


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

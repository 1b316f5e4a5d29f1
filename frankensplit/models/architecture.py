"""Which split model this is: one typed value, stored whole with its weights, and its assembly.

`Architecture` names the method and each registered part; zoo entries, codec files, server
manifests and training configs hold it, and `Architecture.build` alone assembles it:
``ENCODERS[encoder] -> g_a``, ``ENTROPY_MODELS[entropy]``, ``DECODERS[decoder](teacher split) ->
g_s``, the frozen teacher. A new method or blueprint is one registered factory plus one
`Architecture` naming it. Torch-free until `build` (the zoo index imports it).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frankensplit import bitstream
from frankensplit.files import from_dict

if TYPE_CHECKING:
    from frankensplit.backbones import SplitBackbone
    from frankensplit.models.parts import ServerPart
    from frankensplit.models.split import FrankenSplit

__all__ = ["TRAINED_TAIL", "Architecture"]

#: `Architecture.tail` of a model with a trained tail of its own (Entropic Student's second stage).
TRAINED_TAIL = "trained"


@dataclass(frozen=True)
class Architecture:
    """A split model's architecture.

    Attributes:
        teacher: timm name of the backbone.
        method: what evaluations label its rows with ("frankensplit", "entropic_student").
        encoder: ``ENCODERS`` id of g_a.
        entropy: ``ENTROPY_MODELS`` id.
        decoder: ``DECODERS`` id of g_s ("blueprint": the teacher family's FrankenSplit blueprint).
        latent_channels: channels of y.
        split_reduction: stride of the teacher's split (None: FrankenSplit's, 8 for CNNs and 16
            for Swin; 4: Entropic Student's).
        input_size: side of the edge encoder's square input when not the teacher's, with
            ``crop_pct`` its centre crop (the model's preprocessing, `data_config`; the
            teacher's own is never changed). Encoder reuse needs it: a Lite1 decoder of a Lite0
            encoder's packets runs its tail on the 28 x 28 features of 224 px images (one packet
            serves every backbone; a CNN tail ends in global pooling and takes any size, and
            resampling the features to 30 x 30 would add nothing the packet holds).
        crop_pct: see ``input_size``.
        reuses: id of the model whose g_a and entropy model this one runs (encoder reuse): its
            packets carry that id (`FrankenSplit.encoder_id`). The weights are the caller's to
            load; the zoo checks them against a shipped source.
        tail: `TRAINED_TAIL`: a trainable copy of the teacher's tail, stored in the codec file;
            None: the frozen teacher's.
        rates: the lambda grid of a variable-rate model, one lambda per rate index, lowest bit
            rate (largest lambda) first; its entropy model takes a rate per image and packets
            carry the index (`frankensplit.models.variable_rate`). None: one fixed rate.
    """

    teacher: str
    method: str = "frankensplit"
    encoder: str = "frankensplit"
    entropy: str = "factorized"
    decoder: str = "blueprint"
    latent_channels: int = 48
    split_reduction: int | None = None
    input_size: int | None = None
    crop_pct: float | None = None
    reuses: str | None = None
    tail: str | None = None
    rates: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.latent_channels < 1:
            raise ValueError(f"latent_channels must be positive, got {self.latent_channels}")
        if self.split_reduction is not None and self.split_reduction < 1:
            raise ValueError(f"split_reduction must be positive or null, got {self.split_reduction}")
        if (self.input_size, self.crop_pct) != (None, None) and (
                self.input_size is None or self.crop_pct is None or self.input_size < 8
                or not 0 < self.crop_pct <= 1):
            raise ValueError(f"input_size and crop_pct go together (a side >= 8 and a crop in "
                             f"(0, 1]), got {self.input_size!r} and {self.crop_pct!r}")
        if self.reuses is not None:
            bitstream.Packet(self.reuses, (1, 1, 1), b"")  # the id packets carry: wire rules
        if self.rates is not None and (
                len(self.rates) < 2 or len(self.rates) > bitstream.MAX_RATES
                or any(not v > 0 for v in self.rates) or list(self.rates) != sorted(
                    set(self.rates), reverse=True)):
            raise ValueError(f"rates must be 2..{bitstream.MAX_RATES} distinct positive lambdas, "
                             f"largest (lowest bit rate) first, got {self.rates!r}")
        if self.tail not in (None, TRAINED_TAIL):
            raise ValueError(f"tail must be {TRAINED_TAIL!r} or null, got {self.tail!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as plain data (a zoo index entry's, a server manifest's)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def to_json(self) -> str:
        """The codec file's record: ``{"kind": "split", ...}``, sorted keys."""
        return json.dumps({"kind": "split", **self.to_dict()}, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "architecture") -> Architecture:
        """`to_dict`'s data, strictly; records written before the method was a field (the
        shipped zoo and codec files) name it by their encoder.

        Raises:
            ValueError: unknown keys or bad values. TypeError: values of the wrong type.
        """
        return from_dict(cls, {"method": raw.get("encoder", "frankensplit"), **raw}, where)

    @classmethod
    def from_json(cls, text: str, where: str = "architecture") -> Architecture:
        """`to_json`'s record (``where``, its source, names it in errors).

        Raises:
            ValueError: not JSON, not a split model's record, or bad values.
            TypeError: values of the wrong type.
        """
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: the architecture is not JSON: {e}") from e
        kind = raw.pop("kind", None) if isinstance(raw, dict) else raw
        if kind != "split":
            raise ValueError(f"{where} holds a {kind!r} model, not a split model (learned image "
                             "codecs are evaluated with --codecs)")
        return cls.from_dict(raw, where)

    @classmethod
    def split_record(cls, raw: Mapping[str, Any], where: str) -> tuple[Architecture, dict]:
        """A flat record's architecture (its fields inline) and the record's other fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        return (cls.from_dict({k: v for k, v in raw.items() if k in names}, where),
                {k: v for k, v in raw.items() if k not in names})

    def data_config(self, teacher_data_config: Mapping[str, Any]) -> dict[str, Any]:
        """The edge's preprocessing (timm's data config: input_size, crop_pct, interpolation,
        mean, std): the teacher's, with ``input_size`` and ``crop_pct`` replaced when this
        architecture sets them. A new dict; the teacher's is left as it is (its own preprocessing
        still describes the teacher alone).
        """
        config = dict(teacher_data_config)
        if self.input_size is not None:
            config |= {"crop_pct": self.crop_pct,
                       "input_size": (3, self.input_size, self.input_size)}
        return config

    def latent_shape(self, teacher_data_config: Mapping[str, Any]) -> tuple[int, int, int]:
        """(C, h, w) of one image's latent: ``latent_channels`` and the side of the edge's input
        (`data_config` of the teacher's ``teacher_data_config``) over the encoder's reduction,
        rounded up as padded stride-2 convolutions give. Read from the registered encoder class,
        without building or running g_a.

        Raises:
            ValueError: an unknown encoder, or one that does not declare its ``reduction``.
        """
        from frankensplit.models.encoder import ENCODERS

        reduction = getattr(ENCODERS.get(self.encoder), "reduction", None)
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"encoder {self.encoder!r} must declare its reduction (a class "
                             f"attribute), got {reduction!r}")
        side = -(-int(self.data_config(teacher_data_config)["input_size"][-1]) // reduction)
        return (self.latent_channels, side, side)

    def build(
        self, model_id: str, teacher_weights: str | Path | None = "auto",
        backbone: SplitBackbone | None = None,
    ) -> FrankenSplit:
        """The split model, its codec weights seeded from the model id (so that a random codec
        is identical in every process: an edge and a server agree even before training).

        Args:
            model_id: id written into every packet.
            teacher_weights: see :func:`frankensplit.backbones.create_backbone`.
            backbone: an already split ``teacher`` to use (its split stride is then recorded).

        Raises:
            ValueError: unknown ids, a backbone that is not ``teacher`` split at
                ``split_reduction``, an encoder of another latent stride than the decoder's,
                or a model that reuses itself.
        """
        from frankensplit.models.split import FrankenSplit

        arch, backbone, g_a, entropy, g_s = self._assemble(model_id, teacher_weights, backbone)
        tail = None if self.tail is None else copy.deepcopy(backbone.tail).requires_grad_(True)
        return FrankenSplit(model_id, g_a, entropy, g_s, backbone, arch, tail=tail)

    def build_server(
        self, model_id: str, teacher_weights: str | Path | None = "auto",
        whole_teacher: bool = False,
    ) -> tuple[ServerPart, SplitBackbone | None]:
        """The server half alone: entropy model, g_s and the tail, accepting exactly
        `latent_shape` (random codec weights seeded as `build`'s: load a codec file's
        ``entropy``/``g_s``/``tail`` into it).

        g_a is built only so that the seeded random codec equals `build`'s, then dropped; the
        teacher's head is kept only with ``whole_teacher`` (for classifying images).

        Returns:
            The `ServerPart`, and the whole teacher (None without ``whole_teacher``).
        """
        from frankensplit.models.parts import ServerPart

        _, backbone, _, entropy, g_s = self._assemble(model_id, teacher_weights, None)
        tail = backbone.tail if self.tail is None else copy.deepcopy(backbone.tail)
        shape = self.latent_shape(backbone.data_config)
        part = ServerPart(model_id, entropy, g_s, tail, encoder_id=self.reuses or model_id,
                          latent_shape=shape)
        return part, backbone if whole_teacher else None

    def _assemble(
        self, model_id: str, teacher_weights: str | Path | None, backbone: SplitBackbone | None,
    ) -> tuple[Architecture, SplitBackbone, Any, Any, Any]:
        """(architecture as recorded, teacher, g_a, entropy model, g_s): `build`'s parts."""
        import torch

        from frankensplit.backbones import create_backbone
        from frankensplit.blueprints import create_decoder
        from frankensplit.models.encoder import ENCODERS
        from frankensplit.models.entropy import ENTROPY_MODELS

        if self.reuses == model_id:
            raise ValueError(f"model {model_id!r} cannot reuse itself; reuses=None is its own "
                             "encoder")
        arch = self
        if backbone is None:
            backbone = create_backbone(self.teacher, weights=teacher_weights,
                                       split_reduction=self.split_reduction)
        elif backbone.name != self.teacher or self.split_reduction not in (
                None, backbone.spec.reduction):
            raise ValueError(f"backbone {backbone.name} split at stride {backbone.spec.reduction} "
                             f"is not teacher {self.teacher} at {self.split_reduction}")
        else:  # recorded explicitly: the file must rebuild this split
            arch = dataclasses.replace(self, split_reduction=backbone.spec.reduction)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(zlib.crc32(model_id.encode()))
            g_a = ENCODERS.get(self.encoder)(in_channels=3, latent_channels=self.latent_channels)
            rates = {} if self.rates is None else {"rates": len(self.rates)}
            entropy = ENTROPY_MODELS.get(self.entropy)(self.latent_channels, **rates)
            g_s = create_decoder(self.decoder, backbone.spec, self.latent_channels)
        if g_a.reduction != getattr(g_s, "latent_stride", g_a.reduction):
            raise ValueError(f"encoder {self.encoder!r} makes latents of stride {g_a.reduction}, "
                             f"decoder {self.decoder!r} takes stride {g_s.latent_stride}")
        return arch, backbone, g_a, entropy, g_s

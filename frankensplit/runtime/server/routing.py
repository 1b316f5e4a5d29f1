"""Which loaded decoder answers a packet: one edge encoder, several backbones (encoder reuse).

A packet names the encoder that wrote it (its model id), not the backbone that will read it.
FrankenSplit's point is that one edge encoder serves several server backbones: besides the
encoder's own model, a *reuse* model (``reuses``: the encoder's id) decodes the same packets
into another teacher's features. So the server groups its loaded decoders by the encoder whose
packets they take, and the client picks one per request (``?backbone=``)::

    packet (model id E) --> Encoder E --backbone (model id or timm name; default: E's own)-->
        LoadedModel (entropy decoder with E's tables, its g_s, its teacher tail)

Every decoder of one encoder must hold that encoder's entropy model exactly (one set of CDF
tables decodes the packet for all of them) and accept the same latent shape; `group_by_encoder`
refuses to serve a set that does not, at load, instead of decoding some packets wrongly later.

An image (``/v1/classify-image``, codec offloading) names no encoder: `choose_teacher` picks the
whole teacher of a loaded model by the same ``backbone`` parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from frankensplit.runtime.server.loading import LoadedModel

__all__ = ["AmbiguousBackboneError", "Encoder", "UnknownBackboneError", "choose_teacher",
           "group_by_encoder"]


class UnknownBackboneError(LookupError):
    """No decoder of this encoder is the backbone asked for (the server answers 404)."""


class AmbiguousBackboneError(ValueError):
    """The request does not single out one decoder of this encoder (the server answers 400)."""


@dataclass(frozen=True)
class Encoder:
    """The decoders that take one encoder's packets.

    Attributes:
        encoder_id: the id its packets carry.
        decoders: the loaded models decoding them, ordered by model id.
    """

    encoder_id: str
    decoders: tuple[LoadedModel, ...]

    @property
    def default(self) -> LoadedModel | None:
        """The decoder of a request that names no backbone: the encoder's own model (whose id
        the packets carry) when loaded, else the only decoder, else None (the client must choose).

        Why the only one: a server that serves one backbone for an encoder then needs no
        parameter from its clients, and every answer names the model that decoded it.
        """
        own = next((m for m in self.decoders if m.model_id == self.encoder_id), None)
        return own or (self.decoders[0] if len(self.decoders) == 1 else None)

    def _available(self) -> str:
        return ", ".join(f"{m.model_id} ({m.teacher or 'teacher unknown'})" for m in self.decoders)

    def choose(self, backbone: str | None = None) -> LoadedModel:
        """The decoder for ``backbone``: a decoder's model id, or its teacher's timm name
        (None: `default`).

        Raises:
            UnknownBackboneError: no decoder has that model id or teacher.
            AmbiguousBackboneError: several decoders fit (name one by model id).
        """
        if backbone is None:
            if (chosen := self.default) is None:
                raise AmbiguousBackboneError(
                    f"packets of {self.encoder_id!r} are decoded here by several backbones and "
                    f"not by its own model; choose one with ?backbone=: {self._available()}")
            return chosen
        by_id = [m for m in self.decoders if m.model_id == backbone]
        fits = by_id or [m for m in self.decoders if m.teacher == backbone]
        if not fits:
            raise UnknownBackboneError(
                f"no backbone {backbone!r} for packets of {self.encoder_id!r}; served for it: "
                f"{self._available()}")
        if len(fits) > 1:
            raise AmbiguousBackboneError(
                f"backbone {backbone!r} fits {len(fits)} decoders of {self.encoder_id!r}; name one "
                f"by model id: {', '.join(m.model_id for m in fits)}")
        return fits[0]

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/models`` says about this encoder (plain JSON data)."""
        shapes = {m.latent_shape for m in self.decoders if m.latent_shape is not None}
        default = self.default
        return {
            "latent_shape": list(next(iter(shapes))) if shapes else None,
            "default": None if default is None else default.model_id,
            "backbones": [{"model_id": m.model_id, "teacher": m.teacher} for m in self.decoders],
        }


def _same_entropy(a: LoadedModel, b: LoadedModel) -> bool:
    """Whether two decoders hold the same entropy model (`ServingPart.entropy_state`: a torch
    part's parameters and tables, an ONNX part's tables; a torch and an ONNX part never match)."""
    sa, sb = a.part.entropy_state(), b.part.entropy_state()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def group_by_encoder(models: Sequence[LoadedModel]) -> dict[str, Encoder]:
    """Group loaded models by the encoder whose packets they decode (`LoadedModel.encoder_id`).

    Raises:
        ValueError: two models of one id, or decoders of one encoder whose entropy models
            (quantiles, CDF tables) or accepted latent shapes differ.
    """
    groups: dict[str, list[LoadedModel]] = {}
    seen: set[str] = set()
    for model in models:
        if model.model_id in seen:
            raise ValueError(f"model {model.model_id!r} is loaded twice")
        seen.add(model.model_id)
        groups.setdefault(model.encoder_id, []).append(model)
    encoders = {}
    for encoder_id, decoders in sorted(groups.items()):
        first = decoders[0]
        for other in decoders[1:]:
            if not _same_entropy(first, other):
                raise ValueError(
                    f"{first.model_id!r} and {other.model_id!r} both decode packets of "
                    f"{encoder_id!r} but hold different entropy models: one of them would decode "
                    "them into another latent (load the encoder's own g_a and entropy weights)")
        shapes = {m.latent_shape for m in decoders if m.latent_shape is not None}
        if len(shapes) > 1:
            raise ValueError(
                f"decoders of {encoder_id!r} accept different latent shapes: "
                f"{ {m.model_id: m.latent_shape for m in decoders} } (a reuse model must "
                "preprocess like its source: input_size / crop_pct)")
        encoders[encoder_id] = Encoder(encoder_id, tuple(sorted(decoders,
                                                                 key=lambda m: m.model_id)))
    return encoders


def choose_teacher(models: Sequence[LoadedModel], backbone: str | None = None) -> LoadedModel:
    """The loaded model whose whole teacher classifies an image: ``backbone`` a model id or timm
    name (None: the only teacher served; of models with one teacher and input size, the first id).

    Raises:
        UnknownBackboneError | AmbiguousBackboneError: no teacher fits | several (names, sizes).
    """
    served = sorted((m for m in models if m.teacher_model is not None), key=lambda m: m.model_id)
    if not served:
        raise UnknownBackboneError(
            "this server classifies packets only: no whole teacher is loaded for images (served "
            "with --no-images, or the ONNX server half, which holds g_s and the teacher's tail "
            "but not its head: serve /v1/classify-image from the torch server)")
    fits = [m for m in served if m.model_id == backbone] or [
        m for m in served if backbone in (None, m.teacher)]
    available = ", ".join(f"{m.model_id} ({m.teacher})" for m in served)
    if not fits:
        raise UnknownBackboneError(f"no backbone {backbone!r} for images; served: {available}")
    if len({(m.teacher, m.data_config["input_size"]) for m in fits}) > 1:  # type: ignore[index]
        raise AmbiguousBackboneError(f"several teachers fit backbone {backbone!r} for images; "
                                     f"choose one with ?backbone=: {available}")
    return fits[0]

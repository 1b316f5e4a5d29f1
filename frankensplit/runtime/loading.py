"""Load what the server runs: a `ServerPart` plus the latent shape it accepts.

A model is named either by a zoo id (``fs-lite0-untrained``, trained ids from ``zoo/index.json``)
or by a server bundle folder written by ``frankensplit export``; a bundle works for any model id,
registered in the zoo or not, because its manifest holds the model's `Architecture`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from frankensplit.backbones import SplitBackbone
from frankensplit.models.split import FrankenSplit, ServerPart
from frankensplit.models.zoo import MODELS, create_model, load_weights
from frankensplit.runtime.bundle import Preprocess, ServerManifest, read_manifest

__all__ = ["LoadedModel", "load_server_model", "resolve_model_spec", "served_model"]


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve.

    Attributes:
        model_id: the model's own id (answers and metrics name it).
        part: entropy decoder, g_s and the teacher tail.
        latent_shape: (C, H, W) of the packets it accepts; others are refused before decoding,
            so a packet cannot make the server run g_s on an arbitrarily large latent.
        teacher: timm name of the backbone whose tail it runs (None: not known, a bare part);
            clients may choose a decoder by it (``?backbone=``, `runtime.routing`).
        teacher_model: that whole, unsplit teacher (with its preprocessing, ``data_config``):
            what classifies images on ``/v1/classify-image`` (None: not served for images).
    """

    model_id: str
    part: ServerPart
    latent_shape: tuple[int, int, int]
    teacher: str | None = None
    teacher_model: SplitBackbone | None = None

    @property
    def encoder_id(self) -> str:
        """The id of the packets it decodes: its own, or a reuse model's source's."""
        return self.part.encoder_id


def served_model(model: FrankenSplit) -> LoadedModel:
    """The server half of an in-memory model and its latent shape at the teacher's input size."""
    crop = Preprocess.from_data_config(model.teacher.data_config).crop
    with torch.no_grad():
        y = model.g_a(torch.zeros(1, 3, crop, crop))  # (1, C, crop/r, crop/r)
    shape = tuple(int(d) for d in y.shape[1:])
    return LoadedModel(model.model_id, model.server, shape,  # type: ignore[arg-type]
                       model.teacher.name, model.teacher)


def resolve_model_spec(spec: str) -> str:
    """Check that ``spec`` names a zoo model or a server bundle, cheaply (no weights loaded).

    Returns:
        "bundle" or "zoo".

    Raises:
        ValueError: neither a server bundle folder nor a known model id.
    """
    path = Path(spec)
    if path.is_dir():
        manifest = read_manifest(path, verify=False)
        if not isinstance(manifest, ServerManifest):
            raise ValueError(f"{path} is a {manifest.format}; serve needs a server bundle")
        return "bundle"
    MODELS.get(spec)  # raises ValueError listing the known ids
    return "zoo"


def load_server_model(spec: str, teacher_weights: str | Path | None = "auto") -> LoadedModel:
    """Load a zoo model id or a server bundle folder for serving.

    Args:
        spec: model id or server bundle folder.
        teacher_weights: see :func:`frankensplit.backbones.create_backbone`.

    Raises:
        ValueError: unknown id, bad bundle (checksums are verified) or weights that do not fit.
    """
    if resolve_model_spec(spec) == "zoo":
        return served_model(create_model(spec, teacher_weights=teacher_weights))
    folder = Path(spec)
    manifest = read_manifest(folder)
    assert isinstance(manifest, ServerManifest)
    model = manifest.architecture.build(manifest.model_id, teacher_weights)
    loaded = served_model(load_weights(model, folder / manifest.codec_file,
                                       manifest.files.get(manifest.codec_file)))
    if loaded.latent_shape != manifest.latent_shape:
        raise ValueError(
            f"{folder}: the model produces latents {loaded.latent_shape}, manifest says "
            f"{manifest.latent_shape}"
        )
    return loaded

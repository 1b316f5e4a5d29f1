"""Loading models: zoo ids and codec files -> split models ready to code.

The index (ids, entries) is :mod:`frankensplit.models.zoo_index`, whose names are re-exported
here; the assembly is `Architecture.build`; the file format is :mod:`frankensplit.models.codec_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from frankensplit.files import read_safetensors
from frankensplit.models.architecture import Architecture
from frankensplit.models.codec_file import codec_metadata, load_codec
from frankensplit.models.split import FrankenSplit, ServerPart
from frankensplit.models.zoo_index import MODELS, ZOO_DIR, ModelEntry, default_model_id, list_models

if TYPE_CHECKING:
    from frankensplit.backbones import SplitBackbone

__all__ = ["MODELS", "ZOO_DIR", "ModelEntry", "check_reuse", "create_model", "default_model_id",
           "file_architecture", "list_models", "load_model_file", "load_server_part",
           "load_weights"]


def create_model(
    model_id: str,
    teacher_weights: str | Path | None = "auto",
    codec_weights: str | Path | None = None,
) -> FrankenSplit:
    """A zoo model (or a trained codec file), ready to code (eval mode, CDF tables built).

    A zoo model carries its entry's default rate (`ModelEntry.default_rate`,
    `FrankenSplit.default_rate`); a codec file records none, so its model has none.

    Args:
        model_id: an id from :func:`list_models`, or the path of a codec file written by
            ``frankensplit train`` (see :func:`load_model_file`).
        teacher_weights: see :func:`frankensplit.backbones.create_backbone`.
        codec_weights: override the shipped codec weights with a file of your own.

    Raises:
        ValueError: unknown id, or weights that cannot be loaded.
    """
    if model_id not in MODELS and Path(model_id).is_file():
        if codec_weights is not None:
            raise ValueError(f"{model_id} is a codec file already; codec_weights must be None")
        return load_model_file(model_id, teacher_weights)
    entry = MODELS.get(model_id)
    model = entry.architecture.build(model_id, teacher_weights)
    model.default_rate = entry.default_rate  # an index of the entry's rates: the same grid
    if codec_weights is not None:
        return load_weights(model, codec_weights)
    return load_weights(model, entry.weights and ZOO_DIR / entry.weights, entry.sha256)


def load_model_file(path: str | Path, teacher_weights: str | Path | None = "auto") -> FrankenSplit:
    """The split model a codec file describes, with its weights, ready to code.

    ``save_codec`` records the model id and the `Architecture` in the file's metadata, so a
    training run's ``best.safetensors`` is evaluated like a zoo id: ``frankensplit eval --model
    PATH``.

    Raises:
        ValueError: unreadable file, no (or a non-split) architecture record, or weights that do
            not fit it.
    """
    model_id, arch = file_architecture(path)
    return load_weights(arch.build(model_id, teacher_weights), path)


def file_architecture(path: str | Path) -> tuple[str, Architecture]:
    """The model id and `Architecture` a codec file records (its header only; no tensor read).

    Raises:
        ValueError: unreadable file, or no (or a non-split) architecture record.
    """
    meta = codec_metadata(path)
    try:
        return meta["model_id"], Architecture.from_json(meta["architecture"], str(path))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} records no usable architecture ({e!r}); load it into a zoo "
                         "model with codec_weights (--codec-weights) instead") from e


def load_weights(
    model: FrankenSplit, path: str | Path | None = None, sha256: str | None = None
) -> FrankenSplit:
    """A freshly built ``model`` with the codec weights of ``path`` (checksum ``sha256``; None:
    its seeded random codec), ready to code: eval mode, CDF tables, reuse checked (`check_reuse`).

    Raises:
        ValueError: see `load_codec` and `check_reuse`.
    """
    if path is not None:
        load_codec(model, path, sha256=sha256)
    model.eval()
    model.update(force=path is None)  # loaded tables are kept: they were saved with the codec
    check_reuse(model)
    return model


def load_server_part(
    architecture: Architecture,
    model_id: str,
    path: str | Path | None = None,
    sha256: str | None = None,
    teacher_weights: str | Path | None = "auto",
    whole_teacher: bool = False,
) -> tuple[ServerPart, SplitBackbone | None]:
    """The server half of a model (`Architecture.build_server`) with the codec weights of
    ``path`` (checksum ``sha256``; None: the seeded random codec), ready to decode: eval mode,
    CDF tables, reuse checked. Only the entropy model, g_s (and an own tail) are read: no g_a
    tensor is loaded. The part's own tail is a copy of the teacher's tail made when it is built,
    so the tail tensors a shipped file leaves to the teacher come from it (`load_codec`):
    ``teacher_weights`` must be the weights the file was shipped against, which the file's
    digest of those tensors checks.

    Returns:
        The part, and the whole teacher (only with ``whole_teacher``: for classifying images).

    Raises:
        ValueError: see `load_codec` and `check_reuse`.
    """
    part, teacher = architecture.build_server(model_id, teacher_weights, whole_teacher)
    if path is not None:
        parts = ("entropy", "g_s", *(() if architecture.tail is None else ("tail",)))
        load_codec(part, path, sha256=sha256, parts=parts)
    part.eval()
    part.entropy.update(force=path is None)  # loaded tables are kept: saved with the codec
    check_reuse(part)
    return part, teacher


def check_reuse(model: FrankenSplit | ServerPart) -> None:
    """Check that a reuse model's g_a and entropy model (a server part: its entropy model) are
    its source's, tensor for tensor.

    Why: its packets name the source (`FrankenSplit.encoder_id`), and a server decodes them with
    any decoder of that source; an encoder or CDF table that differs in one value would write
    packets under the source's id that the source's tables decode into another latent, silently.
    Checked against the source's shipped weights (a zoo id with a weights file); a source
    without one (an untrained id, a model known only from its own file) cannot be checked here.

    Raises:
        ValueError: a tensor of g_a or the entropy model that differs from the source's.
    """
    source = None if model.encoder_id == model.model_id else model.encoder_id
    if source is None or source not in MODELS or (entry := MODELS.get(source)).weights is None:
        return
    path = ZOO_DIR / entry.weights
    parts = tuple(p for p in ("g_a", "entropy") if hasattr(model, p))  # a server part: entropy
    theirs = read_safetensors(path, parts=parts)[0]
    ours = {f"{p}.{k}": v for p in parts for k, v in getattr(model, p).state_dict().items()}
    differ = sorted(k for k in ours.keys() | theirs.keys()
                    if k not in ours or k not in theirs or not torch.equal(ours[k], theirs[k]))
    if differ:
        raise ValueError(f"model {model.model_id!r} reuses {source!r}, but its {differ[0]} "
                         f"(and {len(differ) - 1} more tensors) differ from {path.name}'s; "
                         "load the source's g_a and entropy model into it")

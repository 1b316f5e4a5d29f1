"""The codec file: safetensors of g_a, the entropy model (CDF tables included), g_s and an own
tail, never the teacher (always loaded from its own source); its metadata records the model id,
the teacher and the `Architecture` (``"architecture"``), so that the file alone rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from frankensplit.files import file_sha256, read_safetensors
from frankensplit.models.architecture import Architecture
from frankensplit.models.split import FrankenSplit, ServerPart

__all__ = ["CODEC_PARTS", "codec_fingerprint", "codec_metadata", "codec_state", "load_codec",
           "load_codec_state", "model_parts", "save_codec"]

CODEC_PARTS = ("g_a", "entropy", "g_s")


def save_codec(model: FrankenSplit, path: str | Path, metadata: dict[str, str] | None = None) -> str:
    """Write the codec weights (CDF tables rebuilt first); returns the file's sha256."""
    from safetensors.torch import save_file

    model.update(force=True)
    # The teacher is recorded so that a later run can tell whether g_s fits its own teacher.
    meta = {"model_id": model.model_id, "format": "frankensplit-codec-1",
            "teacher": model.teacher.name, **(metadata or {})}
    arch = model.architecture  # an image codec's is plain data
    meta["architecture"] = (arch.to_json() if isinstance(arch, Architecture)
                            else json.dumps(arch, sort_keys=True))
    save_file(codec_state(model), str(path), metadata=meta)
    return file_sha256(path)


def load_codec(
    model: FrankenSplit | ServerPart, path: str | Path, sha256: str | None = None,
    parts: tuple[str, ...] | None = None,
) -> None:
    """Load codec weights into ``model`` (strict), after verifying the checksum when given.

    Args:
        model: a split model, or a server part (then name its ``parts``: ``("entropy", "g_s")``,
            and "tail" for a model with a tail of its own); only those tensors are read.
        path: the codec file.
        sha256: its expected checksum.
        parts: the parts to load (None: all the model's, see `load_codec_state`).

    Raises:
        ValueError: missing, corrupt or truncated file, checksum mismatch, or weights that do not fit.
    """
    if sha256 is not None and Path(path).is_file() and (actual := file_sha256(path)) != sha256:
        raise ValueError(f"checksum mismatch for {path}: expected {sha256}, got {actual}")
    load_codec_state(model, read_safetensors(path, parts=parts)[0], parts, source=str(path))


def codec_metadata(path: str | Path) -> dict[str, str]:
    """The metadata written by `save_codec` (model id, format, teacher, lambda...).

    Raises:
        ValueError: missing or unreadable file.
    """
    return read_safetensors(path, tensors=False)[1]


def model_parts(model: FrankenSplit) -> tuple[str, ...]:
    """The parts a model's codec file holds: ``CODEC_PARTS``, and "tail" for a model with a
    tail of its own (Entropic Student's second stage)."""
    return CODEC_PARTS if getattr(model, "tail", None) is None else (*CODEC_PARTS, "tail")


def codec_state(model: FrankenSplit) -> dict[str, torch.Tensor]:
    """The codec's tensors (g_a, entropy model with its CDF tables, g_s, an own tail), without
    the teacher."""
    parts = model_parts(model)
    return {
        k: v.detach().contiguous().clone()
        for k, v in model.state_dict().items()
        if k.split(".", 1)[0] in parts
    }


def codec_fingerprint(model: FrankenSplit) -> str:
    """Hex sha256 of the codec's tensors (names, dtypes, shapes and values of
    :func:`codec_state`): two models answer alike only if their fingerprints are equal.

    The evaluation's record log keys results by model id; this tells it when an id's weights have
    changed since its records were measured (a retrained model shipped under the same id).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(codec_state(model).items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.cpu().numpy().tobytes())
    return digest.hexdigest()


def load_codec_state(
    model: FrankenSplit | ServerPart,
    state: dict[str, torch.Tensor],
    parts: tuple[str, ...] | None = None,
    source: str = "state",
) -> None:
    """Load the ``parts`` of a codec state into ``model``, strictly for those parts.

    ``parts=("g_a", "entropy")`` takes a trained encoder and entropy model for another teacher
    (encoder reuse: one encoder, many servers).

    Raises:
        ValueError: missing or unexpected tensors, or shapes that do not fit.
    """
    known = model_parts(model)
    parts = known if parts is None else parts
    for part in parts:
        if part not in known:
            raise ValueError(f"unknown codec part {part!r}; expected one of {known}")
        prefix = part + "."
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not sub:
            raise ValueError(f"{source} holds no {part} tensors")
        try:
            getattr(model, part).load_state_dict(sub, strict=True)
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"{source}: {part} does not fit {model.model_id}: {e}") from e
    unknown = {k.split(".", 1)[0] for k in state} - set(known)
    if unknown:
        raise ValueError(f"{source} holds unexpected tensors under {sorted(unknown)}")

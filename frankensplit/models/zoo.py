"""Model zoo: stable model ids -> architecture, teacher and (optionally) shipped codec weights.

A zoo entry is data, listed without torch by :mod:`frankensplit.models.zoo_index` (whose names
are re-exported here). Codec weights are safetensors files holding only g_a, the entropy model
(including its CDF tables) and g_s; the teacher is always loaded from its own source (offline
package, timm, or a checkpoint path), never copied into our files.
"""

from __future__ import annotations

import copy
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from frankensplit import bitstream
from frankensplit.backbones import SplitBackbone, create_backbone
from frankensplit.blueprints import create_decoder
from frankensplit.models.encoder import ENCODERS
from frankensplit.models.entropy import ENTROPY_MODELS
from frankensplit.models.split import FrankenSplit
from frankensplit.models.zoo_index import (
    MODELS,
    ZOO_DIR,
    ModelEntry,
    default_model_id,
    entry_dict,
    file_sha256,
    list_models,
)

__all__ = [
    "CODEC_PARTS",
    "MODELS",
    "ZOO_DIR",
    "ModelEntry",
    "build_model",
    "check_reuse",
    "codec_metadata",
    "codec_state",
    "create_model",
    "default_model_id",
    "entry_dict",
    "file_sha256",
    "list_models",
    "load_codec",
    "load_codec_state",
    "load_model_file",
    "model_parts",
    "save_codec",
]

T = TypeVar("T")


def build_model(
    model_id: str,
    teacher: str | SplitBackbone,
    encoder: str = "frankensplit",
    entropy: str = "factorized",
    latent_channels: int = 48,
    teacher_weights: str | Path | None = "auto",
    decoder: str = "blueprint",
    split_reduction: int | None = None,
    input_size: int | None = None,
    crop_pct: float | None = None,
    reuses: str | None = None,
    trained_tail: bool = False,
) -> FrankenSplit:
    """Assemble a split model with codec weights seeded from the model id.

    The seed makes a random (untrained) codec identical in every process, so an edge and a server
    started separately agree even before training.

    Args:
        model_id: id written into every packet.
        teacher: timm name, or an already split backbone.
        encoder: ``ENCODERS`` id.
        entropy: ``ENTROPY_MODELS`` id.
        latent_channels: channels of y.
        teacher_weights: see :func:`frankensplit.backbones.create_backbone`.
        decoder: ``DECODERS`` id ("blueprint" or "entropic_student").
        split_reduction: stride of the teacher's split (None: FrankenSplit's).
        input_size: side of the square image the edge encoder takes, and crop_pct its centre
            crop, when not the teacher's own (None: the teacher's timm preprocessing). Encoder
            reuse needs it: a Lite1 decoder reusing a Lite0 encoder decodes packets of 224 px
            images, so its tail runs on the 28 x 28 features the one packet holds (a CNN tail
            ends in global pooling and takes any size; resampling features to 30 x 30 would
            add nothing the packet does not hold).
        trained_tail: give the model a trainable copy of the teacher's tail, stored in its codec
            file (Entropic Student's second stage; ``TrainConfig.train_tail``).
        reuses: id of the model whose g_a and entropy model this one runs (encoder reuse):
            its packets carry that id (`FrankenSplit.encoder_id`). Recorded only; the weights are
            the caller's to load (``load_codec_state(..., parts=("g_a", "entropy"))``), and
            `create_model` / `load_model_file` check them against a shipped source.

    Raises:
        ValueError: unknown ids, a given backbone split elsewhere than ``split_reduction``, an
            encoder whose latent stride is not the one the decoder takes, or ``reuses`` that is
            not a packet id or is the model's own id.
    """
    if reuses is not None:
        bitstream.Packet(reuses, (1, 1, 1), b"")  # the id packets will carry: wire-format rules
        if reuses == model_id:
            raise ValueError(f"model {model_id!r} cannot reuse itself; reuses=None is its own "
                             "encoder")
    if isinstance(teacher, SplitBackbone):
        backbone = teacher
        if split_reduction is not None and backbone.spec.reduction != split_reduction:
            raise ValueError(f"backbone {backbone.name} is split at stride "
                             f"{backbone.spec.reduction}, split_reduction is {split_reduction}")
        split_reduction = backbone.spec.reduction  # recorded explicitly: the file must rebuild it
    else:
        backbone = create_backbone(teacher, weights=teacher_weights,
                                   split_reduction=split_reduction)
    if input_size is not None or crop_pct is not None:
        if input_size is None or crop_pct is None or input_size < 8 or not 0 < crop_pct <= 1:
            raise ValueError(f"input_size and crop_pct go together (a side >= 8 and a crop in "
                             f"(0, 1]), got {input_size!r} and {crop_pct!r}")
        backbone.data_config = {**backbone.data_config, "input_size": (3, input_size, input_size),
                                "crop_pct": crop_pct}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(model_id.encode()))
        g_a = ENCODERS.get(encoder)(in_channels=3, latent_channels=latent_channels)
        em = ENTROPY_MODELS.get(entropy)(latent_channels)
        g_s = create_decoder(decoder, backbone.spec, latent_channels)
    if g_a.reduction != getattr(g_s, "latent_stride", g_a.reduction):
        raise ValueError(f"encoder {encoder!r} makes latents of stride {g_a.reduction}, decoder "
                         f"{decoder!r} takes stride {g_s.latent_stride}")
    architecture = {"kind": "split", "teacher": backbone.name, "encoder": encoder,
                    "entropy": entropy, "latent_channels": latent_channels, "decoder": decoder,
                    "split_reduction": split_reduction}
    if input_size is not None:  # recorded only when set: older files keep their exact metadata
        architecture.update(input_size=input_size, crop_pct=crop_pct)
    if reuses is not None:  # likewise
        architecture["reuses"] = reuses
    tail = None
    if trained_tail:
        tail = copy.deepcopy(backbone.tail).requires_grad_(True)
        architecture["tail"] = "trained"
    return FrankenSplit(model_id, g_a, em, g_s, backbone, architecture, tail=tail)


def save_codec(model: FrankenSplit, path: str | Path, metadata: dict[str, str] | None = None) -> str:
    """Write the codec weights (g_a, entropy model with CDF tables, g_s) as safetensors.

    Returns:
        the file's sha256.
    """
    from safetensors.torch import save_file

    model.update(force=True)
    state = codec_state(model)
    # The teacher is recorded so that a later run can tell whether g_s fits its own teacher.
    meta = {"model_id": model.model_id, "format": "frankensplit-codec-1",
            "teacher": model.teacher.name, **(metadata or {})}
    if getattr(model, "architecture", None):  # what load_model_file rebuilds the model from
        meta["architecture"] = json.dumps(model.architecture, sort_keys=True)
    save_file(state, str(path), metadata=meta)
    return file_sha256(path)


def load_codec(model: FrankenSplit, path: str | Path, sha256: str | None = None) -> None:
    """Load codec weights into ``model`` (strict), after verifying the checksum when given.

    Raises:
        ValueError: missing, corrupt or truncated file, checksum mismatch, or weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"codec weights not found: {path}")
    if sha256 is not None and (actual := file_sha256(path)) != sha256:
        raise ValueError(f"checksum mismatch for {path}: expected {sha256}, got {actual}")
    state = _read_codec_file(path, lambda f: {k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    load_codec_state(model, state, source=str(path))


def _read_codec_file(path: Path, read: Callable[[Any], T]) -> T:
    """``read(handle)`` on a safetensors file; anything safetensors raises for a damaged file
    (several types) becomes one ValueError naming the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return read(f)
    except Exception as e:
        raise ValueError(f"cannot read codec weights {path}: {e}") from e


CODEC_PARTS = ("g_a", "entropy", "g_s")


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


def codec_metadata(path: str | Path) -> dict[str, str]:
    """The metadata written by `save_codec` (model id, format, teacher, lambda...).

    Raises:
        ValueError: missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"codec weights not found: {path}")
    return _read_codec_file(path, lambda f: dict(f.metadata() or {}))


def load_codec_state(
    model: FrankenSplit,
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


def create_model(
    model_id: str,
    teacher_weights: str | Path | None = "auto",
    codec_weights: str | Path | None = None,
) -> FrankenSplit:
    """A zoo model (or a trained codec file), ready to code (eval mode, CDF tables built).

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
    model = build_model(
        model_id, entry.teacher, entry.encoder, entry.entropy, entry.latent_channels,
        teacher_weights=teacher_weights, decoder=entry.decoder,
        split_reduction=entry.split_reduction, input_size=entry.input_size,
        crop_pct=entry.crop_pct, reuses=entry.reuses,
    )
    if codec_weights is not None:
        load_codec(model, codec_weights)
    elif entry.weights is not None:
        load_codec(model, ZOO_DIR / entry.weights, sha256=entry.sha256)
    model.eval()
    model.update(force=codec_weights is None and entry.weights is None)
    check_reuse(model)
    return model


def load_model_file(path: str | Path, teacher_weights: str | Path | None = "auto") -> FrankenSplit:
    """The split model a codec file describes, with its weights, ready to code.

    ``save_codec`` records the model id and the architecture (teacher, encoder, entropy model,
    latent channels, decoder, split stride) in the file's metadata, so a training run's
    ``best.safetensors`` is evaluated like a zoo id: ``frankensplit eval --model PATH``.

    Raises:
        ValueError: unreadable file, no (or a non-split) architecture record, or weights that do
            not fit it.
    """
    meta = codec_metadata(path)
    try:
        arch = json.loads(meta["architecture"])
        if arch["kind"] != "split":
            raise ValueError(f"{path} holds a {arch['kind']!r} model, not a split model "
                             "(learned image codecs are evaluated with --codecs)")
        model = build_model(
            meta["model_id"], arch["teacher"], arch["encoder"], arch["entropy"],
            int(arch["latent_channels"]), teacher_weights=teacher_weights,
            decoder=arch["decoder"], split_reduction=arch["split_reduction"],
            input_size=arch.get("input_size"), crop_pct=arch.get("crop_pct"),
            reuses=arch.get("reuses"), trained_tail=arch.get("tail") == "trained",
        )
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} records no usable architecture ({e!r}); load it into a zoo "
                         "model with codec_weights (--codec-weights) instead") from e
    load_codec(model, path)
    model.eval()
    model.update()  # no-op: the tables were saved with the codec
    check_reuse(model)
    return model


def check_reuse(model: FrankenSplit) -> None:
    """Check that a reuse model's g_a and entropy model are its source's, tensor for tensor.

    Why: its packets name the source (`FrankenSplit.encoder_id`), and a server decodes them with
    any decoder of that source; an encoder or CDF table that differs in one value would write
    packets under the source's id that the source's tables decode into another latent, silently.
    Checked against the source's shipped weights (a zoo id with a weights file); a source
    without one (an untrained id, a model known only from its own file) cannot be checked here.

    Raises:
        ValueError: a tensor of g_a or the entropy model that differs from the source's.
    """
    source = model.architecture.get("reuses")
    if source is None or source not in MODELS or (entry := MODELS.get(source)).weights is None:
        return
    path = ZOO_DIR / entry.weights
    theirs = _read_codec_file(path, lambda f: {k: f.get_tensor(k) for k in f.keys()  # noqa: SIM118
                                               if k.split(".", 1)[0] in ("g_a", "entropy")})
    ours = {k: v for k, v in codec_state(model).items() if k.split(".", 1)[0] in ("g_a", "entropy")}
    differ = sorted(k for k in ours.keys() | theirs.keys()
                    if k not in ours or k not in theirs or not torch.equal(ours[k], theirs[k]))
    if differ:
        raise ValueError(f"model {model.model_id!r} reuses {source!r}, but its {differ[0]} "
                         f"(and {len(differ) - 1} more tensors) differ from {path.name}'s; "
                         "load the source's g_a and entropy model into it")

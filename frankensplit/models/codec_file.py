"""The codec file: safetensors of g_a, the entropy model (CDF tables included), g_s and an own
tail, never the teacher (always loaded from its own source); its metadata records the model id,
the teacher and the `Architecture` (``"architecture"``), so that the file alone rebuilds it.

An own tail may be stored in float16 (``"tail_dtype"`` in the metadata, see `save_codec`); it is
read back into the model's float32 tail. A shipped own tail also leaves out every tensor equal to
the teacher's (``"tail_from_teacher"``: their names; ``"tail_from_teacher_sha256"``: their digest),
which loading takes from the teacher. Everything else is stored as the model holds it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from frankensplit.files import file_sha256, read_safetensors
from frankensplit.models.architecture import Architecture
from frankensplit.models.split import FrankenSplit, ServerPart

__all__ = ["CODEC_PARTS", "TAIL_DTYPES", "TAIL_FROM_TEACHER", "codec_fingerprint", "codec_metadata",
           "codec_state", "load_codec", "load_codec_state", "model_parts", "save_codec",
           "stored_tail_dtype", "tail_from_teacher"]

CODEC_PARTS = ("g_a", "entropy", "g_s")

#: How an own tail's floating tensors may be stored (the metadata's ``"tail_dtype"``).
TAIL_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}

#: The metadata's JSON list of the own tail's tensors left out of the file as the teacher's
#: (`save_codec`'s ``omit_teacher_tail``); the key + ``"_sha256"``: their digest.
TAIL_FROM_TEACHER = "tail_from_teacher"


def save_codec(
    model: FrankenSplit, path: str | Path, metadata: dict[str, str] | None = None,
    tail_dtype: str = "float32", update_tables: bool = True, omit_teacher_tail: bool = False,
) -> str:
    """Write the codec weights; returns the file's sha256.

    Args:
        model: the model (its teacher is not stored).
        path: the file to write.
        metadata: more metadata (lambda...), beside the model id, teacher and architecture.
        tail_dtype: how a model's own tail is stored, a key of `TAIL_DTYPES`; recorded as the
            metadata's ``"tail_dtype"`` for a model with an own tail (ignored without one).
            Training writes float32, its working precision. ``"float16"`` is for shipping:
            Entropic Student's fine-tuned copy of the teacher's tail is most of the file (18.7
            of lite0's 19.9 MB in float32), and float16 halves it (10.5 MB); its 11-bit
            significand moves a weight by at most 2^-11 of itself, which moves lite0's logits
            by about 1e-3 of their largest value, far less than a dev-set evaluation can
            resolve. Only floating tensors are cast (integer buffers such as
            ``num_batches_tracked`` stay as they are), and only the tail's: g_a, the entropy
            model and g_s stay float32, so packets and CDF tables are exactly the trained ones.
            The shipped file is the one that is evaluated, so its figures describe the stored
            weights.
        update_tables: rebuild the CDF tables first (after training: tables that match the
            trained entropy model). False keeps the loaded ones bit for bit (re-saving a trained
            file: tables rebuilt on another device may round a CDF entry differently).
        omit_teacher_tail: leave out every tensor of an own tail that equals the teacher's
            (``model.teacher.tail``) bit for bit, recording their sorted names as the metadata's
            `TAIL_FROM_TEACHER` (a JSON list) and their digest (names, dtypes, shapes, values)
            as its ``"tail_from_teacher_sha256"``; for shipping, beside float16. Why this is
            exact: the codec file never holds the teacher, which is always loaded from its own
            source, so loading takes the omitted tensors from it (`load_codec`) and recovers them
            bit for bit, never rounded to ``tail_dtype``. What is left out is what fine-tuning did
            not change: the batch-norm statistics (the tail trains in eval mode) and any part
            the training run froze (``freeze: [tail.8]``, lite0's classifier Linear: 1.28M of
            the tail's 4.68M values). The comparison is against the weights this model's teacher
            was built with (the real ones for a file to ship), and the file is only loadable
            with a teacher whose tensors of those names have the recorded digest: other teacher
            weights are refused, never silently mixed in. Ignored without an own tail.

    Raises:
        ValueError: a ``tail_dtype`` that is no key of `TAIL_DTYPES`.
    """
    from safetensors.torch import save_file

    if tail_dtype not in TAIL_DTYPES:
        raise ValueError(f"tail_dtype must be one of {sorted(TAIL_DTYPES)}, got {tail_dtype!r}")
    if update_tables:
        model.update(force=True)
    # The teacher is recorded so that a later run can tell whether g_s fits its own teacher.
    meta = {"model_id": model.model_id, "format": "frankensplit-codec-1",
            "teacher": model.teacher.name, **(metadata or {})}
    for key in ("tail_dtype", TAIL_FROM_TEACHER, f"{TAIL_FROM_TEACHER}_sha256"):
        meta.pop(key, None)  # a re-saved file's old record: this write decides it
    arch = model.architecture  # an image codec's is plain data
    meta["architecture"] = (arch.to_json() if isinstance(arch, Architecture)
                            else json.dumps(arch, sort_keys=True))
    state = codec_state(model)
    if "tail" in model_parts(model):
        meta["tail_dtype"] = tail_dtype
        if omit_teacher_tail:
            same = _equal_to_teacher(model)
            meta[TAIL_FROM_TEACHER] = json.dumps(sorted(same))
            meta[f"{TAIL_FROM_TEACHER}_sha256"] = _digest(same)
            state = {k: v for k, v in state.items()
                     if not (k.startswith("tail.") and k.removeprefix("tail.") in same)}
        dtype = TAIL_DTYPES[tail_dtype]
        state = {k: v.to(dtype) if k.startswith("tail.") and v.is_floating_point() else v
                 for k, v in state.items()}
    save_file(state, str(path), metadata=meta)
    return file_sha256(path)


def load_codec(
    model: FrankenSplit | ServerPart, path: str | Path, sha256: str | None = None,
    parts: tuple[str, ...] | None = None,
) -> None:
    """Load codec weights into ``model`` (strict), after verifying the checksum when given.

    An own tail stored in float16 is cast back to float32; the tail tensors a shipped file leaves
    to the teacher (`tail_from_teacher`) are taken from it, checked against the recorded digest.
    A file of neither record loads every tensor as stored.

    Args:
        model: a split model, or a server part (then name its ``parts``: ``("entropy", "g_s")``,
            and "tail" for a model with a tail of its own); only those tensors are read.
        path: the codec file.
        sha256: its expected checksum.
        parts: the parts to load (None: all the model's, see `load_codec_state`).

    Raises:
        ValueError: missing, corrupt or truncated file, checksum mismatch, weights that do not
            fit, or tail tensors left to another teacher than this model's (`_with_teacher_tail`).
    """
    if sha256 is not None and Path(path).is_file() and (actual := file_sha256(path)) != sha256:
        raise ValueError(f"checksum mismatch for {path}: expected {sha256}, got {actual}")
    state, meta = read_safetensors(path, parts=parts)
    state = _widen_tail(model, state, stored_tail_dtype(meta, path), str(path))
    if "tail" in (model_parts(model) if parts is None else parts):
        state = _with_teacher_tail(model, state, meta, str(path))
    load_codec_state(model, state, parts, source=str(path))


def _equal_to_teacher(model: FrankenSplit) -> dict[str, torch.Tensor]:
    """The own tail's tensors equal to the teacher's tail's, bit for bit, dtype included (by
    name, as the teacher holds them)."""
    teacher = model.teacher.tail.state_dict()
    return {name: teacher[name].detach().contiguous() for name, t in model.tail.state_dict().items()
            if name in teacher and t.dtype == teacher[name].dtype
            and torch.equal(t, teacher[name])}


def tail_from_teacher(metadata: dict[str, str], path: str | Path) -> list[str] | None:
    """The own tail's tensors a codec file leaves to the teacher (its metadata's
    `TAIL_FROM_TEACHER`); None where none is recorded (every tail tensor is stored).

    Raises:
        ValueError: a record that is not a JSON list of names (named, with the file).
    """
    raw = metadata.get(TAIL_FROM_TEACHER)
    if raw is None:
        return None
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: its metadata's {TAIL_FROM_TEACHER} is not a JSON list of "
                         f"tensor names: {raw[:60]!r}")
    return names


def _with_teacher_tail(
    model: FrankenSplit | ServerPart, state: dict[str, torch.Tensor], meta: dict[str, str],
    source: str,
) -> dict[str, torch.Tensor]:
    """``state`` with the own tail's tensors the file leaves to the teacher (`tail_from_teacher`)
    taken from it: a split model's ``teacher.tail``; a server part holds no teacher, and its own
    tail is a copy of the teacher's made when it was built (`Architecture.build_server`). The
    digest recorded by `save_codec` checks that they are the tensors the file was shipped
    against (the same teacher weights). A file without the record: ``state`` unchanged.

    Raises:
        ValueError: a listed name the tail does not have, one both stored and listed, a tail
            tensor neither stored nor listed, or a teacher whose tensors differ (each naming the
            file).
    """
    listed = tail_from_teacher(meta, source)
    if listed is None or getattr(model, "tail", None) is None:
        return state  # no record, or no tail to fill: load_codec_state judges the rest
    teacher = getattr(model, "teacher", None)
    ours = model.tail.state_dict()
    theirs = ours if teacher is None else teacher.tail.state_dict()
    stored = {k.removeprefix("tail.") for k in state if k.startswith("tail.")}
    if unknown := [n for n in listed if n not in ours or n not in theirs]:
        raise ValueError(f"{source}: {TAIL_FROM_TEACHER} lists tail tensor {unknown[0]!r}, "
                         f"which the tail of {model.model_id} does not have")
    if both := sorted(stored.intersection(listed)):
        raise ValueError(f"{source}: tail tensor {both[0]} is stored and also listed in "
                         f"{TAIL_FROM_TEACHER}")
    if missing := sorted(ours.keys() - stored - set(listed)):
        raise ValueError(f"{source}: tail tensor {missing[0]} (and {len(missing) - 1} more) is "
                         f"neither stored nor listed in {TAIL_FROM_TEACHER}")
    recovered = {n: theirs[n] for n in listed}
    recorded = meta.get(f"{TAIL_FROM_TEACHER}_sha256")
    if (actual := _digest(recovered)) != recorded:
        raise ValueError(f"{source}: its tail leaves {len(listed)} tensors to teacher "
                         f"{meta.get('teacher')} as shipped (sha256 {str(recorded)[:12]}...), but "
                         f"this teacher's differ ({actual[:12]}...): load it with the teacher "
                         "weights it was shipped against")
    return {**state, **{f"tail.{n}": t.detach().clone() for n, t in recovered.items()}}


def stored_tail_dtype(metadata: dict[str, str], path: str | Path) -> str:
    """The dtype a codec file's own tail is stored in (its metadata's ``"tail_dtype"``; float32
    where none is recorded: files written before it was).

    Raises:
        ValueError: a recorded dtype that is no key of `TAIL_DTYPES` (named, with the file).
    """
    name = metadata.get("tail_dtype", "float32")
    if name not in TAIL_DTYPES:
        raise ValueError(f"{path}: unsupported tail_dtype {name!r} in its metadata; expected one "
                         f"of {sorted(TAIL_DTYPES)}")
    return name


def _widen_tail(
    model: FrankenSplit | ServerPart, state: dict[str, torch.Tensor], stored: str, source: str,
) -> dict[str, torch.Tensor]:
    """``state`` with the own tail's floating tensors checked to be of the ``stored`` dtype (a
    key of `TAIL_DTYPES`) and cast to the dtype of the model's tensor of the same name (float32).

    Why explicit: ``load_state_dict`` would cast silently, so a file whose tensors contradict its
    metadata (a float32 tail recorded as float16, or a bfloat16 one) would load without a word.

    Raises:
        ValueError: a floating tail tensor of another dtype than the metadata records.
    """
    tail = getattr(model, "tail", None)
    ours = {} if tail is None else tail.state_dict()
    out = dict(state)
    for key, tensor in state.items():
        name = key.removeprefix("tail.")
        if name == key or not tensor.is_floating_point():
            continue
        if tensor.dtype != TAIL_DTYPES[stored]:
            raise ValueError(f"{source}: tail tensor {name} is {tensor.dtype}, but the file "
                             f"records tail_dtype {stored!r}")
        if name in ours:  # an unknown name is left for load_codec_state to refuse
            out[key] = tensor.to(ours[name].dtype)
    return out


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
    return _digest(codec_state(model))


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """Hex sha256 of named tensors: names (sorted), dtypes, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
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

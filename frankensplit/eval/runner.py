"""The measuring loop: every image through every operating point, at batch size 1, with real coding.

Per image and per teacher::

    image --crop--> x_crop (PIL, teacher input size) --normalise--> x (1, 3, H, W)
    teacher(x)                                           -> reference logits (computed once, shared)
    split model:  edge.encode(x) -> packet -> server: decode_latent -> g_s -> tail -> logits
    codec q:      encode(x_crop) -> bytes -> decode -> x_hat crop -> normalise -> teacher -> logits

Split models are FrankenSplit's and the Entropic Student baseline's; each model's rows carry its
``method`` (its `Architecture`'s: "frankensplit" or "entropic_student"), so the two form separate
curves and FrankenSplit's savings are reported against Entropic Student like against any codec.
A variable-rate model (`Architecture.rates`) is measured at every rate of its grid, one operating
point per rate (setting ``<model id>@<lambda>``), as a curve of its own (`point_method`).
Codecs include the learned image codec baseline (``bmshj2018-factorized:SOURCE``), whose rows also
get ``bits_estimated`` from its latent's likelihoods.

The server half is run as ``decode_latent`` then ``g_s`` then ``tail``, which is exactly
``server.decode`` split in two so that entropy decoding and the networks are timed separately
(the end-to-end latency model of the paper needs both). Times are wall-clock at batch size 1 in the
calling process's torch thread setting.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from frankensplit.backbones import SplitBackbone
from frankensplit.codecs import EstimatesBits, ImageCodec, create_codec, encode_decode_timed
from frankensplit.data import crop_transform, load_image, normalize_transform
from frankensplit.eval.records import RecordLog
from frankensplit.eval.schema import (
    FRANKENSPLIT_METHOD,
    TEACHER_METHOD,
    TEACHER_SETTING,
    variable_rate_method,
)
from frankensplit.models.split import FrankenSplit
from frankensplit.models.zoo_index import rate_setting

__all__ = ["FRANKENSPLIT_METHOD", "OperatingPoint", "evaluate", "format_quality", "model_points",
           "plan", "point_method"]


def format_quality(quality: float) -> str:
    """A codec quality as the ``setting`` text: ``50`` for 50.0, ``0.5`` for 0.5."""
    return f"{float(quality):g}"


@dataclass(frozen=True)
class OperatingPoint:
    """One measured configuration: a method at one setting, feeding one teacher.

    Attributes:
        teacher: timm name of the teacher.
        method: ``"teacher"``, a split model's method (``"frankensplit"``,
            ``"entropic_student"``) or a codec name.
        setting: ``"uncompressed"``, the model id, or the codec quality as text.
        quality: the codec quality as a number (None for the teacher and split models).
        rate: a variable-rate model's rate index (None otherwise).
    """

    teacher: str
    method: str
    setting: str
    quality: float | None = None
    rate: int | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """(teacher, method, setting)."""
        return (self.teacher, self.method, self.setting)


@dataclass
class _Group:
    """Everything measured against one teacher at one preprocessing (`teacher_label`)."""

    teacher: SplitBackbone  # that of the first model with this teacher
    data_config: dict[str, Any]  # its rows' preprocessing: its models' (`teacher_label`)
    models: dict[tuple[str, str], FrankenSplit] = field(default_factory=dict)  # (method, setting)
    codecs: dict[str, ImageCodec] = field(default_factory=dict)
    points: list[OperatingPoint] = field(default_factory=list)


def plan(
    models: Sequence[FrankenSplit], codecs: Mapping[str, Sequence[float] | None]
) -> list[OperatingPoint]:
    """The operating points of a run, teacher by teacher in the order the models are given.

    Args:
        models: split models (one point each); models sharing a teacher share its rows.
        codecs: codec name (or ``NAME:SOURCE``) -> qualities (None: the codec's default sweep),
            measured with every distinct teacher.

    Raises:
        ValueError: no model, a duplicate model id, an unknown codec, two codecs of one name, or
            an invalid or repeated quality.
    """
    return [p for g in _groups(models, codecs).values() for p in g.points]


def _groups(
    models: Sequence[FrankenSplit], codecs: Mapping[str, Sequence[float] | None]
) -> dict[str, _Group]:
    if not models:
        raise ValueError("evaluation needs at least one split model (FrankenSplit, "
                         "Entropic Student)")
    ids = [m.model_id for m in models]
    if len(set(ids)) != len(ids):
        raise ValueError(f"model ids must be distinct, got {ids}")
    created = _codecs(codecs, {TEACHER_METHOD, *(m.method for m in models)})
    sweeps = {name: tuple(qs) if qs is not None else created[name].qualities
              for name, qs in zip(created, codecs.values())}
    probe = Image.new("RGB", (16, 16), (128, 64, 32))
    for name, qs in sweeps.items():
        if not qs:
            raise ValueError(f"codec {name!r} has an empty quality list")
        if len({format_quality(q) for q in qs}) != len(qs):
            raise ValueError(f"codec {name!r} has a repeated quality in {list(qs)}")
        for q in qs:  # a bad quality fails now, not after hours of measuring
            created[name].encode(probe, q)
    groups: dict[str, _Group] = {}
    for model in models:
        name = teacher_label(model)
        if name not in groups:
            groups[name] = _Group(model.teacher, model.data_config, codecs=created)
            groups[name].points.append(OperatingPoint(name, TEACHER_METHOD, TEACHER_SETTING))
        elif model.data_config != groups[name].data_config:
            raise ValueError(f"{model.model_id} preprocesses as {model.data_config}, not as the "
                             f"other models of {name}: {groups[name].data_config}")
        for point in model_points(model, name):
            groups[name].models[(point.method, point.setting)] = model
            groups[name].points.append(point)
    for name, group in groups.items():
        group.points += [OperatingPoint(name, c, format_quality(q), float(q))
                         for c, qs in sweeps.items() for q in qs]
    return groups


def point_method(model: FrankenSplit) -> str:
    """The ``method`` of a split model's rows: its architecture's, with ``_vr`` appended for a
    variable-rate model, so that its curve is drawn and compared beside the fixed-rate models'."""
    return model.method if model.rates is None else variable_rate_method(model.method)


def model_points(model: FrankenSplit, teacher: str) -> list[OperatingPoint]:
    """A split model's operating points: one (setting: its id), or one per rate of a
    variable-rate model (setting ``<id>@<lambda>``, lowest bit rate first)."""
    if model.rates is None:
        return [OperatingPoint(teacher, model.method, model.model_id)]
    method = point_method(model)
    return [OperatingPoint(teacher, method, rate_setting(model.model_id, lmbda), rate=r)
            for r, lmbda in enumerate(model.rates)]


def teacher_label(model: FrankenSplit) -> str:
    """The teacher rows a model is measured beside: its backbone at the model's preprocessing
    (`FrankenSplit.data_config`), ``<backbone>@<size>px`` when that is not the backbone's own.

    The teacher and codec rows of a model are measured at the model's input, not the teacher's
    own: each row of a group is then the same image at the same preprocessing, so a codec's bytes
    and top-1 compare with the split model's like for like. A reuse decoder takes its source
    encoder's input (Lite1 at 224 px, not its own 240), so two models of one backbone at
    different input sizes get separate teacher and codec rows, ``tf_efficientnet_lite1@224px``
    beside ``tf_efficientnet_lite1``; sharing the first one's preprocessing would measure the
    other at the wrong size.
    """
    config, name = model.data_config, model.teacher.name
    own = config == model.teacher.data_config
    return name if own else f"{name}@{config['input_size'][-1]}px"


def _codecs(specs: Iterable[str], taken: set[str]) -> dict[str, ImageCodec]:
    """Codec name -> codec for ``--codecs`` entries (``NAME`` or ``NAME:SOURCE``), in order."""
    created: dict[str, ImageCodec] = {}
    for spec in specs:
        codec = create_codec(spec)
        if codec.name in created or codec.name in taken:
            raise ValueError(f"codec {spec!r}: method name {codec.name!r} is already in this run")
        created[codec.name] = codec
    return created


def _top5(logits: Tensor) -> list[int]:
    return [int(c) for c in logits[0].topk(min(5, logits.shape[1])).indices]


def _ms(t0: float, t1: float) -> float:
    return (t1 - t0) * 1000.0


def _frankensplit(model: FrankenSplit, x: Tensor, rate: int | None,
                  latents: dict[str, tuple[Tensor, float]]) -> dict[str, Any]:
    """One split model's operating point on one image. A variable-rate model's g_a runs once per
    image (``latents`` caches y and its time per model id): every rate's ``encode_ms`` is that
    g_a time plus its own entropy coding, what a device coding the image at that rate spends."""
    edge, server = model.edge, model.server
    if rate is None:
        t0 = time.perf_counter()
        (packet,) = edge.encode(x)
    else:
        if model.model_id not in latents:  # (y, seconds of g_a), shared by the model's rates
            start = time.perf_counter()
            latents[model.model_id] = (model.g_a(x), time.perf_counter() - start)
        y, g_a_s = latents[model.model_id]
        t0 = time.perf_counter() - g_a_s  # encode_ms = g_a + this rate's coding
        (packet,) = edge.pack(y, rate)
    t1 = time.perf_counter()
    y_hat = server.decode_latent([packet])  # (1, C, h, w)
    t2 = time.perf_counter()
    logits = server.classify(y_hat)  # == server.decode([packet])
    t3 = time.perf_counter()
    if rate is None:
        bits = float(model.latent_bits(y_hat)[0])  # == estimated_bits(x), without g_a again
    else:  # the decoded latent is scaled back by the inverse gain: its bits come from y
        bits = float(model.latent_bits(latents[model.model_id][0], rate)[0])
    return {"pred": _top5(logits), "bytes": len(packet), "bits_estimated": bits,
            "encode_ms": _ms(t0, t1), "decode_ms": _ms(t1, t2), "infer_ms": _ms(t2, t3)}


def _codec(group: _Group, codec: ImageCodec, quality: float, crop: Any, norm: Any) -> dict:
    coded = encode_decode_timed(codec, crop, quality)
    t0 = time.perf_counter()
    logits = group.teacher(norm(coded.x_hat).unsqueeze(0))  # (1, num_classes)
    t1 = time.perf_counter()
    bits = codec.estimated_bits(crop, quality) if isinstance(codec, EstimatesBits) else None
    return {"pred": _top5(logits), "bytes": len(coded.data), "bits_estimated": bits,
            "encode_ms": coded.encode_s * 1000.0, "decode_ms": coded.decode_s * 1000.0,
            "infer_ms": _ms(t0, t1)}


def _measure_image(
    group: _Group, todo: Sequence[OperatingPoint], path: Path, index: int, label: int,
    labelled: bool,
) -> list[dict[str, Any]]:
    """Records of one image for the operating points ``todo`` of one teacher."""
    config = group.data_config
    crop = crop_transform(config)(load_image(path))
    norm = normalize_transform(config)
    x = norm(crop).unsqueeze(0)  # (1, 3, H, W)
    t0 = time.perf_counter()
    teacher_pred = _top5(group.teacher(x))
    teacher_ms = _ms(t0, time.perf_counter())
    reference = label if labelled else teacher_pred[0]
    records, latents = [], {}
    for p in todo:
        if p.method == TEACHER_METHOD:
            fields = {"pred": teacher_pred, "bytes": None, "bits_estimated": None,
                      "encode_ms": None, "decode_ms": None, "infer_ms": teacher_ms}
        elif (p.method, p.setting) in group.models:
            fields = _frankensplit(group.models[(p.method, p.setting)], x, p.rate, latents)
        else:
            fields = _codec(group, group.codecs[p.method], float(p.quality), crop, norm)
        records.append({
            "teacher": p.teacher, "method": p.method, "setting": p.setting, "index": index,
            "file": path.name, "label": label, "reference": reference,
            "correct1": fields["pred"][0] == reference, "correct5": reference in fields["pred"],
            "pixels": crop.width * crop.height, **fields,
        })
    return records


def evaluate(
    models: Sequence[FrankenSplit],
    files: Sequence[str | Path],
    labels: Sequence[int],
    codecs: Mapping[str, Sequence[float] | None],
    log: RecordLog,
    progress: bool = False,
) -> list[OperatingPoint]:
    """Measure every operating point on every image, logging records; skips what ``log`` holds.

    Args:
        models: split models (FrankenSplit, Entropic Student) in eval mode, CDF tables built.
        files: image files.
        labels: ILSVRC label per file, -1 when unknown. When any is unknown, every method is
            scored by agreement with the uncompressed teacher's top-1 instead.
        codecs: codec name (or ``NAME:SOURCE``) -> qualities (None: default sweep).
        log: where records go; records already in it are not measured again.
        progress: show a tqdm bar on stderr.

    Returns:
        The operating points, in report order.

    Raises:
        ValueError: mismatched files/labels, or what :func:`plan` raises.
    """
    from tqdm.auto import tqdm

    if len(files) != len(labels):
        raise ValueError(f"{len(files)} files but {len(labels)} labels")
    groups = _groups(models, codecs)
    labelled = all(int(label) >= 0 for label in labels)
    with torch.no_grad(), tqdm(total=len(files), desc="eval", unit="img",
                               disable=not progress) as bar:
        for index, path in enumerate(files):
            for group in groups.values():
                todo = [p for p in group.points if (*p.key, index) not in log]
                if todo:
                    log.append(_measure_image(group, todo, Path(path), index, int(labels[index]),
                                              labelled))
            bar.update(1)
    return [p for g in groups.values() for p in g.points]

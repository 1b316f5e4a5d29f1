"""Typed training configs: plain YAML -> dataclasses, ``--set key=value`` overrides, strict keys.

No ``eval`` and no YAML tags: values are parsed with ``yaml.safe_load``. Unknown keys are errors that
name the key and the allowed ones. A lambda sweep is a list (``lmbda: [0.5, 1, 2, 4]``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from frankensplit.files import from_dict
from frankensplit.models.architecture import TRAINED_TAIL, Architecture
from frankensplit.sources import git_ref

__all__ = [
    "DEFAULT_ARCHITECTURE", "MOVED", "DataConfig", "StageConfig", "TrainConfig", "load_config",
    "to_dict",
]


@dataclass
class DataConfig:
    """Where images come from.

    Attributes:
        train: training image folders (labels not needed).
        val: validation folder or labels.csv (None: no validation, last checkpoint is kept).
        train_limit: use only the first N training images (sorted), for quick runs.
        val_limit: use only the first N validation images.
        workers: DataLoader worker processes.
    """

    train: list[str] = field(default_factory=list)
    val: str | None = None
    train_limit: int | None = None
    val_limit: int | None = None
    workers: int = 2


@dataclass
class StageConfig:
    """One training stage (the paper: stage 1 plain distillation, stage 2 saliency-guided).

    Attributes:
        name: label for logs and checkpoints.
        epochs: passes over the data (an epoch is capped at ``steps_per_epoch`` when set).
        batch_size: images per step (per process under DDP).
        lr: Adam learning rate (a fresh optimizer per stage).
        gamma: ExponentialLR decay per epoch.
        view: "train" (RandomResizedCrop + flip), "patch" (eval-scale random patches + flip,
            cheap CPU training), or "fixed" (Resize(256,256) -> CenterCrop, aligned with saliency).
        patch_size: side of the random patches for view "patch".
        saliency: weight the distortion by the precomputed saliency maps (needs view "fixed").
        steps_per_epoch: cap on steps per epoch (None: the whole dataset).
        schedule: "exp": ExponentialLR, ``lr * gamma^epoch`` (the paper's); "cosine": per-step
            cosine decay from ``lr`` to 0 over the stage after ``warmup_steps`` of linear warm-up
            (needs ``steps_per_epoch``; ``gamma`` is unused).
        warmup_steps: linear warm-up steps of the cosine schedule.
    """

    name: str = "distill"
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    gamma: float = 0.61054
    view: str = "train"
    patch_size: int = 128
    saliency: bool = False
    steps_per_epoch: int | None = None
    schedule: str = "exp"
    warmup_steps: int = 0


#: The architecture every config starts from (the section's fields a config leaves out keep it).
DEFAULT_ARCHITECTURE = Architecture("tf_efficientnet_lite0")


@dataclass
class TrainConfig:
    """A training run; ``lmbda`` may be a list (one model per value).

    Attributes:
        objective: what the run trains and its loss, an ``OBJECTIVES`` id
            (`frankensplit.train.objectives`, which also checks the options each one takes).
            "head": head distillation of the teacher's features at the split, a split model
            (FrankenSplit; Entropic Student's first stage), with output distillation
            (``kd_weight``) and saliency stages as options. "tail": Entropic Student's second
            stage (Matsubara et al., WACV 2022): g_s and the model's own copy of the teacher's
            tail (``architecture.tail: trained``, stored in its codec file; the teacher stays
            untouched for the reference rows) fine-tuned to the teacher's logits, ``KL(teacher
            || student)`` per image at T = 1, instead of the head distortion; labels are not used
            (the training pool is unlabelled; the paper adds cross-entropy); needs g_a and the
            entropy model frozen (the bitstream stays the first stage's); tail batch norms keep
            the teacher's statistics (eval mode). "image": rate + lmbda * 255^2 * MSE on the
            image crop, CompressAI's objective, for the learned image codec baseline (Balle et
            al. 2018 factorized prior) whose reconstructions feed the whole teacher.
        architecture: the trained split model (`Architecture`: teacher, method, encoder,
            entropy, decoder, latent_channels, split_reduction, input_size, crop_pct, reuses,
            tail, rates), the YAML section ``architecture:``; it is recorded whole in the trained
            codec file. ``reuses`` (encoder reuse) needs ``init_codec``'s g_a and entropy model
            frozen; ``input_size``/``crop_pct`` are then the source's. ``rates``: a
            variable-rate model's lambda grid (largest first; entropy ``gained_factorized``),
            one model trained at every rate at once, a rate drawn per sample and its bits
            weighted by that rate's lambda; ``lmbda`` is then unused. The image codec takes
            ``teacher`` and ``latent_channels`` (M) only. A section in a file names its
            ``teacher``; ``--set architecture.<key>=...`` without a section starts from
            `DEFAULT_ARCHITECTURE`.
        teacher_weights: "auto", "offline", "online" or a checkpoint path.
        hidden_channels: N, the image codec's hidden channels (objective "image" only; 128 as in
            CompressAI's bmshj2018-factorized qualities 1-5).
        clip_grad_norm: clip the codec's gradient to this norm every step (None: no clipping;
            CompressAI's training script clips its image codecs at 1.0).
        model_id: id pattern of the produced models; ``{lmbda}`` is replaced by the value.
        lmbda: rate weight(s) (sum-reduced loss: bits are total bits per batch).
        stages: the training stages, in order.
        data: the data.
        init_codec: codec weights (safetensors) to start from, e.g. a trained lite0 model, or
            ``git:<commit>:<path>``, the file as that commit of this clone holds it (a zoo
            model's parent, replaced since: `frankensplit.sources`). Its g_a and entropy
            model are always loaded; its g_s for the same teacher, or when "g_s" is frozen (a
            new teacher needs a new blueprint decoder: encoder reuse).
        init_g_s: also start g_s from ``init_codec`` when it was trained for another teacher:
            every tensor whose shape fits is loaded, the rest keep their seeded init (Lite2's
            48-channel output layer against Lite0's 40). A warm start for encoder reuse and for
            a new backbone's end-to-end codec: the source decoder's upsampling and feature
            structure transfer, a fresh one first spends its budget learning the features' scale.
            A path (or ``git:<commit>:<path>``) instead of ``true``: g_s from that codec file,
            loaded the same way over whatever ``init_codec`` gave. The case: a reuse decoder
            refitted after its source encoder was retrained, g_a and the entropy model from the
            new source (``init_codec``), g_s from the decoder trained on the old one.
        freeze: parts kept frozen ("g_a", "entropy", "g_s"): encoder reuse trains only "g_s".
            A model with its own tail (``architecture.tail: trained``) may also freeze modules
            of that tail, ``tail.<path>`` (the module path inside the tail, as
            ``model.get_submodule`` takes it; lite0 split at stride 4: ``tail.8`` is the
            classifier Linear); a path the built tail does not have is refused when the model
            is built. A frozen tail tensor stays the teacher's, and a shipped file leaves it to
            the teacher (`frankensplit.models.codec_file.save_codec`).
        aux_lr: Adam learning rate of the entropy model's quantile (aux) loss.
        seed: seed of everything random (init, shuffling, augmentation).
        device: "cpu", "cuda" or "cuda:N".
        amp: bfloat16 autocast of g_a, g_s, the teacher's forward and the output-distillation
            tail (the entropy model stays float32: `MixedPrecisionForward`). On CPU only where
            oneDNN has native bfloat16 (AVX512-BF16 or AMX; refused elsewhere): g_a's and the
            teacher's convolutions then run about 2x faster, the blueprint's depthwise ones not
            (benchmarks/train_throughput.py).
        threads: torch intra-op threads (None: torch's default).
        saliency_cache: folder of the saliency map cache (stage with ``saliency: true``).
        val_every: validate every N epochs.
        kd_weight: kappa of the output-distillation term, ``kappa * numel(h_i) * KL(teacher ||
            student logits)`` per image through the frozen tail (T = 1); 0 is the paper's
            objective. Scaled by the feature size so that kappa compares with the per-element
            squared error of the distortion. Our extension, not FrankenSplit's (objective "head").
        channel_norm: weight the distortion per channel by the inverse variance of the teacher's
            features (mean weight 1; estimated once from 64 training images). Our extension.
        channels_last: run g_s in channels_last memory format while training on CPU (oneDNN's
            depthwise convolutions run about 2x faster forward + backward that way, measured by
            benchmarks/train_throughput.py). g_a stays contiguous: its 3-channel 1x1 stride-2
            projection crashes conv backward in channels_last on this torch build (PLATFORM.md).
        frozen_norm: keep g_s's batch-norm statistics as loaded (eval mode) while training; only
            their affine weights train. A variable-rate model's batches mix rates, so batch
            statistics (and the running averages evaluation uses) would mix every rate's
            quantisation noise (benchmarks/vr_ablation.py arm ``frozen_norm``).
    """

    objective: str = "head"
    architecture: Architecture = DEFAULT_ARCHITECTURE
    teacher_weights: str = "auto"
    hidden_channels: int = 128
    clip_grad_norm: float | None = None
    model_id: str = "fs-lite0-l{lmbda}"
    lmbda: list[float] = field(default_factory=lambda: [1.0])
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    data: DataConfig = field(default_factory=DataConfig)
    init_codec: str | None = None
    init_g_s: bool | str = False
    freeze: list[str] = field(default_factory=list)
    aux_lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    threads: int | None = None
    saliency_cache: str | None = None
    val_every: int = 1
    kd_weight: float = 0.0
    channel_norm: bool = False
    channels_last: bool = True
    frozen_norm: bool = False

    def validate(self) -> None:
        """Check values that the types alone do not (an objective's own options:
        `frankensplit.train.objectives.create_objective`)."""
        if not self.lmbda or any(v <= 0 for v in self.lmbda):
            raise ValueError(f"lmbda must be a non-empty list of positive numbers, got {self.lmbda}")
        if not self.stages:
            raise ValueError("at least one stage is needed")
        for s in self.stages:
            if s.view not in ("train", "patch", "fixed"):
                raise ValueError(f"stage {s.name}: view {s.view!r} is not train, patch or fixed")
            if s.saliency and s.view != "fixed":
                raise ValueError(f"stage {s.name}: saliency needs view 'fixed' (aligned maps)")
            if s.epochs < 1 or s.batch_size < 1 or s.lr <= 0:
                raise ValueError(f"stage {s.name}: epochs, batch_size and lr must be positive")
            if s.schedule not in ("exp", "cosine"):
                raise ValueError(f"stage {s.name}: schedule {s.schedule!r} is not exp or cosine")
            if s.schedule == "cosine" and s.steps_per_epoch is None:
                raise ValueError(f"stage {s.name}: schedule cosine needs steps_per_epoch")
            if s.warmup_steps < 0:
                raise ValueError(f"stage {s.name}: warmup_steps must be >= 0")
        if self.kd_weight < 0:
            raise ValueError(f"kd_weight must be >= 0, got {self.kd_weight}")
        self._validate_freeze()
        if {"g_a", "entropy", "g_s"} <= set(self.freeze):
            raise ValueError("freeze: g_a, entropy and g_s are all frozen, nothing would train")
        arch = self.architecture
        if arch.reuses is not None and not ({"g_a", "entropy"} <= set(self.freeze)
                                            and self.init_codec):
            raise ValueError("architecture.reuses needs the source's g_a and entropy model: "
                             "init_codec and freeze: [g_a, entropy]")
        if self.init_g_s is True and not self.init_codec:
            raise ValueError("init_g_s needs init_codec (the codec whose g_s to start from)")
        if isinstance(self.init_g_s, str):
            if self.init_g_s.strip().lower() in ("", "true", "false", "yes", "no"):
                raise ValueError(f"init_g_s: expected true, false (unquoted) or a codec file, "
                                 f"got the string {self.init_g_s!r}")
            git_ref(self.init_g_s)  # a malformed git:<commit>:<path> is refused here
        if arch.rates is not None and "{lmbda}" in self.model_id:
            raise ValueError("a variable-rate model (architecture.rates) is one model: its "
                             "model_id has no '{lmbda}'")
        if "{lmbda}" not in self.model_id and len(self.lmbda) > 1:
            raise ValueError("model_id must contain '{lmbda}' when sweeping several lambdas")
        self._validate_model()

    def _validate_freeze(self) -> None:
        """``freeze``'s entries: codec parts, or ``tail.<path>`` of an own tail (whether the path
        exists is checked on the built model: `frankensplit.train.start`)."""
        tail = [p for p in self.freeze if p.startswith("tail.")]
        bad = set(self.freeze) - {"g_a", "entropy", "g_s"} - set(tail)
        if bad:
            raise ValueError(f"freeze: unknown parts {sorted(bad)}; expected g_a, entropy, g_s "
                             f"or tail.<module path> (with architecture.tail: {TRAINED_TAIL})")
        if tail and self.architecture.tail != TRAINED_TAIL:
            raise ValueError(f"freeze: {tail[0]} is a module of an own tail, which this model "
                             f"does not have (architecture.tail: {TRAINED_TAIL})")
        if malformed := [p for p in tail if "" in p.split(".")]:
            raise ValueError(f"freeze: {malformed[0]!r} is no module path (tail.<name>[.<name>])")

    def _validate_model(self) -> None:
        """The decoder id and the optimiser's numbers (the architecture checked itself)."""
        from frankensplit.blueprints import DECODERS

        DECODERS.get(self.architecture.decoder)  # unknown id: ValueError listing the known ones
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be positive or null, got {self.clip_grad_norm}")
        if self.hidden_channels < 1:
            raise ValueError(f"hidden_channels must be positive, got {self.hidden_channels}")


#: Keys of the flat schema (before the ``architecture:`` section) and where each is now: a config
#: that still names one is refused with its new place, never read as something else.
MOVED = {
    **{f.name: f"architecture.{f.name}" for f in dataclasses.fields(Architecture)},
    "train_tail": f"objective: tail with architecture.tail: {TRAINED_TAIL}",
}


def _moved(key: str, where: str, item: str | None = None) -> ValueError:
    """The one-line error for a key of the flat schema: its new place (``item``: the ``--set``
    item that named it, answered with the one to give instead)."""
    if item is None:
        return ValueError(f"{where}: {key!r} moved to {MOVED[key]}")
    fix = (f"--set architecture.{item}" if key != "train_tail"
           else f"--set objective=tail --set architecture.tail={TRAINED_TAIL}")
    return ValueError(f"--set {item}: {key!r} moved to {MOVED[key]}: {fix}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain data (for writing next to checkpoints)."""
    return dataclasses.asdict(cfg)


def _child(node: Any, part: str, key: str) -> Any:
    """The item ``part`` of a section (a mapping, or a list addressed by index) for ``--set key``."""
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise ValueError(f"--set {key}: {part!r} is not an index of a list of {len(node)}")
        return node[int(part)]
    if not isinstance(node, dict):
        raise TypeError(f"--set {key}: {part!r} is addressed inside {node!r}, not a section")
    return node.setdefault(part, {})


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted ``key`` (list items by index: ``stages.0.epochs``) in raw config data."""
    *parents, last = key.split(".")
    node: Any = data
    for part in parents:
        node = _child(node, part, key)
    if isinstance(node, list):
        _child(node, last, key)  # validates the index
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise TypeError(f"--set {key}: {last!r} is addressed inside {node!r}, not a section")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config and apply ``key=value`` overrides (dotted keys, YAML values).

    ``stages.0.epochs=1`` addresses list items by index; ``lmbda=[0.5,1]`` sets a sweep.

    A key of the flat schema (``teacher: ...`` at the top, ``--set teacher=...``) is refused with
    its place in the ``architecture:`` section (`MOVED`).

    Raises:
        ValueError: missing file, invalid YAML, unknown or moved keys, bad indices or bad values.
        TypeError: a value of the wrong type, a missing ``architecture.teacher``, or a key
            addressed inside a non-section.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise TypeError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    moved = [k for k in data if k in MOVED]
    if moved:
        raise _moved(moved[0], str(path))
    if "stages" not in data and any(o.startswith("stages.") for o in overrides or []):
        data["stages"] = [to_dict(StageConfig())]
    if "architecture" not in data and any(o.startswith("architecture.") for o in overrides or []):
        data["architecture"] = DEFAULT_ARCHITECTURE.to_dict()
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        if key.strip().split(".")[0] in MOVED:
            raise _moved(key.strip().split(".")[0], "--set", item.strip())
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item}: invalid YAML value: {e}") from e
        _set(data, key.strip(), value)
    cfg = from_dict(TrainConfig, data)
    cfg.validate()
    return cfg

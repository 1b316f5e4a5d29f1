"""What one lambda's training run is built from before its first step (`_start` -> `_Run`).

The model (`_build`: the objective's seeded codec, an init codec's warm start, a separate g_s,
frozen parts), the forward training runs it through (`MixedPrecisionForward` under ``amp``, DDP),
the device, the validation loader and the per-channel distortion weights. It is set up once per
lambda and read by every stage and epoch, so it lives apart from the loop
(`frankensplit.train.loop`), which is left as stages, epochs, steps and checkpoints. The loop calls
`_start` through its own namespace, so tests that wrap ``loop._start`` still see every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from frankensplit.config import TrainConfig
from frankensplit.data import ImageDataset
from frankensplit.files import read_safetensors
from frankensplit.losses import channel_weights
from frankensplit.models.codec_file import CODEC_PARTS, load_codec_state
from frankensplit.models.split import FrankenSplit
from frankensplit.sources import local_weights
from frankensplit.train.distributed import DistInfo
from frankensplit.train.objectives import Objective, TrainModel, create_objective
from frankensplit.train.variable_rate import warm_start_variable_rate

__all__ = ["MixedPrecisionForward", "cpu_has_bf16", "format_lmbda"]


def format_lmbda(lmbda: float) -> str:
    """A lambda as it appears in model ids and folder names ("0.5", "2")."""
    return f"{lmbda:g}"


def _device(cfg: TrainConfig, info: DistInfo) -> torch.device:
    if cfg.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} requested but CUDA is not available")
        return torch.device(f"cuda:{info.local_rank}" if info.enabled else cfg.device)
    if cfg.device != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {cfg.device!r}")
    return torch.device("cpu")


class MixedPrecisionForward(nn.Module):
    """``FrankenSplit.forward`` under autocast, with the entropy model kept in float32.

    The factorized prior's likelihoods are differences of two sigmoids of matmul outputs and its
    training noise is U(-1/2, 1/2) added to y; with bfloat16's 8 significant bits both are lost
    (the rate collapses onto the likelihood bound, y + u rounds away the noise), so only g_a and
    g_s run in low precision.

    Args:
        model: the model whose codec is trained.
        device_type: autocast device type ("cuda" or "cpu").
        dtype: the low-precision dtype.
    """

    def __init__(self, model: FrankenSplit, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, x: Tensor, rate: Tensor | None = None) -> dict[str, Any]:
        """Same outputs as ``FrankenSplit.forward``, all float32."""
        with torch.autocast(self.device_type, dtype=self.dtype):
            y = self.model.g_a(x)  # (N, C, H/8, W/8)
        y_hat, likelihoods = self.model.entropy_forward(y.float(), rate)
        with torch.autocast(self.device_type, dtype=self.dtype):
            h_hat = self.model.g_s(y_hat)  # (N, *spec.feature_shape)
        return {"y_hat": y_hat, "likelihoods": {"y": likelihoods}, "h_hat": h_hat.float()}


@dataclass
class _Run:
    """Everything one lambda's training shares across stages and epochs."""

    cfg: TrainConfig
    objective: Objective
    lmbda: float | None  # None: a variable-rate model (its lambdas are ``model.rates``)
    model: TrainModel
    net: nn.Module  # what the forward goes through: the model, its AMP wrapper, or DDP of those
    device: torch.device
    dtype: torch.dtype | None  # autocast's (amp), or None
    info: DistInfo
    run_dir: Path
    progress: bool
    val_loader: DataLoader | None
    main_params: list[nn.Parameter]
    quantiles: list[nn.Parameter]
    c: Tensor | None = None  # per-channel distortion weights (channel_norm), or None
    best: dict[str, Any] = field(default_factory=lambda: {"score": -1.0})
    history: list[dict[str, Any]] = field(default_factory=list)


def _val_loader(cfg: TrainConfig, objective: Objective, model: TrainModel) -> DataLoader | None:
    if cfg.data.val is None:
        return None
    dataset = ImageDataset(
        cfg.data.val, objective.transform(model.data_config, "eval"),
        limit=cfg.data.val_limit,
    )
    return DataLoader(dataset, batch_size=32, num_workers=cfg.data.workers)


def cpu_has_bf16() -> bool:
    """Whether oneDNN has native bfloat16 kernels here (AVX512-BF16 or AMX): without them a CPU
    autocast emulates bfloat16 and every convolution runs slower than in float32."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not cfg.amp:
        return None
    if device.type == "cpu" and not cpu_has_bf16():
        raise ValueError("amp: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so autocast "
                         "would train slower than float32; set amp: false")
    return torch.bfloat16


def _build(cfg: TrainConfig, objective: Objective, lmbda: float | None,
           device: torch.device) -> TrainModel:
    """The model for one lambda (None: the variable-rate model): seeded codec, optional init
    codec, frozen parts, placed on ``device`` by the objective."""
    model_id = cfg.model_id if lmbda is None else cfg.model_id.format(lmbda=format_lmbda(lmbda))
    model = objective.build(model_id)
    if cfg.init_codec and cfg.architecture.rates is not None:
        with local_weights(cfg.init_codec) as path:
            state, meta = read_safetensors(path)
        warm_start_variable_rate(model, state, meta, source=cfg.init_codec)
    elif cfg.init_codec:
        with local_weights(cfg.init_codec) as path:  # a file, or git:<commit>:<path>
            state, meta = read_safetensors(path)
        # g_s maps to one teacher's features: keep it when that teacher is ours (fine-tuning to
        # another lambda) or when it is frozen; a new teacher gets a fresh blueprint (reuse).
        teacher = meta.get("teacher")
        if teacher is None:  # files written before the teacher was recorded: judge by shapes
            own = model.g_s.state_dict()
            g_s = {k[len("g_s."):]: v for k, v in state.items() if k.startswith("g_s.")}
            same_teacher = g_s.keys() == own.keys() and all(
                v.shape == own[k].shape for k, v in g_s.items())
        else:
            same_teacher = teacher == model.teacher.name
        parts = tuple(p for p in CODEC_PARTS if p != "g_s" or same_teacher or p in cfg.freeze)
        load_codec_state(model, {k: v for k, v in state.items() if k.split(".")[0] in parts},
                         parts, source=cfg.init_codec)
        if cfg.init_g_s is True and "g_s" not in parts:
            _warm_start(model.g_s, state, "g_s.")
    if isinstance(cfg.init_g_s, str):  # g_s from a codec of its own (a refitted reuse decoder)
        _load_g_s(model, cfg.init_g_s)
    _freeze(model, cfg.freeze)
    return objective.place(model, device)


def _freeze(model: TrainModel, parts: list[str]) -> None:
    """Freeze ``parts``: codec parts, or ``tail.<path>``, a module of the model's own tail
    (``TrainConfig.freeze``, which checked their form).

    Raises:
        ValueError: a path the model does not have, naming the tail's modules.
    """
    for part in parts:
        try:
            module = model.get_submodule(part)
        except AttributeError as e:
            tail = getattr(model, "tail", None)
            known = [] if tail is None else [f"tail.{n}" for n, _ in tail.named_children()]
            raise ValueError(f"freeze: {model.model_id} has no module {part!r} ({e}); its own "
                             f"tail's modules: {', '.join(known) or 'none'}") from e
        module.requires_grad_(False)


def _load_g_s(model: TrainModel, source: str) -> None:
    """g_s from the codec file ``source`` (``init_g_s``: a path or ``git:<commit>:<path>``),
    strictly: a decoder of this teacher with every tensor this blueprint has. Unlike the warm
    start of ``init_g_s: true`` nothing is left at its seeded init, so another backbone's decoder
    (``...lite2`` for a Lite1 run) is refused instead of half-loaded."""
    with local_weights(source) as path:
        state, meta = read_safetensors(path, what="init_g_s codec", parts=("g_s",))
    teacher = meta.get("teacher")
    if teacher is not None and teacher != model.teacher.name:
        raise ValueError(f"init_g_s {source}: a decoder for {teacher}, this run trains one for "
                         f"{model.teacher.name}")
    load_codec_state(model, state, ("g_s",), source=f"init_g_s {source}")


def _warm_start(module: nn.Module, state: dict[str, Tensor], prefix: str) -> None:
    """Load the tensors of ``state`` under ``prefix`` whose shape fits ``module`` (see init_g_s)."""
    own = module.state_dict()
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    fits = {k: v for k, v in sub.items() if k in own and v.shape == own[k].shape}
    if not fits:
        raise ValueError(f"init_g_s: no {prefix[:-1]} tensor of the init codec fits this decoder")
    own.update(fits)
    module.load_state_dict(own)


def _start(cfg: TrainConfig, lmbda: float | None, run_dir: Path, progress: bool,
           info: DistInfo) -> _Run:
    device = _device(cfg, info)
    objective = create_objective(cfg)
    model = _build(cfg, objective, lmbda, device)  # g_s channels_last before DDP: objective.place
    dtype = _amp_dtype(cfg, device)
    net: nn.Module = MixedPrecisionForward(model, device.type, dtype) if dtype else model
    if info.enabled:
        net = DistributedDataParallel(net, find_unused_parameters=True)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return _Run(
        cfg, objective, lmbda, model, net, device, dtype, info, run_dir, progress,
        val_loader=_val_loader(cfg, objective, model) if info.is_main else None,
        main_params=[p for n, p in named if not n.endswith("quantiles")],
        quantiles=[p for n, p in named if n.endswith("quantiles")],
        c=_channel_weights(cfg, objective, model, device) if cfg.channel_norm else None,
    )


def _channel_weights(cfg: TrainConfig, objective: Objective, model: TrainModel,
                     device: torch.device) -> Tensor:
    """Per-channel distortion weights from the teacher's features of 64 training images.

    Evenly spaced images of the (sorted) training pool, eval view: deterministic, so a resumed
    run and every DDP rank compute the same weights without storing them.
    """
    dataset = ImageDataset(cfg.data.train, objective.transform(model.data_config, "eval"),
                           limit=cfg.data.train_limit)
    if len(dataset) == 0:
        raise ValueError("channel_norm: the training pool holds no images")
    idx = torch.linspace(0, len(dataset) - 1, min(64, len(dataset))).round().long().unique()
    with torch.inference_mode():
        x = torch.stack([dataset[int(i)][0] for i in idx]).to(device)  # (64, 3, H, W)
        h = torch.cat([model.teacher.head(x[i:i + 16]) for i in range(0, len(x), 16)])
    return channel_weights(h.float(), model.teacher.spec.layout).clone()

"""The training loop: head-distilled rate-distortion, stage by stage, resumable, DDP-ready.

Per step (FRANKENSPLIT.md)::

    h      = teacher.head(x)                       frozen, eval mode, no grad
    y_hat  = g_a(x) + U(-0.5, 0.5)                 (entropy model, training mode)
    h_hat  = g_s(y_hat)
    L      = sum c w (h_hat - h)^2 + lmbda * sum(-log2 p(y_hat))   w = 1 or 1/2 (1 + s)
             [+ kappa * numel(h_i) * KL(tail(h) || tail(h_hat))]    c = 1 or per-channel weights
    aux    = entropy model quantile loss           (its own optimizer, every step)

The bracketed output-distillation term and the channel weights ``c`` are our options
(``kd_weight``, ``channel_norm``), off in the paper-faithful configs.

That is objective "head"; the objective (``TrainConfig.objective``, a registered
`frankensplit.train.objectives.Objective`) builds the model, its input and batches and computes
the loss, so Entropic Student's second stage ("tail") and the learned image codec baseline
("image", bpp + lmbda * 255^2 * MSE) share everything else here.

Only codec parameters are trained. Every epoch ends with a checkpoint (``last.pt``, tensors and
plain data only, read back with ``weights_only=True``) and, when validation data is given, a
validation whose top-1 (or teacher agreement without labels) picks ``best.safetensors``.
Resuming restarts at the first unfinished epoch with the same seeds, so an interrupted run ends
where an uninterrupted one would.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from frankensplit.config import StageConfig, TrainConfig, to_dict
from frankensplit.data import ImageDataset
from frankensplit.files import read_safetensors
from frankensplit.losses import channel_weights
from frankensplit.models.codec_file import CODEC_PARTS, codec_state, load_codec_state, save_codec
from frankensplit.models.split import FrankenSplit
from frankensplit.sources import local_weights
from frankensplit.threads import seeded, torch_threads
from frankensplit.train.distributed import DistInfo, all_reduce_mean, cleanup, setup
from frankensplit.train.objectives import Batch, Objective, TrainModel, collate, create_objective
from frankensplit.train.validate import validate
from frankensplit.train.variable_rate import validate_rates, warm_start_variable_rate

__all__ = ["MixedPrecisionForward", "format_lmbda", "peak_memory_mb", "train", "train_one"]

_log = logging.getLogger(__name__)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (what training needs on a machine)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


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


def _train_loader(run: _Run, stage: StageConfig, epoch_seed: int) -> DataLoader:
    cfg, info = run.cfg, run.info
    if not cfg.data.train:
        raise ValueError("data.train is empty: give at least one training image folder")
    transform = run.objective.transform(run.model.data_config, stage.view,
                                        stage.patch_size)
    dataset = run.objective.dataset(stage, transform)
    generator = torch.Generator().manual_seed(epoch_seed)
    if info.enabled:
        sampler: Any = DistributedSampler(dataset, info.world_size, info.rank, seed=epoch_seed)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    return DataLoader(
        dataset, batch_size=stage.batch_size, sampler=sampler, num_workers=cfg.data.workers,
        collate_fn=collate, drop_last=True, generator=generator, persistent_workers=False,
    )


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


def _step(run: _Run, batch: Batch) -> dict[str, Tensor]:
    """One batch's loss and its parts, as the run's objective computes them."""
    return run.objective.loss(run, batch.to(run.device))


def _meta(lmbda: float | None) -> dict[str, str]:
    """A codec file's lambda (a variable-rate model's grid is in its architecture record)."""
    return {} if lmbda is None else {"lmbda": str(lmbda)}


def _checkpoint(path: Path, **state: Any) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: an interruption never leaves a half-written checkpoint


def _score(metrics: dict[str, float]) -> float:
    return metrics["agreement"] if math.isnan(metrics["top1"]) else metrics["top1"]


def _json_safe(value: Any) -> Any:
    """NaN (unlabelled top-1) -> null: strict JSON readers refuse ``NaN``."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


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


def train_one(
    cfg: TrainConfig, lmbda: float | None, run_dir: Path, resume: bool = False,
    progress: bool = True, info: DistInfo | None = None,
) -> dict[str, Any]:
    """Train one model for one lambda (None: ``cfg.architecture.rates``' variable-rate model) into
    ``run_dir``; returns its final summary.

    Runs with ``cfg.threads`` torch threads and torch's generator seeded from ``cfg.seed``, both
    scoped to the call: the caller's thread count and random state come back afterwards.
    """
    with torch_threads(cfg.threads or None), seeded(cfg.seed):
        return _train_one(cfg, lmbda, run_dir, resume, progress, info or DistInfo())


def _train_one(
    cfg: TrainConfig, lmbda: float | None, run_dir: Path, resume: bool, progress: bool,
    info: DistInfo,
) -> dict[str, Any]:
    last = run_dir / "last.pt"
    ckpt: dict[str, Any] = {}
    if resume and last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        if ckpt["stage"] >= len(cfg.stages):
            raise ValueError(f"{last} is at stage {ckpt['stage'] + 1}, the config has "
                             f"{len(cfg.stages)}: resume with the config that wrote it")
    # A checkpoint holds every codec part, so no init codec is loaded under it (compressai's
    # load_state_dict sizes the CDF tables only of an entropy model that has none yet).
    start_cfg = replace(cfg, init_codec=None, init_g_s=False) if ckpt else cfg
    run = _start(start_cfg, lmbda, run_dir, progress, info)
    run_dir.mkdir(parents=True, exist_ok=True)
    if ckpt:
        load_codec_state(run.model, ckpt["codec"], source=str(last))
        run.best, run.history = ckpt["best"], ckpt["history"]
    for si, stage in enumerate(cfg.stages):
        if not ckpt or si >= ckpt["stage"]:
            _run_stage(run, si, stage, ckpt if ckpt and si == ckpt["stage"] else None)
    summary = {"model_id": run.model.model_id, "lmbda": lmbda, "best": run.best,
               "history": run.history, "config": to_dict(cfg)}
    if info.is_main:
        save_codec(run.model, run_dir / "last.safetensors", _meta(lmbda))
        if run.val_loader is None:  # nothing to select by: the last weights are the result
            (run_dir / "best.safetensors").write_bytes((run_dir / "last.safetensors").read_bytes())
        (run_dir / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2))
    return summary


def _run_stage(run: _Run, si: int, stage: StageConfig, ckpt: dict[str, Any] | None) -> None:
    """The epochs of one stage (fresh optimizers, or the checkpoint's when resuming inside it)."""
    opt = torch.optim.Adam(run.main_params, lr=stage.lr)
    sched = _scheduler(opt, stage)
    per_step = stage.schedule == "cosine"
    aux_opt = torch.optim.Adam(run.quantiles, lr=run.cfg.aux_lr) if run.quantiles else None
    start = 0
    if ckpt is not None:
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        if aux_opt is not None:
            aux_opt.load_state_dict(ckpt["aux_opt"])
        start = ckpt["epoch"]
    for epoch in range(start, stage.epochs):
        seed = run.cfg.seed * 1_000_003 + si * 1009 + epoch
        torch.manual_seed(seed)  # augmentation and noise: same whether resumed or not
        loader = _train_loader(run, stage, seed)
        desc = f"{run.model.model_id} {stage.name} {epoch + 1}/{stage.epochs}"
        stats = _run_epoch(run, loader, opt, aux_opt, stage, desc,
                           sched if per_step else None)
        if not per_step:
            sched.step()
        # CDF tables on every rank, not only where save_codec rebuilds them: they are buffers DDP
        # broadcasts from rank 0 at each forward, and tables of different sizes break that.
        run.model.update(force=True)
        record: dict[str, Any] = {"stage": stage.name, "epoch": epoch + 1, **stats}
        last_epoch = epoch + 1 == stage.epochs
        if run.val_loader is not None and ((epoch + 1) % run.cfg.val_every == 0 or last_epoch):
            check = validate if run.lmbda is not None else validate_rates
            record["val"] = check(run.model, run.val_loader, run.device)
            if _score(record["val"]) > run.best["score"]:
                run.best = {"score": _score(record["val"]), "stage": stage.name,
                            "epoch": epoch + 1, **record["val"]}
                save_codec(run.model, run.run_dir / "best.safetensors", _meta(run.lmbda))
        record["peak_memory_mb"] = peak_memory_mb()
        run.history.append(record)
        _log.info("%s %s %d/%d: loss %.4g, bpp_train %.3f, %.1f img/s%s", run.model.model_id,
                  stage.name, epoch + 1, stage.epochs, record["loss"], record["bpp_train"],
                  record["images_per_s"], _val_text(record.get("val")))
        if run.info.is_main:
            _checkpoint(run.run_dir / "last.pt", codec=codec_state(run.model),
                        opt=opt.state_dict(), sched=sched.state_dict(),
                        aux_opt=aux_opt.state_dict() if aux_opt else {},
                        stage=si, epoch=epoch + 1, best=run.best, history=run.history)


def _scheduler(opt: torch.optim.Optimizer, stage: StageConfig) -> Any:
    """The stage's learning-rate schedule: per epoch (exp) or per step (cosine with warm-up)."""
    if stage.schedule == "exp":
        return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=stage.gamma)
    total = stage.epochs * int(stage.steps_per_epoch or 1)
    warm = min(stage.warmup_steps, total - 1)

    def factor(step: int) -> float:  # step = optimizer steps taken so far
        if step < warm:
            return (step + 1) / (warm + 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, total - warm) / (total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _val_text(val: dict[str, float] | None) -> str:
    if not val:
        return ""
    return f"; val top1 {val['top1']:.2f}%, agreement {val['agreement']:.2f}%, " \
           f"bpp_estimated {val['bpp_estimated']:.3f}"


def _run_epoch(
    run: _Run, loader: DataLoader, opt: torch.optim.Optimizer,
    aux_opt: torch.optim.Optimizer | None, stage: StageConfig, desc: str,
    step_sched: Any = None,
) -> dict[str, float]:
    from tqdm.auto import tqdm

    run.model.train()
    if run.cfg.frozen_norm:  # g_s normalises with the statistics it was loaded with
        for module in run.model.g_s.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
    steps = len(loader) if stage.steps_per_epoch is None else min(len(loader), stage.steps_per_epoch)
    if steps == 0:
        raise ValueError(f"stage {stage.name}: fewer training images than one batch")
    world = run.info.world_size
    bar = tqdm(total=steps, desc=desc, disable=not (run.progress and run.info.is_main), leave=False)
    t0, images, pixels = time.perf_counter(), 0, 0
    sums = {"loss": 0.0, "distortion": 0.0, "bits": 0.0, "aux": 0.0, "kd": 0.0}
    for i, batch in enumerate(loader):
        if i >= steps:
            break
        parts = _step(run, batch)
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        if run.cfg.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(run.main_params, run.cfg.clip_grad_norm)
        opt.step()
        if step_sched is not None:
            step_sched.step()
        aux = run.model.aux_loss()
        if aux_opt is not None:
            aux_opt.zero_grad(set_to_none=True)
            aux.backward()
            for q in run.quantiles:  # the aux loss runs outside DDP's forward: average by hand
                q.grad = all_reduce_mean(q.grad, run.info)
            aux_opt.step()
        n = batch.x.shape[0]
        images += n
        pixels += n * batch.x.shape[2] * batch.x.shape[3]
        for k in ("loss", "distortion", "bits", "kd"):
            if k in parts:
                sums[k] += float(parts[k].detach())
        sums["aux"] += float(aux.detach())
        bar.set_postfix(loss=f"{float(parts['loss'].detach()):.3g}",
                        bpp=f"{sums['bits'] / pixels:.3f}",
                        img_s=f"{images * world / (time.perf_counter() - t0):.1f}")
        bar.update()
    bar.close()
    elapsed = time.perf_counter() - t0
    kd = {"kd_nats_per_image": sums["kd"] / images} if run.objective.distills_outputs else {}
    return {
        "loss": sums["loss"] / steps,
        "distortion_per_image": sums["distortion"] / images,
        **kd,
        "bpp_train": sums["bits"] / pixels,
        "aux": sums["aux"] / steps,
        "images": images * world,
        "seconds": elapsed,
        "images_per_s": images * world / elapsed,
    }


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False,
          progress: bool = True) -> list[dict[str, Any]]:
    """Train one model per lambda of ``cfg`` under ``out_dir/lmbda-<value>/`` (a variable-rate
    config: its one model under ``out_dir/variable-rate/``)."""
    cfg.validate()
    create_objective(cfg)  # the objective's own checks, before a run folder is made
    info = setup(cfg.device)
    try:
        out = Path(out_dir)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        if cfg.architecture.rates is not None:  # one model for every rate
            return [train_one(cfg, None, out / "variable-rate", resume, progress, info)]
        return [train_one(cfg, lmbda, out / f"lmbda-{format_lmbda(lmbda)}", resume, progress, info)
                for lmbda in cfg.lmbda]
    finally:
        cleanup(info)

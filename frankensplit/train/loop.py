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

What a run starts from (the model with its warm starts and frozen parts, autocast, DDP, the
validation loader) is built once per lambda in `frankensplit.train.start`; this module runs it.

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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from frankensplit.config import StageConfig, TrainConfig, to_dict
from frankensplit.models.codec_file import codec_state, load_codec_state, save_codec
from frankensplit.threads import seeded, torch_threads
from frankensplit.train.distributed import DistInfo, all_reduce_mean, cleanup, setup
from frankensplit.train.objectives import Batch, collate, create_objective
from frankensplit.train.start import MixedPrecisionForward, _Run, _start, format_lmbda
from frankensplit.train.validate import validate
from frankensplit.train.variable_rate import validate_rates

__all__ = ["MixedPrecisionForward", "format_lmbda", "peak_memory_mb", "train", "train_one"]

_log = logging.getLogger(__name__)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (what training needs on a machine)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


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

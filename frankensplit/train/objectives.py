"""Training objectives: what a run trains, on which batches, and its loss (``OBJECTIVES``).

The loop (`frankensplit.train.loop`) is the same for every objective: stages, optimizers, the aux
loss, checkpoints, validation, resume, DDP. ``TrainConfig.objective`` names the registered
`Objective` that decides the rest:

=========  =================================  ==============  ==================================
objective  model (`Objective.build`)          input           loss per batch (`Objective.loss`)
=========  =================================  ==============  ==================================
head       split model (``architecture``):    normalised      sum c w (h_hat - h)^2
           FrankenSplit; Entropic Student's   like the        + lmbda * bits
           first stage                        teacher's       [+ kappa * numel(h_i) *
                                              input           KL(tail(h) || tail(h_hat))]
tail       split model with its own tail      normalised      KL(teacher(x) || own_tail(h_hat));
           (``architecture.tail: trained``):                  distortion and bits reported only
           Entropic Student's second stage
image      Balle et al. 2018 factorized-      RGB in [0, 1]   bpp + lmbda * 255^2 * MSE
           prior image codec                  (CompressAI's)  (CompressAI's objective)
=========  =================================  ==============  ==================================

Saliency guidance and output distillation are terms of the head objective's loss, not objectives
of their own. Saliency is a stage's choice (the paper's guided stage follows the plain one in the
same run, ``StageConfig.saliency``): that stage's batches carry the maps (`Batch.s`), which weigh
the distortion by w = 1/2 (1 + s) instead of 1. Output distillation is a weighted term
(``kd_weight``; 0, the paper's objective, leaves it out) on the same distortion and rate. A
variable-rate model (``architecture.rates``) draws a rate per sample and weighs its bits by that
rate's lambda (`frankensplit.train.variable_rate.variable_rate_loss`), under either split
objective.

Same data for every objective: the same image folders, views and crops (``make_transform``), only
the final normalisation differs. The image codec's teacher is kept for validation (top-1 of the
teacher on its reconstructions) and for the preprocessing; it is never trained.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from frankensplit.backbones import create_backbone
from frankensplit.config import DEFAULT_ARCHITECTURE, StageConfig, TrainConfig
from frankensplit.data import ImageDataset, make_transform
from frankensplit.losses import image_rd_loss, output_distillation, rd_loss
from frankensplit.models.architecture import TRAINED_TAIL
from frankensplit.models.image_codec import Bmshj2018Factorized, build_image_codec
from frankensplit.models.split import FrankenSplit
from frankensplit.registry import Registry
from frankensplit.train.variable_rate import variable_rate_loss

__all__ = [
    "OBJECTIVES", "Batch", "HeadDistillation", "ImageCodecObjective", "Objective", "Step",
    "TailDistillation", "TrainModel", "collate", "create_objective",
]

#: What the loop trains.
TrainModel = FrankenSplit | Bmshj2018Factorized


@dataclass(frozen=True)
class Batch:
    """One training step's data.

    Attributes:
        x: the model's input, (N, 3, H, W).
        s: the images' saliency maps, (N, 28, 28) in [0, 1], in a saliency stage; else None.
    """

    x: Tensor
    s: Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device``."""
        return Batch(self.x.to(device, non_blocking=True),
                     None if self.s is None else self.s.to(device))


def collate(items: list[dict[str, Tensor]]) -> Batch:
    """A `DataLoader`'s ``collate_fn``: the items of `Objective.dataset` -> one `Batch`."""
    return Batch(**default_collate(items))


class _Items(Dataset):
    """A dataset's items as `Batch` fields: ``{"x"}`` of an `ImageDataset`'s ``(x, label,
    index)``, ``{"x", "s"}`` of a `SaliencyDataset`'s ``(x, label, index, s)`` (``maps``)."""

    def __init__(self, dataset: Dataset, maps: bool) -> None:
        self.dataset, self.maps = dataset, maps

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = self.dataset[index]
        return {"x": item[0], "s": item[3]} if self.maps else {"x": item[0]}


class Step(Protocol):
    """What a loss reads of the run that trains (the run state `frankensplit.train.start` builds
    for `frankensplit.train.loop`)."""

    model: TrainModel  # the model trained: its teacher, rates, own tail
    net: nn.Module  # its forward as training runs it: the model, under autocast, in DDP
    lmbda: float | None  # the rate weight; None: a variable-rate model's (``model.rates``)
    c: Tensor | None  # per-channel distortion weights (``channel_norm``), or None
    dtype: torch.dtype | None  # the autocast dtype (``amp``), or None


def _autocast(step: Step, x: Tensor) -> AbstractContextManager:
    """Autocast to the run's low-precision dtype on ``x``'s device (``amp``), or nothing."""
    return torch.autocast(x.device.type, dtype=step.dtype) if step.dtype else nullcontext()


#: The training objectives by ``TrainConfig.objective``.
OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def create_objective(cfg: TrainConfig) -> Objective:
    """The objective ``cfg`` names, its options checked.

    Raises:
        ValueError: an unknown objective (the message lists the known ones), or options the
            objective does not take.
    """
    return OBJECTIVES.get(cfg.objective)(cfg)


class Objective:
    """A training objective: the model a run trains, its input, its batches and its loss.

    A new objective is a subclass registered in `OBJECTIVES`; the loop calls `build`, `place`,
    `transform`, `dataset` and, per step, `loss`.

    Args:
        cfg: the run's config (its generic checks done by `TrainConfig.validate`).

    Raises:
        ValueError: options the objective does not take (`check`).
    """

    #: the model's input is normalised like the teacher's (False: RGB in [0, 1])
    normalize = True

    def __init__(self, cfg: TrainConfig) -> None:
        self.check(cfg)
        self.cfg = cfg

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """Refuse options this objective does not take (a model with its own tail: only "tail").

        Raises:
            ValueError: naming the option.
        """
        if cfg.architecture.tail is not None:
            raise ValueError(f"architecture.tail: {cfg.architecture.tail} is a model with its own "
                             "tail, trained by objective 'tail' (Entropic Student's second stage)")

    @property
    def distills_outputs(self) -> bool:
        """Whether the loss has a term on the teacher's logits ("kd", reported per image)."""
        return False

    def build(self, model_id: str) -> TrainModel:
        """The seeded model, with its frozen teacher attached."""
        raise NotImplementedError

    def place(self, model: TrainModel, device: torch.device) -> TrainModel:
        """The model on ``device``, in the memory layout it trains fastest in."""
        return model.to(device)

    def transform(self, data_config: dict[str, Any], view: str, patch_size: int = 128
                  ) -> Callable:
        """PIL image -> the tensor the model takes (normalised, or RGB in [0, 1])."""
        return make_transform(data_config, view, patch_size, normalize=self.normalize)

    def dataset(self, stage: StageConfig, transform: Callable) -> Dataset:
        """A stage's training items (`collate` makes `Batch`es of them): the training images,
        with their saliency maps in a saliency stage.

        Raises:
            ValueError: a saliency stage without ``saliency_cache``, or a cache that does not
                hold these images in this view.
        """
        cfg = self.cfg
        images = ImageDataset(cfg.data.train, transform, limit=cfg.data.train_limit)
        if not stage.saliency:
            return _Items(images, maps=False)
        from frankensplit.saliency import SaliencyDataset

        if cfg.saliency_cache is None:
            raise ValueError(f"stage {stage.name} uses saliency: set saliency_cache")
        return _Items(SaliencyDataset(images, cfg.saliency_cache), maps=True)

    def loss(self, step: Step, batch: Batch) -> dict[str, Tensor]:
        """One batch's loss and its parts: ``{"loss", "distortion", "bits"}``, and ``"kd"`` (nats
        of output distillation) where `distills_outputs`."""
        raise NotImplementedError


class _Distillation(Objective):
    """What the split-model objectives share: the model of ``architecture``, g_s in
    channels_last, the teacher's targets and the rate-distortion terms of a batch."""

    def build(self, model_id: str) -> TrainModel:
        return self.cfg.architecture.build(model_id, teacher_weights=self.cfg.teacher_weights)

    def place(self, model: TrainModel, device: torch.device) -> TrainModel:
        model = model.to(device)
        if self.cfg.channels_last and device.type == "cpu":
            # Before DDP wraps the model: its gradient buckets take the parameters' strides as
            # they are then, and a later change reorders the averaged gradients
            # (tests/test_ddp_union.py).
            model.g_s.to(memory_format=torch.channels_last)  # see TrainConfig.channels_last
        return model

    def _targets(self, step: Step, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The teacher's features at the split, h, and its logits where `distills_outputs`."""
        # inference_mode, not no_grad: the teacher's forward skips autograd's version counters
        # and views (about a third of its cost on CPU). Its results are cloned to normal tensors
        # because the losses save them for backward.
        with torch.inference_mode(), _autocast(step, x):
            h = step.model.teacher.head(x).float()  # (N, *spec.feature_shape)
            logits = step.model.teacher.tail(h).float() if self.distills_outputs else None
        return h.clone(), None if logits is None else logits.clone()  # logits: (N, classes)

    def _rate_distortion(self, step: Step, batch: Batch, h: Tensor
                         ) -> tuple[Tensor, dict[str, Tensor]]:
        """h_hat and the rate-distortion parts ``{"loss", "distortion", "bits"}`` of a batch."""
        model, x = step.model, batch.x
        # A variable-rate model: a rate drawn per sample (torch's seeded generator, like the noise)
        rate = None if step.lmbda is not None else torch.randint(len(model.rates), (x.shape[0],))
        out = step.net(x) if rate is None else step.net(x, rate.to(x.device))
        s = None
        if batch.s is not None:  # saliency maps (N, 28, 28) -> the split's spatial size, nearest
            s = F.interpolate(batch.s[:, None], size=model.teacher.spec.spatial,
                              mode="nearest")[:, 0]
        h_hat, layout = out["h_hat"].float(), model.teacher.spec.layout
        if rate is None:
            return h_hat, rd_loss(h_hat, h, out["likelihoods"], step.lmbda, s, layout, step.c)
        return h_hat, variable_rate_loss(h_hat, h, out["likelihoods"]["y"], rate, model.rates,
                                         s, layout, step.c)


@OBJECTIVES.register("head")
class HeadDistillation(_Distillation):
    """Head distillation (FrankenSplit, Furutanpey et al.; Entropic Student's first stage):
    ``sum c w (h_hat - h)^2 + lmbda * bits``, with w = 1/2 (1 + s) in a saliency stage and c the
    ``channel_norm`` weights, plus output distillation through the frozen tail,
    ``kappa * numel(h_i) * KL(tail(h) || tail(h_hat))``, where ``kd_weight`` (kappa) > 0."""

    @property
    def distills_outputs(self) -> bool:
        return self.cfg.kd_weight > 0

    def loss(self, step: Step, batch: Batch) -> dict[str, Tensor]:
        h, teacher_logits = self._targets(step, batch.x)
        h_hat, parts = self._rate_distortion(step, batch, h)
        if teacher_logits is None:
            return parts
        # through the frozen tail: its parameters take no gradient, h_hat does
        with _autocast(step, h_hat):
            logits = step.model.teacher.tail(h_hat).float()  # (N, classes)
        kd = output_distillation(logits, teacher_logits)
        return {**parts, "kd": kd, "loss": parts["loss"] + self.cfg.kd_weight * h[0].numel() * kd}


@OBJECTIVES.register("tail")
class TailDistillation(_Distillation):
    """Entropic Student's second stage (Matsubara et al., WACV 2022): g_s and the model's own
    copy of the teacher's tail (``architecture.tail: trained``) fine-tuned to the teacher's
    logits, ``KL(teacher(x) || own_tail(g_s(y_hat)))`` per image at T = 1; the head distortion
    and the bits are reported, not trained. g_a and the entropy model stay frozen, so the
    bitstream is the first stage's (g_s cannot be frozen too: `TrainConfig.validate` refuses a
    run with nothing to train); modules of the own tail may be frozen too (``freeze:
    [tail.<path>]``: they stay the teacher's); labels are not used (the paper adds
    cross-entropy)."""

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        if cfg.architecture.tail != TRAINED_TAIL:
            raise ValueError("objective 'tail' (Entropic Student's second stage) trains a model "
                             f"with its own tail: architecture.tail: {TRAINED_TAIL}")
        if not {"g_a", "entropy"} <= set(cfg.freeze):
            raise ValueError("objective 'tail' (Entropic Student's second stage) needs g_a and "
                             "entropy frozen: freeze: [g_a, entropy]")
        if cfg.kd_weight:
            raise ValueError("kd_weight weighs objective 'head''s output distillation; objective "
                             "'tail''s loss is that distillation alone")

    @property
    def distills_outputs(self) -> bool:
        return True

    def loss(self, step: Step, batch: Batch) -> dict[str, Tensor]:
        h, teacher_logits = self._targets(step, batch.x)
        h_hat, parts = self._rate_distortion(step, batch, h)  # reported: the loss is the KL
        kd = output_distillation(step.model.classify(h_hat), teacher_logits)
        return {**parts, "kd": kd, "loss": kd}


@OBJECTIVES.register("image")
class ImageCodecObjective(Objective):
    """The learned image codec baseline: Balle et al. (ICLR 2018)'s factorized prior
    (``bmshj2018-factorized``, N = ``hidden_channels``, M = ``architecture.latent_channels``)
    trained with CompressAI's ``bpp + lmbda * 255^2 * MSE`` on images in [0, 1]; the unchanged
    teacher (``architecture.teacher``) classifies its reconstructions."""

    normalize = False

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        super().check(cfg)
        unused = sorted(k for k, v in cfg.architecture.to_dict().items()
                        if k not in ("teacher", "latent_channels")
                        and v != getattr(DEFAULT_ARCHITECTURE, k))
        if unused:
            raise ValueError(f"objective 'image' trains the image codec: architecture {unused} "
                             "only apply to split models")
        if any(s.saliency for s in cfg.stages) or cfg.amp:
            raise ValueError("objective 'image' supports neither saliency stages nor amp")
        if cfg.kd_weight or cfg.channel_norm:
            raise ValueError("kd_weight and channel_norm apply to objective 'head' only")

    def build(self, model_id: str) -> TrainModel:
        arch = self.cfg.architecture
        teacher = create_backbone(arch.teacher, weights=self.cfg.teacher_weights)
        return build_image_codec(model_id, self.cfg.hidden_channels, arch.latent_channels, teacher)

    def loss(self, step: Step, batch: Batch) -> dict[str, Tensor]:
        """``{"loss", "distortion", "bits", "mse"}`` (`frankensplit.losses.image_rd_loss`)."""
        out = step.net(batch.x)  # {"x_hat": (N, 3, H, W), "likelihoods": {"y": (N, M, H/16, W/16)}}
        return image_rd_loss(out["x_hat"], batch.x, out["likelihoods"], step.lmbda)

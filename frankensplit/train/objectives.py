"""What differs between the training objectives: the model built, its input, and its loss.

Both objectives share the loop (stages, optimizers, aux loss, checkpoints, validation, resume,
DDP); only these three things change with ``TrainConfig.objective``:

=========  ======================================  ==================  =============================
objective  model                                   input               loss (per batch)
=========  ======================================  ==================  =============================
head       split model: FrankenSplit, or Entropic  normalised like     sum w (h_hat - h)^2
           Student (``encoder``/``decoder``        the teacher's       + lmbda * bits
           ``entropic_student``, ``split_          input
           reduction: 4``)                                             (:func:`~frankensplit.
                                                                       losses.rd_loss`)
image      Balle et al. 2018 factorized-prior      RGB in [0, 1]       bpp + lmbda * 255^2 * MSE
           image codec (``bmshj2018-factorized``)  (CompressAI's       (:func:`~frankensplit.
                                                   convention)         losses.image_rd_loss`)
=========  ======================================  ==================  =============================

Same data for both: the same image folders, views and crops (``make_transform``), only the final
normalisation differs. The image codec's teacher is kept for validation (top-1 of the teacher on
its reconstructions) and for the preprocessing; it is never trained.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from frankensplit.backbones import create_backbone
from frankensplit.config import TrainConfig
from frankensplit.data import make_transform
from frankensplit.losses import image_rd_loss
from frankensplit.models.image_codec import Bmshj2018Factorized, build_image_codec
from frankensplit.models.split import FrankenSplit

__all__ = ["TrainModel", "build_trainee", "image_step", "input_transform"]

#: What the loop trains.
TrainModel = FrankenSplit | Bmshj2018Factorized


def build_trainee(cfg: TrainConfig, model_id: str) -> TrainModel:
    """The seeded model of ``cfg``'s objective, with its frozen teacher attached."""
    if cfg.objective == "image":
        teacher = create_backbone(cfg.architecture.teacher, weights=cfg.teacher_weights)
        return build_image_codec(model_id, cfg.hidden_channels, cfg.architecture.latent_channels,
                                 teacher)
    return cfg.architecture.build(model_id, teacher_weights=cfg.teacher_weights)


def input_transform(
    cfg: TrainConfig, data_config: dict[str, Any], view: str, patch_size: int = 128
) -> Callable:
    """PIL image -> the tensor the objective's model takes (normalised, or RGB in [0, 1])."""
    return make_transform(data_config, view, patch_size, normalize=cfg.objective != "image")


def image_step(net: nn.Module, x: Tensor, lmbda: float) -> dict[str, Tensor]:
    """One batch of the image objective: ``{"loss", "distortion", "bits", "mse"}``.

    Args:
        net: the image codec (or its DDP wrapper).
        x: images in [0, 1], (N, 3, H, W).
        lmbda: CompressAI's rate-distortion weight.
    """
    out = net(x)  # {"x_hat": (N, 3, H, W), "likelihoods": {"y": (N, M, H/16, W/16)}}
    return image_rd_loss(out["x_hat"], x, out["likelihoods"], lmbda)

"""The grad-cam adapter (the one module importing ``pytorch_grad_cam``): the paper's saliency maps.

FRANKENSPLIT.md, "Saliency maps": XGradCAM with eigen-smoothing on the pretrained teacher, targeting
the ground-truth class, at the last block of the three deepest stages. Per layer: ReLU, min-max
normalise, resize to 28x28; then average the layers and min-max normalise again; NaN -> 0.5::

    x (N,3,224,224) --teacher--> logits[target]  --backprop--> grads at 3 target layers
    per layer:  cam = ReLU(eigen(weights * activations))  -> min-max -> resize 28x28
    s = min-max(mean over layers)                          (N, 28, 28) in [0, 1]

Target layers are derived from the timm model: the last three ``feature_info`` stages, the last
block of each, and inside it what the family's recipe names (Swin ``norm1``, ConvNeXt ``norm``; the
block itself for CNNs). FRANKENSPLIT.md lists ResNet's as layer1-3, which are *not* its three
deepest stages (timm's ``feature_info`` starts with the stem ``act1``: counting it as a stage turns
"stages 2-4" into layer1-3); the rule is applied here, giving layer2-4. Pass
:class:`TargetLayers` explicitly to use other layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_grad_cam import XGradCAM
from torch import Tensor, nn

from frankensplit.backbones import family_of

__all__ = ["MAP_SIZE", "TargetLayers", "saliency_maps", "target_layers"]

#: Side of the stored maps: the latent grid of a 224x224 input (stride 8).
MAP_SIZE = 28

#: The sub-module of a stage's last block that the recipe targets, per family (None: the block).
_BLOCK_CHILD = {"swin": "norm1", "convnext": "norm"}


@dataclass(frozen=True)
class TargetLayers:
    """Where grad-cam reads activations and gradients.

    Attributes:
        names: dotted module names inside the timm model.
        layout: "NCHW", or "NHWC" for token layers (timm Swin, ConvNeXt's channels-last norm).
    """

    names: tuple[str, ...]
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("at least one target layer is needed")
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {self.layout!r}")


def _last_block(model: nn.Module, stage: str) -> tuple[str, nn.Module]:
    """Name and module of the last block of a ``feature_info`` stage."""
    module = model.get_submodule(stage)
    blocks = getattr(module, "blocks", module)  # Swin/ConvNeXt stages hold ``blocks``
    if not isinstance(blocks, nn.Sequential) or len(blocks) == 0:
        raise ValueError(f"stage {stage!r} of {type(model).__name__} has no sequence of blocks")
    prefix = f"{stage}.blocks" if blocks is not module else stage
    return f"{prefix}.{len(blocks) - 1}", blocks[-1]


def target_layers(model: nn.Module, count: int = 3) -> TargetLayers:
    """The recipe's target layers of a timm classifier: the last block of its deepest stages.

    Args:
        model: an unsplit timm classifier of a supported family.
        count: how many of the deepest stages.

    Raises:
        ValueError: unsupported family, or fewer stages than ``count``.
    """
    family = family_of(model).name
    stages = [info["module"] for info in model.feature_info]
    if len(stages) < count:
        raise ValueError(f"{type(model).__name__} has {len(stages)} stages, {count} requested")
    child = _BLOCK_CHILD.get(family)
    names, layout = [], "NCHW"
    for stage in stages[-count:]:
        name, block = _last_block(model, stage)
        if child is not None:
            name = f"{name}.{child}"
        if family == "swin" or family == "convnext" and not block.use_conv_mlp:
            layout = "NHWC"  # timm Swin keeps tokens NHWC; ConvNeXt's norm runs channels-last
        names.append(name)
    return TargetLayers(tuple(names), layout)


class _ClassTarget:
    """The logit grad-cam explains: the label's, or the top-1 when the label is unknown (-1)."""

    def __init__(self, label: int) -> None:
        self.label = label

    def __call__(self, logits: Tensor) -> Tensor:  # logits (num_classes,)
        return logits[self.label] if self.label >= 0 else logits.max()


class _ResizedXGradCAM(XGradCAM):
    """XGradCAM whose per-layer maps are resized to ``size`` rather than to the input size.

    grad-cam resizes each layer's ReLU'd, min-max'd map to ``get_target_width_height`` before
    averaging; overriding it gives the recipe's order (resize to 28x28, then average) exactly.
    """

    def __init__(self, model: nn.Module, layers: list[nn.Module], reshape: Callable | None,
                 size: int) -> None:
        super().__init__(model, layers, reshape)
        self.size = size

    def get_target_width_height(self, input_tensor: Tensor) -> tuple[int, int]:
        return self.size, self.size


def _nhwc_to_nchw(t: Tensor) -> Tensor:
    return t.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)


def saliency_maps(
    model: nn.Module,
    x: Tensor,
    labels: Sequence[int] | Tensor | None = None,
    layers: TargetLayers | None = None,
    size: int = MAP_SIZE,
) -> Tensor:
    """The paper's saliency maps of a batch, in [0, 1].

    Args:
        model: the unsplit classifier (put in eval mode; freezing its parameters saves work, the
            gradients needed flow through the input).
        x: preprocessed images (N, 3, H, W) on the model's device.
        labels: class per image, -1 (or None for all) to explain the model's own top-1.
        layers: target layers (default: :func:`target_layers`).
        size: side of the maps.

    Returns:
        float32 maps (N, size, size) on the CPU.

    Raises:
        ValueError: bad input shape or label count.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W), got {tuple(x.shape)}")
    labels = [-1] * x.shape[0] if labels is None else [int(v) for v in labels]
    if len(labels) != x.shape[0]:
        raise ValueError(f"{len(labels)} labels for {x.shape[0]} images")
    layers = layers or target_layers(model)
    modules = [model.get_submodule(name) for name in layers.names]
    reshape = _nhwc_to_nchw if layers.layout == "NHWC" else None
    cam = _ResizedXGradCAM(model, modules, reshape, size)
    try:
        with torch.enable_grad():
            s = cam(x.detach().clone().requires_grad_(True), [_ClassTarget(v) for v in labels],
                    eigen_smooth=True)  # (N, size, size)
    finally:
        cam.activations_and_grads.release()
    s = np.nan_to_num(np.asarray(s, dtype=np.float32), nan=0.5)
    return torch.from_numpy(s).clamp_(0.0, 1.0)

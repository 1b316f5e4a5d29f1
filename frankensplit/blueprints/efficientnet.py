"""EfficientNet blueprint decoder g_s: latent -> stride-8 EfficientNet features (``blocks.2``).

The stride-8 split of EfficientNet-Lite is the output of its third stage, two inverted residual
(MBConv) blocks with 5x5 depthwise kernels and expansion 6 ending in C channels (40 for Lite0).
That stage is narrow, far narrower than the 48-channel latent, so the blueprint first lifts the
latent to a wider working width, mixes there with the family's blocks, and ends in a replica of the
teacher's stage: MBConv(width -> C) then MBConv(C -> C) with its skip. MBConv ends in a linear
(activation-free) projection, so ``h_hat`` is signed like ``h``.
"""

from __future__ import annotations

from torch import nn

from frankensplit.backbones import (
    DepthwiseSeparableConv,
    InvertedResidual,
    SplitSpec,
    make_divisible,
)
from frankensplit.blueprints.common import Blueprint, check_spec

__all__ = ["EfficientNetBlueprint", "build_efficientnet_blueprint"]

# EfficientNet-Lite (the teachers this project targets) replaces swish by ReLU6 and drops
# squeeze-excitation to be quantisation friendly; the blueprint uses the teacher's activation so
# its features have the same kind of non-linearity. Pass act_layer=nn.SiLU for B-series teachers.
DEFAULT_ACT = nn.ReLU6


def _mbconv(in_channels: int, out_channels: int, act_layer: type[nn.Module]) -> nn.Module:
    """The teacher's stride-8 block type: 1x1 expand x6, 5x5 depthwise, linear 1x1 project."""
    return InvertedResidual(
        in_channels, out_channels, dw_kernel_size=5, exp_ratio=6.0, act_layer=act_layer
    )


class EfficientNetBlueprint(Blueprint):
    """EfficientNet(-Lite) blueprint.

    Dataflow for efficientnet_lite0 ``blocks.2`` (C = spec.channels = 40, latent 48 x 28 x 28,
    working width C_w = 2 * max(48, C) = 96)::

        y_hat (N, 48, 28, 28)
          -> conv3x3 48 -> C_w + BN + ReLU6        (N, 96, 28, 28)   like the teacher's stem
          -> DepthwiseSeparableConv(C_w, C_w), 3x3  (N, 96, 28, 28)   like its first block
          -> depth x MBConv(C_w, C_w), 5x5, x6      (N, 96, 28, 28)
          -> MBConv(C_w, C), MBConv(C, C), 5x5, x6  (N, 40, 28, 28)   h_hat, replica of blocks.2

    Depth 1 by default: depthwise convolutions are cheap forward but about 16x costlier backward on
    CPUs, and at depth 3 this decoder dominated CPU training time (measured: 3x slower steps).

    Args:
        spec: an EfficientNet split at reduction 8, layout NCHW.
        latent_channels: channels of ``y_hat``.
        depth: MBConv blocks at the working width.
        act_layer: activation of every block.

    Raises:
        ValueError: the spec is not such a split.
    """

    def __init__(
        self,
        spec: SplitSpec,
        latent_channels: int = 48,
        depth: int = 1,
        act_layer: type[nn.Module] = DEFAULT_ACT,
    ) -> None:
        super().__init__(spec, latent_channels)
        check_spec(spec, family="efficientnet", reductions=(8,), layout="NCHW")
        width = make_divisible(2 * max(latent_channels, spec.channels), 8)
        self.body = nn.Sequential(
            nn.Conv2d(latent_channels, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            act_layer(inplace=True),  # (N, C_w, H/8, W/8)
            DepthwiseSeparableConv(width, width, dw_kernel_size=3, act_layer=act_layer),
            *(_mbconv(width, width, act_layer) for _ in range(depth)),  # (N, C_w, H/8, W/8)
            _mbconv(width, spec.channels, act_layer),  # (N, C, H/8, W/8)
            _mbconv(spec.channels, spec.channels, act_layer),  # (N, C, H/8, W/8)
        )


def build_efficientnet_blueprint(spec: SplitSpec, latent_channels: int = 48) -> nn.Module:
    """Registry factory for the ``"efficientnet"`` blueprint; see :class:`EfficientNetBlueprint`."""
    return EfficientNetBlueprint(spec, latent_channels)

"""ResNet blueprint decoder g_s: latent -> stride-8 ResNet features (output of ``layer2``).

For ResNet-50/101/152, ``layer2`` is a stack of bottleneck blocks of width C/4 expanding to
C = 4 x 128 = 512 channels, entered from ``layer1``'s C/2 = 256 channels through a projection
shortcut. The blueprint replays that: a stem into C/2 channels, a bottleneck with a 1x1 projection
shortcut to C, and plain bottlenecks at C. Like the teacher's, its last block ends in ReLU, so
``h_hat`` is non-negative exactly like ``h``.
"""

from __future__ import annotations

from torch import nn

from frankensplit.backbones import Bottleneck, SplitSpec
from frankensplit.blueprints.common import Blueprint, check_spec

__all__ = ["ResNetBlueprint", "build_resnet_blueprint"]


def _bottlenecks(in_channels: int, out_channels: int, depth: int) -> nn.Sequential:
    """``depth`` timm bottlenecks ending in ``out_channels``; the first projects its shortcut
    with conv1x1 + BatchNorm (as timm's ``downsample_conv``) when the channels change."""
    planes = out_channels // Bottleneck.expansion
    blocks = []
    for i in range(depth):
        inplanes = in_channels if i == 0 else out_channels
        downsample = None
        if inplanes != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, out_channels, kernel_size=1, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        blocks.append(Bottleneck(inplanes, planes, downsample=downsample))
    return nn.Sequential(*blocks)


class ResNetBlueprint(Blueprint):
    """ResNet (bottleneck) blueprint.

    Dataflow for resnet50 ``layer2`` (C = spec.channels = 512, latent 48 x 28 x 28)::

        y_hat (N, 48, 28, 28)
          -> conv3x3 48 -> C/2 + BN + ReLU                     (N, 256, 28, 28)  like layer1's output
          -> Bottleneck(256, planes 128, 1x1 projection)      (N, 512, 28, 28)
          -> 2 x Bottleneck(512, planes 128)                   (N, 512, 28, 28)  h_hat

    About 1.05M parameters for C = 512. A teacher with basic blocks (ResNet-18/34, C = 128) gets
    the same structure at a quarter of the width, still ending in C channels.

    Args:
        spec: a ResNet split at reduction 8, layout NCHW, channels divisible by 4.
        latent_channels: channels of ``y_hat``.
        depth: bottleneck blocks after the stem.

    Raises:
        ValueError: the spec is not such a split.
    """

    def __init__(self, spec: SplitSpec, latent_channels: int = 48, depth: int = 3) -> None:
        super().__init__(spec, latent_channels)
        check_spec(
            spec,
            family="resnet",
            reductions=(8,),
            layout="NCHW",
            channels_multiple_of=Bottleneck.expansion,
        )
        width = spec.channels // 2
        self.body = nn.Sequential(
            nn.Conv2d(latent_channels, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),  # (N, C/2, H/8, W/8)
            _bottlenecks(width, spec.channels, depth),  # (N, C, H/8, W/8)
        )


def build_resnet_blueprint(spec: SplitSpec, latent_channels: int = 48) -> nn.Module:
    """Registry factory for the ``"resnet"`` blueprint; see :class:`ResNetBlueprint`."""
    return ResNetBlueprint(spec, latent_channels)

"""ConvNeXt blueprint decoder g_s: latent -> stride-8 ConvNeXt features (output of ``stages.1``).

The teacher's head up to ``stages.1`` is a patchify stem, stage 0 at width C/2, a downsample
(LayerNorm2d + 2x2 stride-2 conv) to width C and stage 1. The blueprint mirrors that shape at
constant resolution, since the latent is already at stride 8: a stem into width C/2, ConvNeXt blocks
there, a LayerNorm2d + conv transition to C, and ConvNeXt blocks at C whose output is ``h_hat``.
"""

from __future__ import annotations

from torch import nn

from frankensplit.backbones import ConvNeXtBlock, LayerNorm2d, SplitSpec
from frankensplit.blueprints.common import Blueprint, check_spec

__all__ = ["ConvNeXtBlueprint", "build_convnext_blueprint"]


def _convnext_blocks(dim: int, depth: int) -> nn.Sequential:
    """``depth`` timm ConvNeXt blocks as in the teacher: 7x7 depthwise conv, channels-last
    LayerNorm, 4x MLP with GELU, layer scale initialised to 1e-6 (each block starts as ~identity,
    so the stack trains stably from scratch)."""
    return nn.Sequential(
        *(
            ConvNeXtBlock(dim, kernel_size=7, ls_init_value=1e-6, act_layer="gelu")
            for _ in range(depth)
        )
    )


class ConvNeXtBlueprint(Blueprint):
    """ConvNeXt blueprint.

    Dataflow for convnext_tiny ``stages.1`` (C = spec.channels = 192, latent 48 x 28 x 28)::

        y_hat (N, 48, 28, 28)
          -> conv3x3 48 -> C/2 + LayerNorm2d           (N, 96, 28, 28)   like the teacher's stem
          -> 2 ConvNeXt blocks at C/2                  (N, 96, 28, 28)   like stage 0
          -> LayerNorm2d + conv3x3 C/2 -> C            (N, 192, 28, 28)  like the downsample
          -> 2 ConvNeXt blocks at C                    (N, 192, 28, 28)  h_hat, like stage 1

    The transition convolution is 3x3 stride 1 where the teacher uses 2x2 stride 2: the
    resolution is already right, and the 3x3 kernel still mixes neighbours. About 0.99M
    parameters for C = 192 and 1.7M for C = 256 (convnext_base).

    Args:
        spec: a ConvNeXt split at reduction 8, layout NCHW, even channels.
        latent_channels: channels of ``y_hat``.
        depths: ConvNeXt blocks at C/2 and at C.

    Raises:
        ValueError: the spec is not such a split.
    """

    def __init__(
        self, spec: SplitSpec, latent_channels: int = 48, depths: tuple[int, int] = (2, 2)
    ) -> None:
        super().__init__(spec, latent_channels)
        check_spec(spec, family="convnext", reductions=(8,), layout="NCHW", channels_multiple_of=2)
        width = spec.channels // 2
        self.body = nn.Sequential(
            nn.Conv2d(latent_channels, width, kernel_size=3, padding=1),  # (N, C/2, H/8, W/8)
            LayerNorm2d(width),
            _convnext_blocks(width, depths[0]),  # (N, C/2, H/8, W/8)
            LayerNorm2d(width),
            nn.Conv2d(width, spec.channels, kernel_size=3, padding=1),  # (N, C, H/8, W/8)
            _convnext_blocks(spec.channels, depths[1]),  # (N, C, H/8, W/8)
        )


def build_convnext_blueprint(spec: SplitSpec, latent_channels: int = 48) -> nn.Module:
    """Registry factory for the ``"convnext"`` blueprint; see :class:`ConvNeXtBlueprint`."""
    return ConvNeXtBlueprint(spec, latent_channels)

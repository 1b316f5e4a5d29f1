"""Swin blueprint decoder g_s: latent -> stride-16 Swin tokens (the paper's main blueprint).

FrankenSplit splits hierarchical Swin models after the patch merging that opens stage 3 (timm
module ``layers.2.downsample``): ``h`` is (N, H/16, W/16, C) channels-last, C = 384 for
swin_s3_base_224. The blueprint alternates convolutional residual blocks (cheap local mixing,
channel growth) with timm's own Swin blocks (windowed attention, the teacher's inductive bias), and
ends in a partial replica of the teacher's last replaced layer: Swin blocks at the teacher's
pre-merge width C/2, then a ``PatchMerging`` C/2 -> C (the stride 8 -> 16 step) and a LayerNorm.
"""

from __future__ import annotations

from torch import nn

from frankensplit.backbones import PatchMerging, SplitSpec, SwinTransformerBlock
from frankensplit.blueprints.common import (
    Blueprint,
    ResBlock,
    Residual,
    ToNCHW,
    ToNHWC,
    check_spec,
)

__all__ = ["SwinBlueprint", "build_swin_blueprint"]

WINDOW_SIZE = 7
"""Attention window of every Swin block (the teacher's)."""

HEAD_DIMS = (32, 48)
"""Target channels per head of the hybrid stage and of the reconstruction layer. At the paper's
widths (96, 192) they give the paper's 3 and 4 heads; at other widths the nearest divisor is used."""


def _num_heads(dim: int, head_dim: int) -> int:
    """Heads for ``dim`` channels whose per-head width is closest to ``head_dim`` (ties: fewer)."""
    divisors = [h for h in range(1, dim + 1) if dim % h == 0]
    return min(divisors, key=lambda h: (abs(dim // h - head_dim), h))


def _swin_blocks(dim: int, head_dim: int, resolution: tuple[int, int], depth: int) -> nn.Sequential:
    """``depth`` timm Swin blocks (NHWC in and out), alternating window shift 0 and window/2."""
    num_heads = _num_heads(dim, head_dim)
    return nn.Sequential(
        *(
            SwinTransformerBlock(
                dim=dim,
                input_resolution=resolution,
                num_heads=num_heads,
                window_size=WINDOW_SIZE,
                shift_size=0 if i % 2 == 0 else WINDOW_SIZE // 2,
                mlp_ratio=4.0,
            )
            for i in range(depth)
        )
    )


def _init_linear(module: nn.Module) -> None:
    """Swin's initialisation (as timm's ``SwinTransformer`` applies it): the blocks alone keep
    PyTorch's default Linear init, which is too large for deep residual attention stacks."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class SwinBlueprint(Blueprint):
    """The FrankenSplit Swin blueprint.

    Dataflow for swin_s3_base_224 (C = spec.channels = 384, latent 48 x 28 x 28)::

        y_hat (N,48,28,28)
          -> ResBlock 48 -> C/4=96, LeakyReLU                             (N, 96, 28, 28)
          -> NHWC; hybrid Swin stage: x + 2 blocks(dim 96, 3 heads, shifts 0/3); NCHW
          -> ResBlock 96 -> C/2=192, LeakyReLU                            (N, 192, 28, 28)
          -> NHWC; reconstruction layer: 2 blocks (dim 192, 4 heads, shifts 0/3)
          -> PatchMerging (LayerNorm(768), Linear 768 -> 384 no bias)    (N, 14, 14, 384)
          -> LayerNorm(384)                                               h_hat (N, 14, 14, 384)

    Parameter count (2,058,974 for that spec; mlp_ratio 4, window 7, qkv bias)::

        ResBlock(48, 96)      conv3x3 41,568 + conv3x3 83,040 + skip 1x1 4,704     =   129,312
        Swin block dim 96     norms 384 + qkv 27,936 + proj 9,312 + rel. bias
                              table 13*13*3 = 507 + MLP 74,208  = 112,347; x2     =   224,694
        ResBlock(96, 192)     166,080 + 331,968 + 18,624                          =   516,672
        Swin block dim 192    768 + 111,168 + 37,056 + 13*13*4 = 676 + 295,872
                              = 445,540; x2                                       =   891,080
        PatchMerging          LayerNorm(768) 1,536 + Linear 768*384 294,912       =   296,448
        LayerNorm(384)                                                            =       768
                                                                          total     2,058,974

    Widths derive from the spec: the reconstruction layer runs at the teacher's pre-merge width
    C/2 (timm's PatchMerging doubles channels), the hybrid stage at C/4. Heads follow
    :data:`HEAD_DIMS`. Swin blocks are built for the latent resolution of ``spec.input_size``
    (their shifted-window masks depend on it), hence the fixed input size. Below a 56x56 input
    the latent is smaller than one window: timm then shrinks the window (and the bias tables).

    Args:
        spec: a Swin split at reduction 16, layout NHWC, channels divisible by 4.
        latent_channels: channels of ``y_hat``.

    Raises:
        ValueError: the spec is not such a split.
    """

    fixed_size = True

    def __init__(self, spec: SplitSpec, latent_channels: int = 48) -> None:
        super().__init__(spec, latent_channels)
        check_spec(
            spec, family="swin", reductions=(16,), layout="NHWC", channels_multiple_of=4,
            fixed_size=True,
        )
        hybrid_dim, recon_dim = spec.channels // 4, spec.channels // 2
        resolution = self.latent_spatial
        self.body = nn.Sequential(
            ResBlock(latent_channels, hybrid_dim),  # (N, C/4, H/8, W/8)
            ToNHWC(),  # (N, H/8, W/8, C/4)
            Residual(_swin_blocks(hybrid_dim, HEAD_DIMS[0], resolution, depth=2)),  # same shape
            ToNCHW(),  # (N, C/4, H/8, W/8)
            ResBlock(hybrid_dim, recon_dim),  # (N, C/2, H/8, W/8)
            ToNHWC(),  # (N, H/8, W/8, C/2)
            _swin_blocks(recon_dim, HEAD_DIMS[1], resolution, depth=2),  # (N, H/8, W/8, C/2)
            PatchMerging(recon_dim, out_dim=spec.channels),  # (N, H/16, W/16, C)
            nn.LayerNorm(spec.channels),  # (N, H/16, W/16, C)
        )
        self.body.apply(_init_linear)


def build_swin_blueprint(spec: SplitSpec, latent_channels: int = 48) -> nn.Module:
    """Registry factory for the ``"swin"`` blueprint; see :class:`SwinBlueprint`."""
    return SwinBlueprint(spec, latent_channels)

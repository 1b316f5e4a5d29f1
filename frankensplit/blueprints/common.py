"""Blocks and checks shared by every blueprint decoder g_s.

A blueprint maps the decoded latent ``y_hat`` (NCHW, ``latent_channels`` x H/8 x W/8) to ``h_hat``,
exactly what the frozen teacher tail expects at the split (``SplitSpec.feature_shape`` in
``SplitSpec.layout``). :class:`Blueprint` owns that contract: it checks the spec once at build time
and the latent shape at every call, so a mismatch fails with a message naming both shapes instead
of a shape error deep inside a window attention or the teacher tail.
"""

from __future__ import annotations

import torch
from torch import nn

from frankensplit._compressai import ResidualBlock
from frankensplit.backbones import SplitSpec

__all__ = [
    "LATENT_STRIDE",
    "Blueprint",
    "ResBlock",
    "Residual",
    "ToNCHW",
    "ToNHWC",
    "check_spec",
    "count_parameters",
]

LATENT_STRIDE = 8
"""Spatial stride of the latent ``y`` relative to the image: the encoder g_a has three stride-2
blocks, for every backbone family."""


def check_spec(
    spec: SplitSpec,
    *,
    family: str,
    reductions: tuple[int, ...],
    layout: str,
    channels_multiple_of: int = 1,
    fixed_size: bool = False,
) -> None:
    """Raise if a blueprint of ``family`` cannot produce the features ``spec`` describes.

    Called by every blueprint constructor, so that an incompatible split is reported when the model
    is built, naming the bad value and what the blueprint supports.

    Args:
        spec: the split to decode to.
        family: the family the blueprint is built for.
        reductions: split strides the blueprint can reach from the stride-8 latent.
        layout: the layout the teacher tail of this family expects.
        channels_multiple_of: the blueprint derives its inner widths by dividing ``spec.channels``.
        fixed_size: the blueprint only works at the spec's exact input size (then the size must be
            a multiple of the reduction).

    Raises:
        ValueError: family, reduction, layout, channels or input size do not fit.
    """
    if spec.family != family:
        raise ValueError(f"{family} blueprint got a spec for family {spec.family!r}")
    if spec.reduction not in reductions:
        raise ValueError(
            f"{family} blueprint supports split reduction(s) {reductions}, got {spec.reduction}"
        )
    if spec.layout != layout:
        raise ValueError(f"{family} blueprint outputs layout {layout!r}, spec has {spec.layout!r}")
    if spec.channels <= 0 or spec.channels % channels_multiple_of:
        raise ValueError(
            f"{family} blueprint needs spec.channels to be a positive multiple of "
            f"{channels_multiple_of}, got {spec.channels}"
        )
    _, height, width = spec.input_size
    if fixed_size and (height % spec.reduction or width % spec.reduction):
        # Window attention and patch merging need exact multiples; refuse rather than guess.
        # Convolutional families round up like the encoder (ceil(H/8): padded stride-2 convs and
        # TF-"same" padding alike), so EfficientNet-Lite2's 260x260 gives 33x33 on both sides.
        raise ValueError(
            f"input_size {spec.input_size} must be divisible by the split reduction "
            f"{spec.reduction} so that latent and teacher features line up"
        )


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of ``module`` (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


class Blueprint(nn.Module):
    """Base of all blueprint decoders: ``h_hat = body(y_hat)`` with shape checks.

    Subclasses validate their spec with :func:`check_spec`, then build ``self.body`` (a module
    taking NCHW latents and returning features in ``spec.layout``).

    Args:
        spec: the split the blueprint decodes to; stored as ``self.spec``.
        latent_channels: channels of ``y_hat``.
    """

    body: nn.Module
    #: Stride of the latent this decoder takes (FrankenSplit's encoders: 8).
    latent_stride: int = LATENT_STRIDE
    #: Whether only the spec's input size is accepted. Convolutional blueprints are not: they decode
    #: any latent size (patch training on CPU, other input resolutions with CNN teachers).
    fixed_size: bool = False

    def __init__(self, spec: SplitSpec, latent_channels: int) -> None:
        super().__init__()
        if latent_channels <= 0:
            raise ValueError(f"latent_channels must be positive, got {latent_channels}")
        self.spec = spec
        self.latent_channels = latent_channels

    @property
    def latent_spatial(self) -> tuple[int, int]:
        """(H, W) of ``y_hat`` for ``spec.input_size``."""
        stride = self.latent_stride
        return -(-self.spec.input_size[1] // stride), -(-self.spec.input_size[2] // stride)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Per-sample shape (C, H, W) of the ``y_hat`` this blueprint accepts."""
        return (self.latent_channels, *self.latent_spatial)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        """Decode ``y_hat`` (N, C_y, H/s, W/s), s = ``latent_stride``, to ``h_hat``.

        Raises:
            ValueError: ``y_hat`` is not (N, C_y, h, w), or for a ``fixed_size`` blueprint not
                (N, *latent_shape): Swin attention masks and the output shape depend on the input
                size, so build another blueprint from a spec with the new ``input_size``; weights
                transfer unchanged.
        """
        ok = y_hat.ndim == 4 and y_hat.shape[1] == self.latent_channels
        if ok and self.fixed_size:
            ok = tuple(y_hat.shape[1:]) == self.latent_shape
        if not ok:
            raise ValueError(
                f"{self.spec.family} blueprint expects y_hat of shape (N, {self.latent_shape}) "
                f"for input_size {self.spec.input_size}, got {tuple(y_hat.shape)}"
            )
        return self.body(y_hat)  # (N, *spec.feature_shape)


#: CompressAI's residual block (conv3x3 -> LeakyReLU -> conv3x3 -> LeakyReLU, + skip; the skip is
#: the identity when channels are equal and a 1x1 convolution otherwise), the Swin blueprint's.
ResBlock = ResidualBlock


class Residual(nn.Module):
    """``x + fn(x)``: a residual connection around a whole stage.

    Args:
        fn: the wrapped module; must preserve the shape of its input.
    """

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class ToNHWC(nn.Module):
    """(N, C, H, W) -> (N, H, W, C): convolutions hand over to timm Swin blocks (channels last)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)  # (N, H, W, C)


class ToNCHW(nn.Module):
    """(N, H, W, C) -> (N, C, H, W): timm Swin blocks hand back to convolutions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)  # (N, C, H, W)

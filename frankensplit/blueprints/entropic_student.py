"""Entropic Student's decoder: stride-4 latent -> the teacher's stride-4 features (a baseline).

Matsubara, Yang, Levorato, Mandt, "Supervised Compression for Resource-Constrained Edge Computing
Systems", WACV 2022 (and its SC2 benchmark, TMLR 2023, ``FPBasedResNetBottleneck``): the student
replaces the teacher's stem and first stage (ResNet ``layer1``, stride 4) by a GDN encoder with a
factorized prior and a small decoder of three 2x2 convolutions with inverse GDN between them,
widening to twice the target channels before projecting to them::

    y_hat (N, 24, H/4, W/4)
      -> conv2x2 24 -> 2C, pad 1  (N, 2C, H/4 + 1, W/4 + 1)
      -> IGDN(2C)
      -> conv2x2 2C -> C          (N, C, H/4, W/4)
      -> IGDN(C)
      -> conv2x2 C -> C, "same"   (N, C, H/4, W/4)      h_hat, C = spec.channels

C = 256 for ResNet-50 ``layer1`` (the paper), 24 for EfficientNet-Lite0 ``blocks.1``.

For a teacher whose stride-4 stage is narrow (Lite0: C = 24) the original widths make a decoder
of 14,472 parameters and 46 MMAC at 224 px, a twentieth of FrankenSplit's Lite0 blueprint
(300,976 parameters, 231 MMAC): too small to be a fair baseline (``benchmarks/split_diagnosis.py``:
its relative feature error is 0.6 with or without quantisation). ``"entropic_student_wide"``
keeps the structure and sets the hidden width to 96 (FrankenSplit's blueprint width), so the
decoder goes 24 -> 192 -> 96 -> C: 147,744 parameters and 469 MMAC for Lite0, 0.49x and 2.03x
the blueprint's (a 2x2-convolution decoder at stride 4 spends one MAC per parameter and pixel,
3,136 pixels at 224 px, so it cannot be within 2x of both; this is the closest). The layer
structure, widths, kernels and bias-free convolutions are the original's. Only the last
convolution's padding differs: the original encoder ends in an unpadded 2x2 convolution (a
(H/4 - 1)-sized latent, 55x55 at 224) and the original decoder's last convolution pads by one on
every side to get back to H/4; our encoder (``ENCODERS["entropic_student"]``) pads right/bottom
by one so that its latent is exactly H/4 (what every other part of the pipeline assumes), so the
last decoder convolution pads right/bottom by one as well, keeping H/4. The receptive fields are
the same up to that one-pixel border.
"""

from __future__ import annotations

from torch import nn

from frankensplit._compressai import GDN
from frankensplit.backbones import SplitSpec
from frankensplit.blueprints.common import Blueprint, ToNHWC, check_spec

__all__ = ["ES_REDUCTION", "ES_WIDE_WIDTH", "EntropicStudentDecoder",
           "build_entropic_student_decoder", "build_entropic_student_wide_decoder"]

#: Stride of Entropic Student's split (and of its latent): after the stem and first stage.
ES_REDUCTION = 4
#: Hidden width of ``"entropic_student_wide"``: FrankenSplit's blueprint width.
ES_WIDE_WIDTH = 96


class EntropicStudentDecoder(Blueprint):
    """Entropic Student's decoder for the teacher's stride-4 split (see the module docstring).

    Args:
        spec: the teacher's split at stride 4 (``SplitBackbone(..., split_reduction=4)``).
        latent_channels: channels of ``y_hat`` (24 in the paper).
        width: the hidden width W (None: the target's channels C, the paper's).

    Raises:
        ValueError: the spec is not a stride-4 split, or ``latent_channels`` is not positive.
    """

    latent_stride = ES_REDUCTION

    def __init__(self, spec: SplitSpec, latent_channels: int = 24, width: int | None = None
                 ) -> None:
        super().__init__(spec, latent_channels)
        check_spec(spec, family=spec.family, reductions=(ES_REDUCTION,), layout=spec.layout)
        c = spec.channels
        w = c if width is None else width  # hidden width W: 2W, then W, then C channels
        if w < 1:
            raise ValueError(f"width must be positive, got {w}")
        layers: list[nn.Module] = [
            nn.Conv2d(latent_channels, 2 * w, kernel_size=2, padding=1, bias=False),
            GDN(2 * w, inverse=True),  # (N, 2W, H/4 + 1, W/4 + 1)
            nn.Conv2d(2 * w, w, kernel_size=2, bias=False),
            GDN(w, inverse=True),  # (N, W, H/4, W/4)
            nn.ZeroPad2d((0, 1, 0, 1)),
            nn.Conv2d(w, c, kernel_size=2, bias=False),  # (N, C, H/4, W/4)
        ]
        if spec.layout == "NHWC":  # hierarchical transformers keep tokens channels-last
            layers.append(ToNHWC())
        self.body = nn.Sequential(*layers)


def build_entropic_student_decoder(spec: SplitSpec, latent_channels: int = 24) -> nn.Module:
    """Registry factory for the ``"entropic_student"`` decoder; see :class:`EntropicStudentDecoder`."""
    return EntropicStudentDecoder(spec, latent_channels)


def build_entropic_student_wide_decoder(spec: SplitSpec, latent_channels: int = 24) -> nn.Module:
    """Registry factory for ``"entropic_student_wide"``: hidden width `ES_WIDE_WIDTH`."""
    return EntropicStudentDecoder(spec, latent_channels, width=ES_WIDE_WIDTH)

"""Edge encoders g_a: image x -> latent y.

``ENCODERS`` maps an id to an encoder class, called as ``(in_channels, latent_channels)``. Every
encoder exposes ``latent_channels`` and, as a class attribute, ``reduction``, so the rest of the
pipeline (entropy model, blueprint, wire format, the latent shape a server accepts) is derived
from it; the server reads the reduction without building g_a (`Architecture.latent_shape`).
"""

from __future__ import annotations

from torch import Tensor, nn

from frankensplit._compressai import GDN
from frankensplit.registry import Registry

__all__ = ["ENCODERS", "EntropicStudentEncoder", "FrankenSplitEncoder", "ResidualDownBlock"]

ENCODERS: Registry = Registry("encoder")


class ResidualDownBlock(nn.Module):
    """conv3x3(stride s) -> ReLU -> conv3x3 -> ReLU, plus a conv1x1(stride s) projection of the input.

    No activation after the sum and no normalisation (FRANKENSPLIT.md, "Encoder g_a"): the edge encoder
    stays a plain stack of convolutions that exports cleanly to ONNX and runs fast on weak CPUs.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1),
            nn.ReLU(inplace=True),
        )
        self.skip = nn.Conv2d(in_ch, out_ch, 1, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


@ENCODERS.register("frankensplit")
class FrankenSplitEncoder(nn.Sequential):
    """The paper's shallow encoder: three stride-2 residual blocks, 3 -> 48 -> 64 -> 48 channels.

    141,696 parameters and about 0.53 GMAC at 224x224; the latent is 48 x H/8 x W/8.
    """

    reduction = 8

    def __init__(self, in_channels: int = 3, latent_channels: int = 48, width: int = 64) -> None:
        super().__init__(
            ResidualDownBlock(in_channels, latent_channels),  # (N, 48, H/2, W/2)
            ResidualDownBlock(latent_channels, width),  # (N, 64, H/4, W/4)
            ResidualDownBlock(width, latent_channels),  # (N, 48, H/8, W/8)
        )
        self.latent_channels = latent_channels


@ENCODERS.register("entropic_student")
class EntropicStudentEncoder(nn.Sequential):
    """Entropic Student's encoder (Matsubara et al., WACV 2022), for the baseline.

    5x5 conv 3->96 s2, GDN, 5x5 conv 96->48 s2, GDN, 2x2 conv 48->24 (padding chosen so the latent is
    exactly H/4 x W/4, the stride of ResNet's layer1 which it replaces).
    """

    reduction = 4

    def __init__(self, in_channels: int = 3, latent_channels: int = 24) -> None:
        super().__init__(
            nn.Conv2d(in_channels, 96, 5, stride=2, padding=2, bias=False),
            GDN(96),
            nn.Conv2d(96, 48, 5, stride=2, padding=2, bias=False),
            GDN(48),
            nn.ZeroPad2d((0, 1, 0, 1)),  # keeps H/4 x W/4 with an even kernel, ONNX-friendly
            nn.Conv2d(48, latent_channels, 2, stride=1, bias=False),
        )
        self.latent_channels = latent_channels

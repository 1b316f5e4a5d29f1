"""Blueprint decoders g_s: decoded latent ``y_hat`` -> teacher features ``h_hat`` at the split.

Each backbone family gets a decoder built from its own block type and ending in a partial replica
of the teacher's last replaced layer, so ``h_hat`` matches what the frozen tail expects
(``SplitSpec.feature_shape`` in ``SplitSpec.layout``). Every width derives from the ``SplitSpec``.

``BLUEPRINTS`` maps a family name to a factory ``build(spec, latent_channels=48) -> nn.Module``;
:func:`create_blueprint` picks the factory from ``spec.family``. Registering a family here is all a
new blueprint needs: the tests are parametrized over ``BLUEPRINTS.names()``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from frankensplit.backbones import SplitSpec
from frankensplit.blueprints.common import Blueprint, ResBlock, count_parameters
from frankensplit.blueprints.convnext import ConvNeXtBlueprint, build_convnext_blueprint
from frankensplit.blueprints.efficientnet import (
    EfficientNetBlueprint,
    build_efficientnet_blueprint,
)
from frankensplit.blueprints.resnet import ResNetBlueprint, build_resnet_blueprint
from frankensplit.blueprints.swin import SwinBlueprint, build_swin_blueprint
from frankensplit.registry import Registry

__all__ = [
    "BLUEPRINTS",
    "Blueprint",
    "BlueprintFactory",
    "ConvNeXtBlueprint",
    "EfficientNetBlueprint",
    "ResBlock",
    "ResNetBlueprint",
    "SwinBlueprint",
    "count_parameters",
    "create_blueprint",
]

BlueprintFactory = Callable[[SplitSpec, int], nn.Module]

BLUEPRINTS: Registry[BlueprintFactory] = Registry("blueprint")
BLUEPRINTS.register("swin")(build_swin_blueprint)
BLUEPRINTS.register("convnext")(build_convnext_blueprint)
BLUEPRINTS.register("resnet")(build_resnet_blueprint)
BLUEPRINTS.register("efficientnet")(build_efficientnet_blueprint)


def create_blueprint(spec: SplitSpec, latent_channels: int = 48) -> nn.Module:
    """The blueprint decoder for ``spec``, chosen by ``spec.family``.

    Args:
        spec: the teacher split to decode to.
        latent_channels: channels of the latent ``y_hat``.

    Raises:
        ValueError: no blueprint for ``spec.family`` (the message lists the known families), or
            the family's blueprint cannot produce ``spec`` (e.g. an unsupported reduction).
    """
    return BLUEPRINTS.get(spec.family)(spec, latent_channels)

"""Blueprint decoders g_s: decoded latent ``y_hat`` -> teacher features ``h_hat`` at the split.

Each backbone family gets a decoder built from its own block type and ending in a partial replica
of the teacher's last replaced layer, so ``h_hat`` matches what the frozen tail expects
(``SplitSpec.feature_shape`` in ``SplitSpec.layout``). Every width derives from the ``SplitSpec``.

``BLUEPRINTS`` maps a family name to a factory ``build(spec, latent_channels=48) -> nn.Module``;
:func:`create_blueprint` picks the factory from ``spec.family``. Registering a family here is all a
new blueprint needs: the tests are parametrized over ``BLUEPRINTS.names()``.

``DECODERS`` names the decoder *design* a model uses, independent of the family: ``"blueprint"``
(FrankenSplit's, picked per family from ``BLUEPRINTS``) or ``"entropic_student"`` (the baseline's
family-agnostic stride-4 decoder). :func:`create_decoder` builds one from a name and a spec.
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
from frankensplit.blueprints.entropic_student import (
    EntropicStudentDecoder,
    build_entropic_student_decoder,
    build_entropic_student_wide_decoder,
)
from frankensplit.blueprints.resnet import ResNetBlueprint, build_resnet_blueprint
from frankensplit.blueprints.swin import SwinBlueprint, build_swin_blueprint
from frankensplit.registry import Registry

__all__ = [
    "BLUEPRINTS",
    "DECODERS",
    "Blueprint",
    "BlueprintFactory",
    "ConvNeXtBlueprint",
    "EfficientNetBlueprint",
    "EntropicStudentDecoder",
    "ResBlock",
    "ResNetBlueprint",
    "SwinBlueprint",
    "count_parameters",
    "create_blueprint",
    "create_decoder",
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


DECODERS: Registry[BlueprintFactory] = Registry("decoder")
DECODERS.register("blueprint")(create_blueprint)
DECODERS.register("entropic_student")(build_entropic_student_decoder)
DECODERS.register("entropic_student_wide")(build_entropic_student_wide_decoder)


def create_decoder(name: str, spec: SplitSpec, latent_channels: int = 48) -> nn.Module:
    """The decoder g_s of design ``name`` (a ``DECODERS`` id) for ``spec``.

    Raises:
        ValueError: unknown design (the message lists the known ones), or a spec the design
            cannot produce.
    """
    return DECODERS.get(name)(spec, latent_channels)

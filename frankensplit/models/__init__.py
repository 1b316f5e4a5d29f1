"""Models: encoders, entropy models, the split model and the zoo."""

from frankensplit.models.encoder import ENCODERS
from frankensplit.models.entropy import ENTROPY_MODELS, FactorizedPrior, NotUpdatedError
from frankensplit.models.split import EdgePart, FrankenSplit, ServerPart, count_parameters
from frankensplit.models.zoo import (
    MODELS,
    ModelEntry,
    build_model,
    create_model,
    list_models,
    load_codec,
    save_codec,
)

__all__ = [
    "ENCODERS",
    "ENTROPY_MODELS",
    "MODELS",
    "EdgePart",
    "FactorizedPrior",
    "FrankenSplit",
    "ModelEntry",
    "NotUpdatedError",
    "ServerPart",
    "build_model",
    "count_parameters",
    "create_model",
    "list_models",
    "load_codec",
    "save_codec",
]

"""Models: encoders, entropy models, the split model and the zoo."""

from frankensplit._lazy import lazy_exports

#: module of each public name, imported on first use (`frankensplit --help` imports no torch).
_EXPORTS = {
    "frankensplit.models.encoder": ("ENCODERS",),
    "frankensplit.models.entropy": ("ENTROPY_MODELS", "FactorizedPrior", "NotUpdatedError"),
    "frankensplit.models.split": ("EdgePart", "FrankenSplit", "ServerPart", "count_parameters"),
    "frankensplit.models.zoo_index": ("MODELS", "ModelEntry", "list_models"),
    "frankensplit.models.zoo": ("build_model", "create_model", "load_codec", "save_codec"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
lazy_exports(__name__, _EXPORTS)

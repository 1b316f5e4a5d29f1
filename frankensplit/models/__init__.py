"""Models: encoders, entropy models, the split model and the zoo."""

from frankensplit._lazy import lazy_exports

#: module of each public name, imported on first use (`frankensplit --help` imports no torch).
_EXPORTS = {
    "frankensplit.models.encoder": ("ENCODERS",),
    "frankensplit.models.entropy": ("ENTROPY_MODELS", "FactorizedPrior", "GainedFactorizedPrior",
                                    "NotUpdatedError"),
    "frankensplit.models.split": ("EdgePart", "FrankenSplit", "ServerPart", "count_parameters"),
    "frankensplit.models.architecture": ("Architecture",),
    "frankensplit.models.zoo_index": ("MODELS", "ModelEntry", "list_models"),
    "frankensplit.models.codec_file": ("load_codec", "save_codec"),
    "frankensplit.models.zoo": ("create_model", "load_model_file"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
lazy_exports(__name__, _EXPORTS)

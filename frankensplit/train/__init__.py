"""Training: head-distilled rate-distortion with optional saliency guidance."""

from frankensplit._lazy import lazy_exports

#: module of each public name, imported on first use (`frankensplit --help` imports no torch).
_EXPORTS = {
    "frankensplit.train.loop": ("format_lmbda", "train", "train_one"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
lazy_exports(__name__, _EXPORTS)

"""Training: head-distilled rate-distortion with optional saliency guidance."""

from frankensplit.train.loop import format_lmbda, train, train_one

__all__ = ["format_lmbda", "train", "train_one"]

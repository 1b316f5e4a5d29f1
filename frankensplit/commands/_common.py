"""Pieces shared by the core sub-commands (torch-free until a model is loaded)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from frankensplit.cli import check_model, teacher_weights
from frankensplit.models.zoo_index import MODELS, default_model_id

if TYPE_CHECKING:
    from frankensplit.models.split import FrankenSplit

__all__ = ["add_model_args", "load_model", "untrained_note"]


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--teacher-weights`` and ``--codec-weights``."""
    parser.add_argument("--model", default=None,
                        help=f"model id (default: {default_model_id()}); see `frankensplit models`")
    parser.add_argument("--teacher-weights", default="auto", type=teacher_weights(),
                        help="auto | offline | online | PATH to a checkpoint of the teacher")
    parser.add_argument("--codec-weights", default=None,
                        help="codec safetensors to use instead of the shipped ones")


def untrained_note(model_id: str) -> str | None:
    """A warning line for models whose codec weights are random, else None (also for codec
    files, which hold trained weights)."""
    if model_id not in MODELS:
        return None
    entry = MODELS.get(model_id)
    if entry.trained:
        return None
    return (f"note: {model_id} has RANDOM codec weights (no trained weights shipped for it); "
            "the bytes and the pipeline are real, the predictions are not meaningful")


def load_model(args: argparse.Namespace) -> FrankenSplit:
    """The model named by the args, with a note on stderr when its codec is untrained."""
    from frankensplit.models.zoo import create_model

    model_id = args.model or default_model_id()
    check_model(model_id)
    model = create_model(model_id, teacher_weights=args.teacher_weights,
                         codec_weights=args.codec_weights)
    note = untrained_note(model_id) if args.codec_weights is None else None
    if note:
        print(note, file=sys.stderr)
    return model

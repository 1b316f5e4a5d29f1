"""Pieces shared by the core sub-commands (torch-free until a model is loaded)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from frankensplit.accepts import check_rate as check_rate_index
from frankensplit.accepts import describe_rates
from frankensplit.cli import check_model, non_negative_int, teacher_weights
from frankensplit.models.zoo_index import MODELS, default_model_id

if TYPE_CHECKING:
    from frankensplit.models.split import FrankenSplit

__all__ = ["add_model_args", "add_rate_arg", "check_rate", "load_model",
           "untrained_note"]


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


def add_rate_arg(parser: argparse.ArgumentParser, every: bool = False) -> None:
    """``--rate I``: a variable-rate model's rate index (0 = the lowest bit rate). An index, not
    a lambda: the index is what the packet carries and what every listing numbers. Leaving it
    out means the model's default rate (a zoo entry's, `check_rate`), or with ``every`` every
    rate of the model."""
    default = ("every rate" if every else "the zoo model's default rate; required for a "
               "variable-rate model without one, such as a codec file")
    parser.add_argument("--rate", type=non_negative_int, default=None, metavar="I",
                        help=f"rate index of a variable-rate model (0 = lowest bit rate; "
                             f"`frankensplit info` lists them; default: {default})")


def check_rate(model_id: str, rates: tuple[float, ...] | None, rate: int | None,
               every: bool = False, default: int | None = None) -> int | None:
    """Refuse a ``--rate`` the model does not have, any ``--rate`` for a fixed-rate model, and
    none for a variable-rate model unless it has a ``default`` rate (`FrankenSplit.default_rate`)
    or ``every`` rate is then meant.

    Returns:
        The rate index to use: ``rate``, else ``default`` (None: the fixed rate, or ``every``).

    Raises:
        ValueError: one line naming the model's rates.
    """
    if rate is None and every and rates is not None:
        return None
    try:  # the rule is the packets' own (accepts.check_rate); the wording is the command line's
        return check_rate_index(None if rates is None else len(rates), rate, default)
    except ValueError:
        if rates is None:
            raise ValueError(f"--rate {rate}: {model_id} has one fixed rate; leave --rate out"
                             ) from None
        given = "" if rate is None else f"--rate {rate}: "
        raise ValueError(f"{given}{model_id} is a variable-rate model: pass --rate I, one of "
                         f"{describe_rates(rates)}") from None

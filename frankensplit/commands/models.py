"""``frankensplit models``: list the model ids."""

from __future__ import annotations

import argparse
import json

from frankensplit.models.zoo_index import MODELS, default_model_id, entry_dict

HELP = "list model ids (shipped weights first)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace) -> int:
    default = default_model_id()
    entries = sorted((MODELS.get(n) for n in MODELS.names()), key=lambda e: (not e.trained, e.model_id))
    for e in entries:
        if args.json:
            print(json.dumps({**entry_dict(e), "trained": e.trained, "default": e.model_id == default}))
        else:
            flag = "trained  " if e.trained else "untrained"
            mark = " (default)" if e.model_id == default else ""
            print(f"{e.model_id:32s} {flag} {e.architecture.teacher:24s} {e.description}{mark}")
    return 0

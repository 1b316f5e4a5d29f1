"""``frankensplit decode``: the server side, ``.fsb`` packets -> top-k classes as JSON lines.

Each line is ``{"file", "model_id", "bytes", "predictions": [{"index", "name", "probability"}]}``,
the ``predictions`` of ``frankensplit serve``'s answers (`frankensplit.protocol`); a variable-rate
model's packet adds the rate it was coded at, ``"rate"`` (index) and ``"lambda"``, as read from
the packet (each packet is decoded at its own rate).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from frankensplit import protocol
from frankensplit.cli import check_model
from frankensplit.commands._common import add_model_args, load_model
from frankensplit.models.zoo_index import default_model_id

HELP = "server side: decode .fsb bitstreams and print the top-k classes (JSON lines)"


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("files", nargs="+", help=".fsb files written by `frankensplit encode`")
    parser.add_argument("--topk", type=int, default=5, help="classes to print per file (1..1000)")


def run(args: argparse.Namespace) -> int:
    topk = protocol.parse_topk(args.topk)
    check_model(args.model or default_model_id())  # these before the model loads
    paths = [Path(f) for f in args.files]
    for path in paths:
        if not path.is_file():
            raise ValueError(f"bitstream not found: {path} (`frankensplit encode` writes them)")
    model = load_model(args)
    server = model.server
    for path in paths:
        data = path.read_bytes()
        try:
            packet = server.parse(data)  # unpacked and checked once: id, shape, rate, limits
            probs = server.decode([packet])[0].softmax(-1)  # (classes,)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
        values, indexes = probs.topk(min(topk, probs.numel()))
        rate = {} if packet.rate is None else {"rate": packet.rate,
                                               "lambda": model.rates[packet.rate]}
        print(json.dumps({"file": str(path), "model_id": model.model_id, **rate,
                          "bytes": len(data),
                          "predictions": protocol.predictions(values.tolist(), indexes.tolist(),
                                                              probs.numel())}))
    return 0

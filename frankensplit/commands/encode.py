"""``frankensplit encode``: the edge side, images -> one ``.fsb`` packet per image.

A variable-rate model encodes at ``--rate I``, a rate index (0 = the lowest bit rate;
``frankensplit info`` lists each index's lambda), or without it at a zoo model's default rate (a
codec file has none: it needs ``--rate``): the edge's g_a runs once per image and its ``pack``
codes the latent at that rate (what ``EdgePart.encode(x, rate)`` does); each line names the rate.
``tools/golden_packets.py`` records the packets of these same calls.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from frankensplit.cli import check_model
from frankensplit.commands._common import add_model_args, add_rate_arg, check_rate, load_model
from frankensplit.models.zoo_index import default_model_id

HELP = "edge side: encode images into FrankenSplit bitstreams (.fsb), one per image"

def configure(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", required=True, help="output folder for the .fsb files")
    add_rate_arg(parser)


def run(args: argparse.Namespace) -> int:
    check_model(args.model or default_model_id())  # these two before torch loads
    for path in args.images:
        if not Path(path).is_file():
            raise ValueError(f"image not found: {path}")
    import torch

    from frankensplit.data import load_image, make_transform
    from frankensplit.models.split import FrankenSplit

    model = load_model(args)
    rate = check_rate(model.model_id, model.rates, args.rate, default=model.default_rate)
    transform = make_transform(model.data_config, "eval")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, args.images):
        x = transform(load_image(path)).unsqueeze(0)  # (1, 3, 224, 224)
        with torch.no_grad():
            y = model.edge.g_a(x)  # (1, C, h, w): g_a runs once, here
        (packet,) = model.edge.pack(y, rate)  # = model.edge.encode(x, rate)
        target = out / f"{path.stem}.fsb"
        target.write_bytes(packet)
        h, w = x.shape[-2:]
        bits = float(model.latent_bits(y, rate)[0])
        print(json.dumps({
            "image": str(path), "file": str(target), "model_id": model.model_id,
            **({} if rate is None else {"rate": rate}),
            "bytes": len(packet), "bpp_actual": round(FrankenSplit.bpp(len(packet), h, w), 5),
            "bpp_estimated": round(FrankenSplit.bpp_from_bits(bits, h, w), 5),
        }))
    return 0


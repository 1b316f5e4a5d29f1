"""``frankensplit encode``: the edge side, images -> one ``.fsb`` packet per image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from frankensplit.cli import check_model
from frankensplit.commands._common import add_model_args, load_model
from frankensplit.models.zoo_index import default_model_id

HELP = "edge side: encode images into FrankenSplit bitstreams (.fsb), one per image"

def configure(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", required=True, help="output folder for the .fsb files")

def run(args: argparse.Namespace) -> int:
    check_model(args.model or default_model_id())  # these two before torch loads
    for path in args.images:
        if not Path(path).is_file():
            raise ValueError(f"image not found: {path}")
    from frankensplit.data import load_image, make_transform
    from frankensplit.models.split import FrankenSplit

    model = load_model(args)
    transform = make_transform(model.data_config, "eval")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, args.images):
        x = transform(load_image(path)).unsqueeze(0)  # (1, 3, 224, 224)
        (packet,) = model.edge.encode(x)  # g_a runs once, here
        target = out / f"{path.stem}.fsb"
        target.write_bytes(packet)
        h, w = x.shape[-2:]
        # the decoded latent's bits are y's (`FrankenSplit.latent_bits`): no second run of g_a
        bits = float(model.latent_bits(model.server.decode_latent([packet]))[0])
        print(json.dumps({
            "image": str(path), "file": str(target), "model_id": model.model_id,
            "bytes": len(packet), "bpp_actual": round(FrankenSplit.bpp(len(packet), h, w), 5),
            "bpp_estimated": round(FrankenSplit.bpp_from_bits(bits, h, w), 5),
        }))
    return 0


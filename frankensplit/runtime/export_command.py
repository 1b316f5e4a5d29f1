"""``frankensplit export``: write a model's edge and server bundles."""

from __future__ import annotations

import argparse
import sys

__all__ = ["HELP", "configure", "run"]

HELP = "export a model as an edge bundle (ONNX encoder, CDF tables) and a server bundle"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    parser.add_argument("--model", required=True, help="zoo model id (see `frankensplit models`)")
    parser.add_argument("--out", required=True, help="output folder; gets edge/ and server/")
    parser.add_argument("--codec-weights", default=None,
                        help="codec safetensors of your own instead of the zoo's")
    parser.add_argument("--teacher-weights", default="auto",
                        help="teacher weights: auto, offline, online or a checkpoint path")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")


def run(args: argparse.Namespace) -> int:
    """Export and print where the bundles went."""
    from frankensplit.runtime.export import export_model

    result = export_model(
        args.model, args.out, codec_weights=args.codec_weights,
        teacher_weights=args.teacher_weights, opset=args.opset,
    )
    print(f"edge bundle:   {result.edge_dir}", file=sys.stdout)
    print(f"server bundle: {result.server_dir}", file=sys.stdout)
    return 0

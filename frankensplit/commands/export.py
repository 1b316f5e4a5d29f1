"""``frankensplit export``: write a model's edge and server bundles (optionally an int8 edge, and
the server half as ONNX for ``serve --onnx``)."""

from __future__ import annotations

import argparse
import sys

from frankensplit.cli import check_model, teacher_weights
from frankensplit.runtime.edge.bundle import DEFAULT_CALIBRATION_IMAGES

__all__ = ["HELP", "configure", "run"]

HELP = "export a model as an edge bundle (ONNX encoder, CDF tables) and a server bundle"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    parser.add_argument("--model", required=True,
                        help="zoo model id (see `frankensplit models`) or a codec file written by "
                             "`frankensplit train`; a variable-rate model gets one edge bundle "
                             "holding every rate")
    parser.add_argument("--out", required=True, help="output folder; gets edge/ and server/")
    parser.add_argument("--codec-weights", default=None,
                        help="codec safetensors of your own instead of the zoo's")
    parser.add_argument("--teacher-weights", default="auto", type=teacher_weights(),
                        help="teacher weights: auto, offline, online or a checkpoint path")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    parser.add_argument("--int8", action="store_true",
                        help="ship a static int8 encoder (ONNX Runtime quantize_static, QDQ, "
                             "per-channel weights); needs --calibration")
    parser.add_argument("--calibration", default=None, metavar="DIR",
                        help="training images to calibrate the int8 encoder on (never the "
                             "evaluation set), with the teacher's preprocessing")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        metavar="N", help="how many images of DIR, evenly spaced over its sorted "
                                          f"files (default {DEFAULT_CALIBRATION_IMAGES}; about 30 MB "
                                          "of memory each while calibrating)")
    parser.add_argument("--server-onnx", action="store_true",
                        help="also write server-onnx/: g_s + tail as ONNX (dynamic batch) with the "
                             "coding tables, for `serve --onnx` (no torch on the server)")


def run(args: argparse.Namespace) -> int:
    """Export and print where the bundles went."""
    check_model(args.model)
    if args.int8 != (args.calibration is not None):
        raise ValueError("--int8 and --calibration DIR go together: an int8 encoder is "
                         "calibrated on images of DIR")
    from frankensplit.runtime.edge.export import Int8Calibration, export_model

    int8 = Int8Calibration(args.calibration, args.calibration_images) if args.int8 else None
    result = export_model(
        args.model, args.out, codec_weights=args.codec_weights,
        teacher_weights=args.teacher_weights, opset=args.opset, int8=int8,
        server_onnx=args.server_onnx,
    )
    precision = "int8" if int8 is not None else "fp32"
    from frankensplit.runtime.edge.bundle import read_manifest

    rates = read_manifest(result.edge_dir, verify=False).rates
    listed = "" if rates is None else ", rates " + ", ".join(
        f"{i}: lambda {v:g}" for i, v in enumerate(rates))
    print(f"edge bundle:   {result.edge_dir} ({precision} encoder{listed})", file=sys.stdout)
    print(f"server bundle: {result.server_dir}", file=sys.stdout)
    if result.server_onnx_dir is not None:
        print(f"server ONNX:   {result.server_onnx_dir} (frankensplit serve --onnx --model "
              f"{result.server_onnx_dir})", file=sys.stdout)
    return 0

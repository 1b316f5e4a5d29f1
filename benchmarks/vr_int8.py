"""Where a variable-rate model's int8 encoder loses precision: its latent error per rate, in steps.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/vr_int8.py [--model fs-lite0-vr] \\
        [--calibration ../shared/data/train/imagenette224] [--calibration-images 128] \\
        [--images 32]

``frankensplit export --int8`` refuses a graph whose latent is more than 0.5 symbol steps (RMS)
from the fp32 graph's at any rate (`runtime.edge.export`). A variable-rate model rounds
``y * gain[r]``, so one absolute error of y costs ``gain[r]`` times more steps at the highest rate
than at gain 1, and the eleven-rate model's int8 encoder passes at its lower rates only. This
script asks whether the error is made late, where keeping a few nodes float32 would be cheap, or
early: it quantises g_a as the export does (static QDQ, per-channel int8 weights, per-tensor
uint8 activations, Percentile calibration, the output node float32) and again with g_a's whole
last block float32 (``quantize_encoder(float_nodes=...)``), and prints the latent's RMS error in
each rate's symbol steps on the first ``--images`` dev images (the validation split, never the
calibration set). For scale: rounding itself adds 0.29 steps (RMS of a uniform error of one step).

Not a unit test; the figures depend on the weights, so report them with the model and commit.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEV = REPO.parent / "shared/data/eval/ilsvrc2012_val_dev"
LIMIT = 0.5  # the export's limit (runtime.edge.export._INT8_MAX_RMS), symbol steps


def last_block_nodes(model_path: Path) -> list[str]:
    """The nodes of g_a's last residual block (ONNX names ``/<index>/...`` of the export), but
    its output Add, which the export keeps float32 anyway."""
    import onnx

    nodes = [n.name for n in onnx.load(str(model_path)).graph.node]
    last = max(int(name.split("/")[1]) for name in nodes if name.count("/") >= 2)
    return [n for n in nodes if n.startswith(f"/{last}/") and not n.endswith("/Add")]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fs-lite0-vr",
                   help="a variable-rate zoo id or codec file")
    p.add_argument("--calibration", type=Path, default=REPO.parent / "shared/data/train/imagenette224")
    p.add_argument("--calibration-images", type=int, default=128)
    p.add_argument("--images", type=int, default=32, help="first N dev images the error is taken on")
    args = p.parse_args(argv)

    import numpy as np

    from frankensplit.eval import load_dataset
    from frankensplit.models.zoo import create_model
    from frankensplit.runtime.edge.bundle import Preprocess
    from frankensplit.runtime.edge.export import export_edge
    from frankensplit.runtime.edge.preprocess import preprocess
    from frankensplit.runtime.edge.quantize import (
        calibration_images,
        latent_error,
        quantize_encoder,
    )

    model = create_model(args.model, teacher_weights=None)  # the encoder needs no teacher
    if model.rates is None:
        raise SystemExit(f"{args.model} is a fixed-rate model: its error is one number, "
                         "`frankensplit export --int8` prints it")
    config = Preprocess.from_data_config(model.data_config)
    files, _ = load_dataset(DEV, args.images)
    x = np.stack([preprocess(f, config) for f in files])  # (n, 3, crop, crop)
    gains = [t["gain"] for t in model.server.coding_tables().values()]
    images = calibration_images(args.calibration, args.calibration_images)
    with tempfile.TemporaryDirectory(prefix="vr-int8-") as tmp:
        fp32 = Path(tmp) / export_edge(model, tmp).encoder_file  # the fp32 bundle's graph
        variants = {"as exported (output node float32)": [],
                    "g_a's last block float32 too": last_block_nodes(fp32)}
        print(f"{args.model}: latent RMS error of int8 against fp32 in symbol steps, {len(files)} "
              f"dev images, calibrated on {len(images)} of {args.calibration}")
        print("| variant | " + " | ".join(f"{v:g}" for v in model.rates) + " | rates within "
              f"{LIMIT} |")
        print("|---|" + "---:|" * (len(model.rates) + 1))
        for name, nodes in variants.items():
            int8 = Path(tmp) / "encoder_int8.onnx"
            quantize_encoder(fp32, int8, images, config, args.calibration, float_nodes=nodes)
            errors = latent_error(fp32, int8, x, gains)
            within = [str(r) for r, e in enumerate(errors) if e <= LIMIT]
            print(f"| {name} | " + " | ".join(f"{e:.2f}" for e in errors)
                  + f" | {', '.join(within) or 'none'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The GPU recipe's helpers for run.sh: check the machine, size the run, save an interrupted one.

    python tools/gpu_recipe/recipe.py check --config C [--set K=V ...]
    python tools/gpu_recipe/recipe.py plan --config C --calibration DIR --wall S --left S [--set ...]
    python tools/gpu_recipe/recipe.py export-last --config C --run DIR [--set ...]

``check`` prints the versions and the accelerator, and refuses a pack that is not the one the
config names (no manifest, a missing teacher file, an init codec whose sha256 is not the packed
one). ``plan`` prints the ``steps_per_epoch`` that fills the time left, from a calibration run
of the same config (two short epochs: the second one's images per second, and the time that
was not spent in steps scaled to the main run's epochs). ``export-last`` writes the last
finished epoch of an interrupted run (``last.pt``) as its ``best.safetensors`` and a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / ".gpu" / "manifest.json"


def check(cfg) -> None:
    import compressai
    import timm
    import torch

    from frankensplit.sources import source_sha256

    cuda = torch.cuda.is_available()
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, timm {timm.__version__}, "
          f"compressai {getattr(compressai, '__version__', '?')}, "
          f"device {torch.cuda.get_device_name() if cuda else 'cpu'}")
    if cfg.device.startswith("cuda") and not cuda:
        raise SystemExit(f"device {cfg.device}: CUDA is not available here")
    if cfg.device.startswith("cuda") and cfg.amp and not torch.cuda.is_bf16_supported():
        raise SystemExit("amp: this GPU has no bfloat16")
    if not MANIFEST.is_file():
        raise SystemExit(f"{MANIFEST.relative_to(REPO)} missing: build the pack with "
                         "tools/gpu_recipe/pack.py and carry .gpu")
    pack = json.loads(MANIFEST.read_text())
    if not (REPO / cfg.teacher_weights).is_file():
        raise SystemExit(f"teacher weights {cfg.teacher_weights} missing from the pack")
    sha = source_sha256(cfg.init_codec, REPO)
    if sha != pack["init_codec"]["sha256"]:
        raise SystemExit(f"{cfg.init_codec} has sha256 {sha}, the pack was made for "
                         f"{pack['init_codec']['sha256']} ({pack['init_codec']['same_as']})")
    if not cfg.amp:
        print("note: amp is off, so the bfloat16-weight teacher is not exactly the float32 one")
    print(f"pack: {pack['images']} images ({pack['image_bytes']:,} B), teacher "
          f"{pack['teacher']['file']}, init codec {cfg.init_codec} = {pack['init_codec']['same_as']}")


def plan(cfg, calibration: Path, wall: float, left: float) -> int:
    """Steps per epoch that end the run ``left`` seconds from now (minus its fixed costs)."""
    history = json.loads((calibration / "variable-rate" / "summary.json").read_text())["history"]
    stage = cfg.stages[0]
    rate = history[-1]["images_per_s"]
    # Not steps: start-up S (imports, teacher, warm start) and two epoch ends e (CDF tables,
    # checkpoint). The main run pays S + epochs * e, and run.sh stops it 25 s before the budget:
    # reserving fixed * (1 + epochs / 4) + 30 s covers that whenever e <= S (epochs <= 8).
    fixed = max(0.0, wall - sum(h["seconds"] for h in history))
    train_s = left - fixed * (1 + stage.epochs / 4) - 30
    steps = max(1, int(train_s * rate / stage.batch_size / stage.epochs))
    print(json.dumps({"images_per_s": round(rate, 1), "calibration_wall_s": wall,
                      "fixed_s": round(fixed, 1), "left_s": left, "train_s": round(train_s, 1),
                      "epochs": stage.epochs, "batch_size": stage.batch_size,
                      "steps_per_epoch": steps}), file=sys.stderr)
    return steps


def export_last(cfg, run: Path) -> None:
    import torch

    from frankensplit.models.codec_file import load_codec_state, save_codec
    from frankensplit.train.objectives import create_objective

    last = run / "last.pt"
    if not last.is_file():
        raise SystemExit(f"{last} missing: the run stopped before its first epoch ended")
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    model = create_objective(cfg).build(cfg.model_id)
    load_codec_state(model, ckpt["codec"], source=str(last))
    save_codec(model, run / "best.safetensors")
    summary = {"model_id": cfg.model_id, "lmbda": None, "stopped_early": True,
               "epochs_done": ckpt["epoch"], "history": ckpt["history"]}
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{run / 'best.safetensors'}: the weights after epoch {ckpt['epoch']} of "
          f"{cfg.stages[ckpt['stage']].epochs}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("check", "plan", "export-last"))
    p.add_argument("--config", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--calibration", type=Path, help="plan: the calibration run's folder")
    p.add_argument("--wall", type=float, help="plan: the calibration run's wall-clock seconds")
    p.add_argument("--left", type=float, help="plan: seconds left for the main run")
    p.add_argument("--run", type=Path, help="export-last: the run's variable-rate folder")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    warnings.simplefilter("ignore", FutureWarning)
    from frankensplit.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.what == "check":
        check(cfg)
    elif args.what == "plan":
        print(plan(cfg, args.calibration, args.wall, args.left))
    else:
        export_last(cfg, args.run)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``frankensplit train``: train one codec per lambda of a config (DDP when launched by torchrun)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["HELP", "configure", "format_summary", "run"]

HELP = "train codecs from a YAML config, one per lambda (FrankenSplit and the baselines)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    parser.add_argument("--config", required=True, help="YAML training config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value (YAML syntax, dotted keys, list items by "
                             "index: stages.0.epochs=1, lmbda=[0.5,1]); repeatable")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<config stem>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from each lambda's last.pt (same seeds: same result)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


#: Metrics of the summary line and how each is printed.
_METRICS = {"top1": "top1 {:.2f}%", "agreement": "agreement {:.2f}%",
            "bpp_estimated": "bpp_estimated {:.4f}", "psnr": "PSNR {:.2f} dB"}


def format_summary(summary: dict[str, Any], run_dir: Path) -> str:
    """One line per trained model: id, best validation metrics, where its weights are."""
    best = summary.get("best", {})
    where = f"{best['stage']} epoch {best['epoch']}" if "epoch" in best else "no validation"
    metrics = [fmt.format(best[k]) for k, fmt in _METRICS.items()
               if isinstance(best.get(k), (int, float)) and not math.isnan(best[k])]
    return (f"{summary['model_id']}: best {where}"
            + (f" ({', '.join(metrics)})" if metrics else "")
            + f" -> {run_dir / 'best.safetensors'}")


def run(args: argparse.Namespace) -> int:
    """Load the config, train every lambda, print one summary line each (main process only)."""
    from frankensplit.config import load_config
    from frankensplit.train.distributed import env_info
    from frankensplit.train.loop import format_lmbda, train

    cfg = load_config(args.config, args.overrides)
    if args.no_progress:  # no bars: one log line per epoch instead, so a log file shows progress
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    summaries = train(cfg, out, resume=args.resume, progress=not args.no_progress)
    if env_info().is_main:
        for summary in summaries:
            lmbda = summary["lmbda"]
            run_dir = out / ("variable-rate" if lmbda is None else f"lmbda-{format_lmbda(lmbda)}")
            print(format_summary(summary, run_dir), file=sys.stdout)
    return 0

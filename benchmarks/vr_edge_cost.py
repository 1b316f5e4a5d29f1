"""Edge cost of the variable-rate model against the fixed-rate one: MACs and measured ONNX time.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/vr_edge_cost.py [--fixed fs-lite0-l4] \\
        [--vr fs-lite0-vr] [--runs 50] [--threads 1,2] \\
        [--rates 0,5,10] [--image PHOTO] [--out JSON]

The claim checked: the variable-rate model's edge costs at most 5% more than the fixed-rate
model's (docs/variable_rate.md). Both models are built (``--fixed``, ``--vr``: zoo ids or codec
files of ``frankensplit train``; the cost does not depend on the weights) and exported into edge
bundles in a temporary folder, then:

- **MACs**: g_a's, counted by torch's flop counter as ``frankensplit info`` counts them
  (`commands.info.describe`, ``encoder_macs``: convolutions and matrix products), plus the
  variable-rate coder's gain (its ``edge_macs`` holds both), one multiply per latent element (``y * gain[r]``, in numpy,
  `coding.FactorizedCoder.symbols`). The rounding against the medians is common to both.
- **time**, per thread count: the median over ``--runs`` single-image runs of the whole edge path
  from a preprocessed image (1, 3, crop, crop) to packet bytes (`EdgeClient.encode_latent`, then
  `EdgeClient.pack`), and of its two parts, g_a and entropy (gain, round, rANS, framing), for the
  fixed-rate model and for the variable-rate one at its lowest, middle and highest rate index
  (the rANS part grows with the bytes), all *interleaved* in blocks of 10 runs taken in turns
  (`edge_encode.interleaved_median_ms`), so a change of machine load slows every configuration
  alike, with onnxruntime's intra-op spinning off (``EdgeClient(spin=False)``, why: see
  ``benchmarks/edge_encode.py``). Preprocessing (PIL, numpy) is the same for both and left out.

Read the VR / fixed ratios rather than the absolute times, and report them with the command line,
the CPU and the load average the script prints; a ratio measured on a loaded machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge_encode import interleaved_median_ms  # benchmarks/edge_encode.py

if TYPE_CHECKING:
    from frankensplit.models.split import FrankenSplit

__all__ = ["edge_macs", "measure", "time_edge"]

REPO = Path(__file__).resolve().parents[1]
TINY16 = REPO.parent / "shared/data/fixtures/tiny16"
DEFAULT_VR = "fs-lite0-vr"  # the shipped variable-rate zoo model
#: The issue's bound on VR / fixed, for MACs and for measured time.
TARGET_RATIO = 1.05


def edge_macs(model: FrankenSplit) -> dict[str, int]:
    """g_a's MACs at the model's input size, the gain's multiplies (0 for a fixed-rate model)
    and their sum."""
    from frankensplit.commands.info import describe

    info = describe(model)  # edge_macs: g_a's (encoder_macs) and the gain's (C * h * w)
    g_a, total = int(info["encoder_macs"]), int(info["edge_macs"])
    return {"g_a": g_a, "gain": total - g_a, "total": total,
            "input_size": info["input_size"], "latent_shape": info["latent_shape"]}


def default_rates(count: int) -> list[int]:
    """The lowest, middle and highest rate index of a grid of ``count`` rates (no repeats)."""
    return sorted({0, count // 2, count - 1})


def time_edge(bundles: dict[str, Path], rates: list[int], image: Path, threads: int, runs: int,
              warmup: int) -> dict[str, dict]:
    """g_a, entropy and total (ms, medians) and packet bytes per configuration, interleaved.

    Args:
        bundles: ``{"fixed": edge dir, "vr": edge dir}``.
        rates: the variable-rate bundle's rate indexes to time.
        image: the photo that is preprocessed once per bundle and then timed.
        threads: onnxruntime intra-op threads of both clients.
        runs: timed runs per configuration.
        warmup: untimed rounds of every configuration first.

    Returns:
        ``{"fixed": {...}, "vr@<r>": {...}}``, each with ``g_a``, ``entropy``, ``total`` (ms),
        ``bytes`` and ``rate`` (None, or the rate index).
    """
    from frankensplit.runtime.edge.client import EdgeClient

    clients = {name: EdgeClient(b, threads=threads, spin=False) for name, b in bundles.items()}
    xs = {name: c.preprocess(image)[None] for name, c in clients.items()}  # (1, 3, crop, crop)
    ys = {name: c.encode_latent(xs[name])[0] for name, c in clients.items()}  # (C, h, w)
    configs = [("fixed", "fixed", None)] + [(f"vr@{r}", "vr", r) for r in rates]
    fns: dict[str, Callable[[], object]] = {}
    for name, c in clients.items():  # g_a does not depend on the rate: once per model
        fns[f"{name} g_a"] = lambda c=c, x=xs[name]: c.encode_latent(x)
    for config, name, rate in configs:
        c, x, y = clients[name], xs[name], ys[name]
        fns[f"{config} entropy"] = lambda c=c, y=y, r=rate: c.pack(y, r)
        fns[f"{config} total"] = lambda c=c, x=x, r=rate: c.pack(c.encode_latent(x)[0], r)
    ms = interleaved_median_ms(fns, runs, warmup)
    return {config: {"rate": rate, "g_a": ms[f"{name} g_a"], "entropy": ms[f"{config} entropy"],
                     "total": ms[f"{config} total"],
                     "bytes": len(clients[name].pack(ys[name], rate))}
            for config, name, rate in configs}


def measure(args: argparse.Namespace) -> dict:
    """Build, export, count and time both models (see the module docstring)."""
    from frankensplit.models.zoo import create_model
    from frankensplit.runtime.edge.bundle import read_manifest
    from frankensplit.runtime.edge.export import export_bundle
    from frankensplit.runtime.edge.quantize import optimized_ops
    from frankensplit.sim.measure import cpu_name

    models = {"fixed": create_model(args.fixed), "vr": create_model(args.vr)}
    if models["fixed"].rates is not None:
        raise SystemExit(f"--fixed {args.fixed} is a variable-rate model; give a fixed-rate one")
    vr_rates = models["vr"].rates
    if vr_rates is None:
        raise SystemExit(f"--vr {args.vr} is a fixed-rate model; give a variable-rate one")
    rates = args.rates if args.rates is not None else default_rates(len(vr_rates))
    if not all(0 <= r < len(vr_rates) for r in rates):
        raise SystemExit(f"--rates {rates}: the variable-rate model's indexes are "
                         f"0..{len(vr_rates) - 1}")
    image = Path(args.image) if args.image else min(TINY16.glob("*.jpg"))
    result: dict = {
        "models": {"fixed": args.fixed, "vr": args.vr},
        "model_ids": {k: m.model_id for k, m in models.items()},
        "image": image.name, "runs": args.runs, "threads": args.threads,
        "cpu": cpu_name(), "cores": os.cpu_count(),
        "vr_rates": {r: vr_rates[r] for r in rates},
        "macs": {k: edge_macs(m) for k, m in models.items()},
    }
    result["mac_ratio"] = result["macs"]["vr"]["total"] / result["macs"]["fixed"]["total"]
    with tempfile.TemporaryDirectory(prefix="vr-edge-cost-") as tmp:
        bundles = {k: export_bundle(m, Path(tmp) / k).edge_dir for k, m in models.items()}
        ops = {k: optimized_ops(b / read_manifest(b).encoder_file, threads=2)
               for k, b in bundles.items()}
        result["same_graph_ops"] = ops["fixed"] == ops["vr"]
        result["load_average_start"] = os.getloadavg()
        result["onnx"] = {t: time_edge(bundles, rates, image, t, args.runs, args.warmup)
                          for t in args.threads}
        result["load_average_end"] = os.getloadavg()
    for by in result["onnx"].values():
        for v in by.values():
            v["ratio_total"] = v["total"] / by["fixed"]["total"]
    return result


def report(r: dict) -> None:
    fixed, vr = r["macs"]["fixed"], r["macs"]["vr"]
    print(f"edge cost, fixed {r['models']['fixed']} vs variable-rate {r['models']['vr']} "
          f"({r['model_ids']['vr']}), image {r['image']}, median of {r['runs']} runs, interleaved")
    la0, la1 = r["load_average_start"], r["load_average_end"]
    print(f"CPU: {r['cpu']}, {r['cores']} logical cores, load average (1/5/15 min) "
          f"{la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f} -> {la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f}")
    print(f"MACs at {fixed['input_size']}: fixed g_a {fixed['total']:,}; variable-rate g_a "
          f"{vr['g_a']:,} + gain {vr['gain']:,} ({' x '.join(map(str, vr['latent_shape']))}) "
          f"= {vr['total']:,}; VR / fixed = {r['mac_ratio']:.5f} (target <= {TARGET_RATIO})")
    print(f"g_a graphs run by ONNX Runtime (2 threads): "
          f"{'same op types and counts' if r['same_graph_ops'] else 'DIFFERENT ops'}")
    print(f"{'configuration':<40}{'g_a ms':>9}{'entropy ms':>12}{'total ms':>10}{'bytes':>8}"
          f"{'VR/fixed':>10}")
    for t, by in r["onnx"].items():
        for v in by.values():
            name = (f"fixed, {t} thread(s)" if v["rate"] is None else
                    f"VR rate {v['rate']} (lambda {r['vr_rates'][v['rate']]:g}), {t} thread(s)")
            ratio = "" if v["rate"] is None else f"{v['ratio_total']:.3f}"
            print(f"{name:<40}{v['g_a']:>9.2f}{v['entropy']:>12.2f}{v['total']:>10.2f}"
                  f"{v['bytes']:>8}{ratio:>10}")
    for t, by in r["onnx"].items():
        worst = max(v["ratio_total"] for v in by.values() if v["rate"] is not None)
        print(f"{t} thread(s): VR / fixed whole edge path, highest over the rates timed: "
              f"{worst:.3f} (target <= {TARGET_RATIO})")


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixed", default="fs-lite0-l4", help="fixed-rate zoo id or codec file")
    parser.add_argument("--vr", default=str(DEFAULT_VR), help="variable-rate zoo id or codec file")
    parser.add_argument("--image", default=None, help="timed image (default: first tiny16 photo)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per configuration")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=_ints, default=[1, 2], help="e.g. 1,2")
    parser.add_argument("--rates", type=_ints, default=None,
                        help="VR rate indexes to time (default: lowest, middle, highest)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    result = measure(args)
    report(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

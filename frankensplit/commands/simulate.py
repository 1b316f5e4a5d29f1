"""``frankensplit simulate``: end-to-end latency of FrankenSplit vs codec offloading vs local
execution, per link and device speed.

    frankensplit simulate --profile profile.json --eval results/eval/results.json|shipped \\
        [--links ble,3g,4g,5g,wifi] [--link lab:2:40] [--match model,within:1] \\
        [--slowdown 1] [--slowdowns 1,3,10,30] [--teachers all|none|NAME,...] [--out DIR]

Compute times come from a device profile (``frankensplit profile``), bytes per request at matched
top-1 from a ``frankensplit eval`` result, or from the dev-set results the package ships
(``--eval shipped``: ``frankensplit/zoo/results_dev.json``, no evaluation needed), or
``--bytes``; the output names the results used (file, data set, commit). Link time from the model
of :mod:`frankensplit.sim.latency`. FrankenSplit's bytes are the profiled model's unless ``--model``
names another; every row says whose bytes and whose compute it uses. The profile's what-if
teachers are priced with the profiled model's bytes, labelled as a what-if. Writes latency.md,
latency.csv, latency.json, a latency-vs-bandwidth plot per result and a device-speed plot per
scenario into ``--out`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from frankensplit.cli import non_negative_float
from frankensplit.eval.records import SHIPPED

__all__ = ["HELP", "configure", "parse_slowdowns", "run"]

HELP = "end-to-end latency per link: FrankenSplit vs offloading with codecs at matched top-1"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    from frankensplit.sim.latency import HTTP_REQUEST_HEAD_BYTES, HTTP_RESPONSE_BYTES

    parser.add_argument("--profile", default="profile.json", help="device profile JSON")
    parser.add_argument("--eval", default=None, metavar="RESULTS_JSON|shipped",
                        help="bytes at matched top-1 from a `frankensplit eval` results.json (or "
                             "its folder), a shipped results file, or 'shipped': the dev-set "
                             "figures the package ships (frankensplit/zoo/results_dev.json: "
                             "no evaluation needed)")
    parser.add_argument("--model", default=None,
                        help="FrankenSplit model id in the eval result whose bytes to price, "
                             "ID@LAMBDA for a rate of a variable-rate model (default: the "
                             "profiled model, at its profiled rate)")
    parser.add_argument("--codecs", default=None, help="codecs to compare (default: all in both)")
    parser.add_argument("--match", default="model,within:1",
                        help="'model' (codecs at the model's top-1) and/or 'within:N' (everything "
                             "N points below the teacher)")
    parser.add_argument("--bytes", default=None, metavar="METHOD=BYTES[,...]",
                        help="bytes per request given instead of (or besides) an eval result; "
                             "frankensplit= defaults to the profile's packet size")
    parser.add_argument("--links", default=None,
                        help="presets and/or NAME:MBITPS:RTT_MS, comma-separated "
                             "(default: ble,3g,4g,5g,wifi unless --link is given)")
    parser.add_argument("--link", action="append", default=[], metavar="NAME:MBITPS:RTT_MS",
                        help="a custom link; repeatable")
    parser.add_argument("--edge", default=None,
                        help="edge back end of the profile (default: onnx-1, else the first)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="price compute by the profile's wall-clock medians, or by its CPU "
                             "times (the work itself, for a profile taken on a busy machine)")
    parser.add_argument("--connection-rtts", type=non_negative_float, default=1.0,
                        help="RTTs of connection set-up per request (1: new TCP connection, "
                             "0: kept alive)")
    parser.add_argument("--request-head-bytes", type=non_negative_float,
                        default=HTTP_REQUEST_HEAD_BYTES)
    parser.add_argument("--response-bytes", type=non_negative_float, default=HTTP_RESPONSE_BYTES)
    parser.add_argument("--no-tcp-headers", action="store_true",
                        help="count application bytes only (as the application-level shaper)")
    parser.add_argument("--plot-rtt-ms", type=non_negative_float, default=50.0,
                        help="RTT of the plot's curves")
    parser.add_argument("--slowdown", type=_positive_float, default=1.0,
                        help="the device is N times slower than the profiled machine: edge "
                             "times (encoders, local execution) x N, server times unchanged")
    parser.add_argument("--slowdowns", default="1,3,10,30",
                        help="device slowdowns of the device-speed plot and the conditions")
    parser.add_argument("--teachers", default="all",
                        help="what-if teachers of the profile to price: all, none, or names")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--out", default="results/simulate", help="output folder")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def parse_slowdowns(text: str) -> list[float]:
    """``"1,3,10"`` -> ``[1.0, 3.0, 10.0]``.

    Raises:
        ValueError: not positive numbers, or none.
    """
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"--slowdowns must list numbers > 0, got {text!r}")
    return values


def _teachers(text: str, profile: dict) -> list[str | None]:
    """The teachers to price: the profiled model's (None), then the asked what-ifs."""
    known = list(profile["teachers"])
    if text == "all":
        return [None, *known]
    if text == "none":
        return [None]
    names = [n.strip() for n in text.split(",") if n.strip()]
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"--teachers {missing}: not in the profile (it has {known or 'none'}); "
                         "`frankensplit profile --teachers NAME` times one")
    return [None, *names]


def _check_files(args: argparse.Namespace) -> None:
    """The input files exist; if not, which command writes them."""
    if not Path(args.profile).is_file():
        raise ValueError(f"device profile {args.profile} not found: run `frankensplit profile` "
                         "first (it writes profile.json), or pass --profile PATH")
    if args.eval and args.eval != SHIPPED:
        given = Path(args.eval)
        if not (given / "results.json" if given.is_dir() else given).is_file():
            raise ValueError(f"no eval results at --eval {args.eval}: run `frankensplit eval "
                             "--out DIR` first and pass DIR (or DIR/results.json), or take the "
                             f"shipped dev-set results with --eval {SHIPPED}")


def _scenarios(args: argparse.Namespace, profile: dict) -> tuple[list, str]:
    """The scenarios to price, and where their bytes come from (the results' origin)."""
    from frankensplit.eval.records import read_results
    from frankensplit.sim import matching
    from frankensplit.sim.profile import profiled_setting

    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()] if args.codecs else None
    model_id = args.model or profiled_setting(profile)  # the profiled model's (rate's) bytes
    scenarios, origin = [], "-"
    if args.eval:
        results = read_results(args.eval)
        origin = results["origin"]
        for mode, points in matching.parse_match(args.match):
            if mode == "model":
                scenarios.append(matching.match_model(results, model_id, codecs))
            else:
                scenarios.append(matching.match_within(results, points, model_id, codecs))
    if args.bytes:
        sizes = matching.parse_bytes(args.bytes)
        scenarios.append(matching.given_scenario(
            sizes, profile["frankensplit"]["packet_bytes"], profiled_setting(profile),
            profile["teacher"]))
    if not scenarios:
        raise ValueError("nothing to compare: give --eval RESULTS_JSON (or --eval shipped) "
                         "and/or --bytes")
    return scenarios, origin


def run(args: argparse.Namespace) -> int:
    """Simulate every scenario on every link, write the outputs, print the markdown."""
    from frankensplit.sim.latency import Wire
    from frankensplit.sim.links import parse_links
    from frankensplit.sim.profile import edge_backends, load_profile, profiled_setting
    from frankensplit.sim.report import write_outputs
    from frankensplit.sim.simulate import run_scenario

    _check_files(args)
    profile = load_profile(args.profile)
    specs = [args.links] if args.links else ([] if args.link else ["ble,3g,4g,5g,wifi"])
    links = parse_links([*specs, *args.link])
    backends = edge_backends(profile)
    edge = args.edge or ("onnx-1" if "onnx-1" in backends else backends[0])
    wire = Wire(args.request_head_bytes, args.response_bytes, args.connection_rtts,
                header_bytes=0.0 if args.no_tcp_headers else Wire.header_bytes)
    slowdowns = parse_slowdowns(args.slowdowns)
    results, skipped = [], []
    scenarios, origin = _scenarios(args, profile)
    for scenario in scenarios:
        if scenario.frankensplit.bytes is None:
            skipped.append(f"{scenario.title}: skipped, FrankenSplit's measured curve does not "
                           f"reach it ({scenario.frankensplit.status})")
            continue
        for teacher in _teachers(args.teachers, profile):
            results.append(run_scenario(profile, scenario, links, edge, wire, args.clock,
                                        teacher, args.slowdown))
    if not results:
        raise ValueError("; ".join(skipped))
    meta = {
        "profile": f"{args.profile} ({profiled_setting(profile)}, {profile['machine']['cpu']}, "
                   f"{profile['machine']['logical_cores']} cores, created {profile['created']})",
        "eval": origin, "edge back end": edge, "compute clock": args.clock,
        "server torch threads": profile["server_threads"],
        "device": f"{args.slowdown:g}x slower than the profiled machine (edge times x "
                  f"{args.slowdown:g}, server times unchanged)",
        "what-if teachers": ", ".join(profile["teachers"]) + " (random weights: latency only; "
                            "their rows price the profiled model's bytes, accuracy not measured)"
                            if profile["teachers"] else "-",
        "skipped": "; ".join(skipped) or "-",
    }
    paths = write_outputs(results, links, wire, args.out, meta, draw=not args.no_plot,
                          plot_rtt_ms=args.plot_rtt_ms, slowdowns=slowdowns)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0

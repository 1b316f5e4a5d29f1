"""``frankensplit simulate``: end-to-end latency of FrankenSplit vs codec offloading per link.

    frankensplit simulate --profile profile.json --eval results/eval/results.json \\
        [--links ble,3g,4g,5g,wifi] [--link lab:2:40] [--match model,within:1] [--out DIR]

Compute times come from a device profile (``frankensplit profile``), bytes per request at matched
top-1 from a ``frankensplit eval`` result (or ``--bytes``), link time from the model of
:mod:`frankensplit.sim.latency`. Writes latency.md, latency.csv, latency.json and one
latency-vs-bandwidth plot per scenario into ``--out`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from frankensplit.cli import non_negative_float

__all__ = ["HELP", "configure", "run"]

HELP = "end-to-end latency per link: FrankenSplit vs offloading with codecs at matched top-1"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's arguments."""
    from frankensplit.sim.latency import HTTP_REQUEST_HEAD_BYTES, HTTP_RESPONSE_BYTES

    parser.add_argument("--profile", default="profile.json", help="device profile JSON")
    parser.add_argument("--eval", default=None, metavar="RESULTS_JSON",
                        help="`frankensplit eval` results.json (or its folder): bytes at matched "
                             "top-1")
    parser.add_argument("--model", default=None, help="FrankenSplit model id in the eval result")
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
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--out", default="results/simulate", help="output folder")


def _check_files(args: argparse.Namespace) -> None:
    """The input files exist; if not, which command writes them."""
    if not Path(args.profile).is_file():
        raise ValueError(f"device profile {args.profile} not found: run `frankensplit profile` "
                         "first (it writes profile.json), or pass --profile PATH")
    if args.eval:
        given = Path(args.eval)
        if not (given / "results.json" if given.is_dir() else given).is_file():
            raise ValueError(f"no eval results at --eval {args.eval}: run `frankensplit eval "
                             "--out DIR` first and pass DIR (or DIR/results.json)")


def _scenarios(args: argparse.Namespace, profile: dict) -> list:
    from frankensplit.eval.records import read_results
    from frankensplit.sim import matching

    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()] if args.codecs else None
    scenarios = []
    if args.eval:
        results = read_results(args.eval)
        for mode, points in matching.parse_match(args.match):
            if mode == "model":
                scenarios.append(matching.match_model(results, args.model, codecs))
            else:
                scenarios.append(matching.match_within(results, points, args.model, codecs))
    if args.bytes:
        sizes = matching.parse_bytes(args.bytes)
        scenarios.append(matching.given_scenario(
            sizes, profile["frankensplit"]["packet_bytes"], profile["model_id"],
            profile["teacher"]))
    if not scenarios:
        raise ValueError("nothing to compare: give --eval RESULTS_JSON and/or --bytes")
    return scenarios


def run(args: argparse.Namespace) -> int:
    """Simulate every scenario on every link, write the outputs, print the markdown."""
    from frankensplit.sim.latency import Wire
    from frankensplit.sim.links import parse_links
    from frankensplit.sim.profile import edge_backends, load_profile
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
    results, skipped = [], []
    for scenario in _scenarios(args, profile):
        if scenario.frankensplit.bytes is None:
            skipped.append(f"{scenario.title}: skipped, FrankenSplit's measured curve does not "
                           f"reach it ({scenario.frankensplit.status})")
            continue
        results.append(run_scenario(profile, scenario, links, edge, wire, args.clock))
    if not results:
        raise ValueError("; ".join(skipped))
    meta = {
        "profile": f"{args.profile} ({profile['model_id']}, {profile['machine']['cpu']}, "
                   f"{profile['machine']['logical_cores']} cores, created {profile['created']})",
        "eval": args.eval or "-", "edge back end": edge, "compute clock": args.clock,
        "server torch threads": profile["server_threads"],
        "skipped": "; ".join(skipped) or "-",
    }
    if profile["model_id"] != results[0].scenario.frankensplit.setting:
        meta["note"] = (f"profile timed {profile['model_id']}, bytes are "
                        f"{results[0].scenario.frankensplit.setting}'s (same architecture assumed)")
    paths = write_outputs(results, links, wire, args.out, meta, draw=not args.no_plot,
                          plot_rtt_ms=args.plot_rtt_ms)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0

"""Stalled uploads beside good clients: the server must keep answering and close the stalled ones.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/slow_clients.py [--stalled 150]
        [--stalled-headers 0] [--clients 4] [--duration 20] [--body-timeout S]
        [--header-timeout S] [--model ID] [--server-tree DIR] [--json OUT]

Starts ``python -m frankensplit serve`` on a free loopback port (like ``benchmarks/load.py``),
warms it with a few good requests, then opens ``--stalled`` connections that each send the
headers of a 100,000-byte classify request and its first 10 bytes, then nothing (and
``--stalled-headers`` that send half a request head, slowloris), while ``--clients`` closed-loop
clients send real packets for ``--duration`` seconds without retrying (so every 503 counts).

Printed and written (``--json``): the good requests' statuses and latency p50/p95/p99/max; the
stalled connections' answers (408 expected), how and when the server closed them (as the client
saw it: EOF or reset, seconds after opening), the server-side connections the kernel still lists
on its port (``/proc/net/tcp``) at the peak and at the end; the server's own counts by status
(``/metrics``); and its RSS before the stall, at the end, and the maximum sampled. The exit code
is 1 when a target is missed: every good request answered 200 with p99 under 2 s, every stalled
connection closed within its timeout (body or header) + 2 s, the server's ends of them gone, RSS
at the end within 5 % of before.

Traffic goes to 127.0.0.1 only and is bounded: ``--stalled`` + ``--stalled-headers``
connections, ``--clients`` requests at a time, ``--duration`` seconds, and a watch of at most
``--watch`` seconds for the stalled connections to close. ``--server-tree DIR`` runs the server
from another source tree (e.g. ``git archive`` of an older commit) for a before/after figure; the
timeout flags are then passed only when given.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.loadgen import LoadReport, run_load
from harness.serve_process import RssSampler, ServeProcess
from harness.stalled import (
    StalledConnections,
    header_prefix,
    server_connections,
    upload_prefix,
)
from load import load_parser, make_packets, photos, server_status_counts  # benchmarks/load.py

from frankensplit.runtime.edge.retry import NO_RETRY
from frankensplit.runtime.server.connections import ConnectionLimits
from frankensplit.runtime.server.service import ServerConfig

P99_TARGET_MS = 2000.0
CLOSE_MARGIN_S = 2.0
RSS_TOLERANCE = 0.05


def _parser():
    parser = load_parser(__doc__.split("\n")[0], clients=4, retries=0, deadline=60.0)
    parser.set_defaults(duration=20.0)
    parser.add_argument("--stalled", type=int, default=150, help="stalled uploads")
    parser.add_argument("--stalled-headers", type=int, default=0,
                        help="connections that stall in the request head")
    parser.add_argument("--body-bytes", type=int, default=100_000,
                        help="Content-Length a stalled upload declares")
    parser.add_argument("--sent-bytes", type=int, default=10,
                        help="bytes of the body a stalled upload sends")
    parser.add_argument("--body-timeout", type=float, default=None, metavar="S",
                        help="server --body-timeout (default: the server's)")
    parser.add_argument("--header-timeout", type=float, default=None, metavar="S",
                        help="server --header-timeout (default: the server's)")
    parser.add_argument("--watch", type=float, default=90.0,
                        help="seconds to wait for the stalled connections to close")
    parser.add_argument("--server-tree", default=None, metavar="DIR",
                        help="run the server from this source tree (a before/after baseline)")
    return parser


def _serve_args(args) -> list[str]:
    serve_args = ["--model", args.model, "--log-level", "warning"]
    if args.body_timeout is not None:
        serve_args += ["--body-timeout", str(args.body_timeout)]
    if args.header_timeout is not None:
        serve_args += ["--header-timeout", str(args.header_timeout)]
    return serve_args


def _closed_in_time(stalled: dict, within_s: float) -> bool:
    closed_after = stalled["closed_after_s"]["max"]
    return stalled["still_open"] == 0 and (closed_after is None or closed_after <= within_s)


def _errors(report: LoadReport) -> dict[str, int]:
    """Good requests' errors by kind (request ids removed, so equal errors count together)."""
    kinds = Counter(re.sub(r" \(request [^)]*\)", "", r.error)
                    for r in report.records if r.error is not None)
    return dict(kinds.most_common(5))


def _targets(result: dict, body_timeout_s: float, header_timeout_s: float) -> dict[str, bool]:
    good = result["good"]
    p99 = good["latency_ms"]["p99"]
    rss = result["server_rss_mib"]
    return {
        "good_all_200": good["requests"] > 0 and good["successes"] == good["requests"],
        "good_p99_under_2s": p99 is not None and p99 < P99_TARGET_MS,
        "stalled_uploads_closed_in_time": result["stalled_uploads"]["connections"] > 0
        and _closed_in_time(result["stalled_uploads"], body_timeout_s + CLOSE_MARGIN_S),
        "stalled_headers_closed_in_time": _closed_in_time(
            result["stalled_headers"], header_timeout_s + CLOSE_MARGIN_S),
        "server_side_closed": result["server_connections_end"]["established"]
        + result["server_connections_end"]["close_wait"] == 0,
        "rss_flat": rss["end"] <= rss["before"] * (1 + RSS_TOLERANCE),
    }


def main() -> int:
    args = _parser().parse_args()
    body_timeout = args.body_timeout or ServerConfig.body_timeout_s
    header_timeout = args.header_timeout or ConnectionLimits.header_timeout_s
    images = photos(args.images)
    packets, expected = make_packets(args.model, images)  # and the in-process answers
    env = None
    if args.server_tree is not None:
        # PYTHONSAFEPATH: ``-m`` would otherwise put the working directory (this checkout) first
        env = {"PYTHONPATH": str(Path(args.server_tree).resolve()), "PYTHONSAFEPATH": "1"}
    log = Path(tempfile.mkdtemp(prefix="frankensplit-slow-")) / "server.log"
    serve_args = _serve_args(args)
    with ServeProcess(serve_args, log=log, env=env) as server:
        server.wait_ready()
        run_load(server.url, packets, expected, clients=args.clients, duration_s=3.0,
                 retry=NO_RETRY)  # warm-up: first batches allocate
        host = f"127.0.0.1:{server.port}"
        rss_before = server.rss_mib()
        reports: list[LoadReport] = []
        with RssSampler(server.process.pid, interval_s=0.5) as rss, \
                StalledConnections(server.url, args.stalled,
                                   upload_prefix(host, args.body_bytes, args.sent_bytes)) as ups, \
                StalledConnections(server.url, args.stalled_headers, header_prefix(host)) as heads:
            opened = time.monotonic()
            time.sleep(0.5)
            peak = server_connections(server.port)
            load = threading.Thread(target=lambda: reports.append(run_load(
                server.url, packets, expected, clients=args.clients,
                duration_s=args.duration, retry=NO_RETRY)))
            load.start()
            ups.wait_closed(args.watch - (time.monotonic() - opened))
            heads.wait_closed(args.watch - (time.monotonic() - opened))
            load.join()
            time.sleep(1.0)  # the kernel's table settles (FIN exchanges)
            end = server_connections(server.port)
            uploads, headers = ups.summary(), heads.summary()
        rss_end = server.rss_mib()
        by_status = server_status_counts(server.url)
    summary = reports[0].summary()
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": args.model,
        "server": {"args": serve_args, "tree": args.server_tree or "this checkout"},
        "body_timeout_s": body_timeout,
        "header_timeout_s": header_timeout,
        "good": {**{k: summary[k] for k in ("clients", "requests", "successes", "failures",
                                             "throughput_rps", "latency_ms")},
                 "errors": _errors(reports[0])},
        "stalled_uploads": uploads,
        "stalled_headers": headers,
        "server_connections_peak": peak,
        "server_connections_end": end,
        "server_requests_by_status": by_status,
        "server_rss_mib": {"before": round(rss_before or 0.0, 1), "end": round(rss_end or 0.0, 1),
                           "max": rss.summary()["max_mib"]},
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    result["targets"] = _targets(result, body_timeout, header_timeout)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

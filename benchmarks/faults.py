"""Crash the server mid-load (SIGKILL) and restart it on the same port: no request may be lost.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/faults.py [--clients 8] [--duration 60]
        [--kills 2] [--min-up 5] [--model ID] [--json OUT]

Starts ``python -m frankensplit serve`` (like ``benchmarks/load.py``), runs ``--clients``
closed-loop clients with retry for ``--duration`` seconds, and ``--kills`` times, evenly spread
over the run (but only once the previous restart has served ``--min-up`` seconds, and never after
the load ends), kills the server with SIGKILL (no graceful shutdown: requests die mid-batch,
connections are reset) and immediately starts a new one on the same port, which then loads its
model again while the clients keep retrying (connection refused, then 503 while loading).

The contract checked: every request ends in exactly one outcome, either a correct answer (its
``X-Request-Id`` echoed, top-5 classes and probabilities those of an in-process decoding of the
same packet) or a clear error after its retries; none is lost, none answered with another
request's id, none wrong. Printed and written (``--json``): those counts, retries by cause, and
each restart's downtime (kill to ``/readyz`` 200). The exit code is 1 when the contract is broken.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.loadgen import LoadReport, run_load
from harness.serve_process import ServeProcess
from load import load_parser, make_packets, photos  # benchmarks/load.py

from frankensplit.runtime.edge.client import RetryPolicy


def main() -> int:
    parser = load_parser(__doc__.split("\n")[0], clients=8, retries=60, deadline=180.0)
    parser.add_argument("--kills", type=int, default=2, help="SIGKILL + restart this many times")
    parser.add_argument("--min-up", type=float, default=5.0,
                        help="seconds a restarted server serves before the next kill")
    args = parser.parse_args()

    images = photos(args.images)
    packets, expected = make_packets(args.model, images)
    log = Path(tempfile.mkdtemp(prefix="frankensplit-faults-")) / "server.log"
    serve_args = ["--model", args.model, "--log-level", "warning"]
    retry = RetryPolicy(retries=args.retries, max_delay_s=2.0, deadline_s=args.deadline)
    downtimes: list[float] = []
    with ServeProcess(serve_args, log=log) as server:
        server.wait_ready()
        reports: list[LoadReport] = []
        load = threading.Thread(target=lambda: reports.append(run_load(
            server.url, packets, expected, clients=args.clients, duration_s=args.duration,
            retry=retry)))
        start = up = time.monotonic()
        load.start()
        for k in range(args.kills):
            # evenly spread, but never before the last restart has served for --min-up seconds
            planned = max(start + args.duration * (k + 1) / (args.kills + 1), up + args.min_up)
            if planned > start + args.duration - 1.0:
                break  # the clients have stopped: a kill would hit nobody
            time.sleep(max(planned - time.monotonic(), 0.0))
            killed = time.monotonic()
            server.restart()  # SIGKILL, then the same command on the same port
            server.wait_ready()
            up = time.monotonic()
            downtimes.append(round(up - killed, 1))
        load.join()
        summary = reports[0].summary()
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": args.model,
        "kills": len(downtimes),
        "restart_downtime_s": downtimes,
        **summary,
        "accounted": summary["successes"] + summary["failures"] + summary["wrong_answers"]
        + summary["lost"] == summary["requests"],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    broken = (result["lost"] or result["wrong_answers"] or result["unechoed"]
              or result["duplicate_ids"] or not result["accounted"])
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

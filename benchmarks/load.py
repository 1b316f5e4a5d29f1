"""Sustained load on a real ``frankensplit serve`` process: shedding, retries, latency, memory.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/load.py [--clients 32] [--duration 60]
        [--max-queue 8] [--model ID] [--json OUT]

Starts ``python -m frankensplit serve`` on a free loopback port (default model: the zoo's default,
``frankensplit.models.zoo.default_model_id()``), encodes a few real photos into packets in this
process (the tiny16 fixtures of ``../shared/data`` when present, else the photos shipped with
scikit-image/matplotlib) and decodes them there too for the reference answers (every class's
probability per packet), then runs
``--clients`` closed-loop clients (threads, `frankensplit.runtime.edge.client.post_packet` with retry)
for ``--duration`` seconds (`benchmarks/harness/loadgen.py`).

Why ``--max-queue 8`` by default: with 32 clients and batches of 8 the server is saturated, so
the run exercises load shedding (503 + Retry-After) and client retries, not just the happy path.

Printed and written (``--json``): requests, successes (echoed X-Request-Id, and top-5 classes and
probabilities those of the in-process decoding of the same packet: ``loadgen.answer_matches``),
failures, wrong answers and lost requests (all must be 0; the exit code is 1 otherwise), 503s seen
and retries, throughput, latency p50/p95/p99 (retries and their waits included), the server's own
request counts by status (``/metrics``), and its RSS sampled every second (``/proc/<pid>/status``
VmRSS): the first-quarter and last-quarter means and the maximum, to show memory stays flat.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from harness.loadgen import run_load
from harness.serve_process import RssSampler, ServeProcess

from frankensplit.runtime.edge.client import RetryPolicy

TINY16 = Path(__file__).resolve().parents[2] / "shared/data/fixtures/tiny16"


def photos(count: int) -> list[Path]:
    """Real photos: the shared tiny16 fixtures when present, else the installed sample photos."""
    found = sorted(TINY16.glob("*.jpg"))
    if not found:
        from frankensplit.data import bundled_photos

        found = bundled_photos()
    if not found:
        raise SystemExit("no photos found (neither ../shared/data nor scikit-image's samples)")
    return found[:count]


def make_packets(model_id: str, images: list[Path]) -> tuple[list[bytes], list[list[float]]]:
    """Edge-encode ``images`` with ``model_id`` in this process (torch), one packet each, and
    decode the packets here too: the reference answer (every class's probability) per packet."""
    import torch

    from frankensplit.data import load_image, make_transform
    from frankensplit.models.zoo import create_model

    model = create_model(model_id)
    transform = make_transform(model.data_config)
    x = torch.stack([transform(load_image(path)) for path in images])  # (N, 3, 224, 224)
    with torch.no_grad():
        packets = model.edge.encode(x)
        probs = model.server.decode(packets).float().softmax(dim=1)  # (N, classes)
    return packets, probs.tolist()


def server_status_counts(url: str) -> dict[str, int]:
    """Classify requests by HTTP status, as the server counted them (``/metrics``)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, int] = {}
    pattern = r'^frankensplit_requests_total\{model="[^"]*",status="(\d+)"\} ([0-9.e+]+)$'
    for status, value in re.findall(pattern, text, flags=re.MULTILINE):
        counts[status] = counts.get(status, 0) + int(float(value))
    return dict(sorted(counts.items()))


def load_parser(
    description: str, clients: int, retries: int, deadline: float
) -> argparse.ArgumentParser:
    """The arguments every load-driving benchmark takes (this one and ``faults.py``)."""
    from frankensplit.models.zoo import default_model_id

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=default_model_id())
    parser.add_argument("--clients", type=int, default=clients)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--images", type=int, default=8, help="distinct packets sent")
    parser.add_argument("--retries", type=int, default=retries, help="client retries per request")
    parser.add_argument("--deadline", type=float, default=deadline,
                        help="client seconds per request")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the results here")
    return parser


def main() -> int:
    parser = load_parser(__doc__.split("\n")[0], clients=32, retries=20, deadline=120.0)
    parser.add_argument("--max-queue", type=int, default=8, help="server --max-queue")
    parser.add_argument("--max-batch", type=int, default=8, help="server --max-batch")
    args = parser.parse_args()

    images = photos(args.images)
    packets, expected = make_packets(args.model, images)
    log = Path(tempfile.mkdtemp(prefix="frankensplit-load-")) / "server.log"
    serve_args = ["--model", args.model, "--max-queue", str(args.max_queue),
                  "--max-batch", str(args.max_batch), "--log-level", "warning"]
    with ServeProcess(serve_args, log=log) as server:
        ready_s = server.wait_ready()
        retry = RetryPolicy(retries=args.retries, deadline_s=args.deadline)
        with RssSampler(server.process.pid, interval_s=1.0) as rss:
            report = run_load(server.url, packets, expected, clients=args.clients,
                              duration_s=args.duration, retry=retry)
        result = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "model": args.model,
            "images": [p.name for p in images],
            "packet_bytes_mean": round(sum(map(len, packets)) / len(packets)),
            "server": {"args": serve_args, "startup_to_ready_s": round(ready_s, 1)},
            **report.summary(),
            "server_requests_by_status": server_status_counts(server.url),
            "server_rss": rss.summary(),
            "cpu_count": os.cpu_count(),
        }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    bad = result["failures"] + result["wrong_answers"] + result["lost"] + result["unechoed"]
    return 1 if bad or result["duplicate_ids"] else 0


if __name__ == "__main__":
    sys.exit(main())

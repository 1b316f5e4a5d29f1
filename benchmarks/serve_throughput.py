"""Throughput and latency of ``frankensplit serve`` under concurrent clients, per server setting.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_throughput.py [--requests 48] [--clients 8]

Starts the real app on uvicorn (loopback, in a thread of this process) once per setting, sends
``--requests`` packets of the tiny16 fixtures from ``--clients`` concurrent HTTP clients, and prints
images/s, median and 95th-percentile latency and the mean batch size. Settings compared: no
batching, batching what queues while busy (wait 0), batching with a bounded wait, and the
in-process entropy decoder instead of the sandboxed one (the cost of the isolation). The load
generator shares the machine with the server, so on a small CPU absolute numbers are pessimistic;
the comparison between settings is the point.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY16 = Path(__file__).resolve().parents[2] / "shared/data/fixtures/tiny16"


def wait_ready(url: str) -> None:
    """Block until the server's /readyz says its models are loaded."""
    import httpx

    while httpx.get(f"{url}/readyz").status_code != 200:
        time.sleep(0.05)


def run_load(url: str, packets: list[bytes], requests: int, clients: int) -> dict:
    import httpx

    def one(i: int) -> tuple[float, int]:
        start = time.perf_counter()
        response = http.post(f"{url}/v1/classify", content=packets[i % len(packets)],
                             headers={"Content-Type": "application/octet-stream"})
        response.raise_for_status()
        return time.perf_counter() - start, response.json()["batch_size"]

    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        for i in range(min(clients, 4)):  # warm-up
            one(i)
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - start
    latencies = sorted(r[0] * 1000 for r in results)
    return {
        "throughput": requests / elapsed,
        "p50": statistics.median(latencies),
        "p95": latencies[int(0.95 * (len(latencies) - 1))],
        "batch": statistics.mean(r[1] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fs-lite0-untrained")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--settings", nargs="+", default=None,
                        help="subset of setting names to run (default: all)")
    args = parser.parse_args()

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from frankensplit.data.transforms import load_image, make_transform
    from frankensplit.models.zoo import create_model
    from frankensplit.runtime.loading import served_model
    from frankensplit.runtime.server import ServerConfig, create_app, run_in_thread

    model = create_model(args.model)
    transform = make_transform(model.teacher.data_config)
    images = sorted(TINY16.glob("*.jpg"))
    packets = model.edge.encode(torch.stack([transform(load_image(p)) for p in images]))
    settings = {
        "no batching": ServerConfig(max_batch=1),
        "batch<=8, wait 0 ms": ServerConfig(max_batch=8, max_wait_ms=0),
        "batch<=8, wait 10 ms": ServerConfig(max_batch=8, max_wait_ms=10),
        "batch<=8, wait 0, in-process rANS": ServerConfig(max_batch=8, isolate_decoder=False),
    }
    if args.settings:
        settings = {name: settings[name] for name in args.settings}
    print(f"serve throughput, {args.model}, {args.requests} requests, torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} logical cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'setting':<36}{'clients':>8}{'img/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'batch':>7}")
    for name, config in settings.items():
        app = create_app({model.model_id: served_model(model)}, config)
        with run_in_thread(app) as url:
            wait_ready(url)
            for clients in args.clients:
                r = run_load(url, packets, args.requests, clients)
                print(f"{name:<36}{clients:>8}{r['throughput']:>8.2f}{r['p50']:>9.1f}"
                      f"{r['p95']:>9.1f}{r['batch']:>7.2f}", flush=True)


if __name__ == "__main__":
    main()

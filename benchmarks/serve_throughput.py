"""Throughput and latency of ``frankensplit serve`` under concurrent clients, per server setting
and per backend: the torch server half and the ONNX one (``serve --onnx``), in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_throughput.py [--requests 64] [--clients 16]
        [--backends torch onnx] [--threads 1]

Starts the real app on uvicorn (loopback, in a thread of this process) once per setting and
backend, sends ``--requests`` packets of the tiny16 fixtures from ``--clients`` concurrent HTTP
clients, and prints images/s, median and 95th-percentile latency and the mean batch size. Settings
compared: no batching, batching what queues while busy (wait 0), batching with a bounded wait, and
the in-process entropy decoder instead of the sandboxed one (the cost of the isolation). The ONNX
backend is the model's server half exported here (`export_server_onnx`, into a temporary folder)
and loaded as ``serve --onnx`` loads it, with as many ONNX Runtime intra-op threads as torch has;
both backends of a setting run back to back, so they meet the same machine.

Each served throughput is also given as a percentage of the *compute ceiling*: 1 / the median
per-image time of parse + entropy decode + g_s + tail, measured in this process at batch size 1
on the same packets with the same threads (no HTTP, no queue, no sandbox), per backend. Batching can
exceed 100% when a batch costs less per image than one image alone; the per-image time at the
largest batch is printed beside it for that reason. The load generator shares the machine with
the server, so on a small CPU absolute numbers are pessimistic; the comparison is the point.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
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


def compute_ceiling(serve, packets: list[bytes], repeat: int, batch: int) -> dict:
    """In-process per-image ms of ``serve`` (parse + entropy decode + g_s + tail of a group of
    packets), at batch 1 and ``batch``."""
    from functools import partial

    from frankensplit.sim.measure import time_ms

    one = [ms for p in packets for ms in time_ms(partial(serve, [p]), repeat, 1).wall]
    groups = [packets[i:i + batch] for i in range(0, len(packets) - batch + 1, batch)]
    many = [ms / batch for g in groups for ms in time_ms(partial(serve, g), repeat, 1).wall]
    per_image = statistics.median(one)
    return {"per_image_ms": per_image, "ceiling": 1000.0 / per_image,
            "per_image_ms_batched": statistics.median(many) if many else None, "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model id (default: the default model)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, nargs="+", default=[16])
    parser.add_argument("--repeat", type=int, default=3,
                        help="in-process timing runs per packet for the compute ceiling")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads, and ONNX Runtime's for the onnx backend")
    parser.add_argument("--settings", nargs="+", default=None,
                        help="subset of setting names to run (default: all)")
    parser.add_argument("--backends", nargs="+", choices=["torch", "onnx"],
                        default=["torch", "onnx"], help="server halves to measure (default: both)")
    args = parser.parse_args()

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from frankensplit.data import load_image, make_transform
    from frankensplit.models.zoo import create_model, default_model_id
    from frankensplit.runtime.server import ServerConfig, create_app, run_in_thread
    from frankensplit.runtime.server.loading import served_model

    args.model = args.model or default_model_id()
    threads = torch.get_num_threads()
    model = create_model(args.model)
    transform = make_transform(model.data_config)
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
    with tempfile.TemporaryDirectory() as folder:
        backends = {"torch": (served_model(model), torch_serve(model))}
        if "onnx" in args.backends:
            backends["onnx"] = onnx_backend(model, Path(folder), threads)
        backends = {b: backends[b] for b in args.backends}
        print(f"serve throughput, {args.model}, {args.requests} requests, threads {threads} "
              f"(torch intra-op; ONNX Runtime intra-op for onnx), {os.cpu_count()} logical "
              f"cores, load average {os.getloadavg()[0]:.1f}")
        ceilings = {b: compute_ceiling(serve, packets, args.repeat, 8)
                    for b, (_, serve) in backends.items()}
        for backend, ceiling in ceilings.items():
            batched = ceiling["per_image_ms_batched"]
            print(f"{backend} in-process compute (parse + entropy decode + g_s + tail), median per "
                  f"image: {ceiling['per_image_ms']:.1f} ms at batch 1 -> ceiling "
                  f"{ceiling['ceiling']:.2f} img/s"
                  + (f"; {batched:.1f} ms at batch {ceiling['batch']}" if batched else ""))
        print(f"{'setting':<36}{'backend':>8}{'clients':>8}{'img/s':>8}{'% ceil':>8}"
              f"{'p50 ms':>9}{'p95 ms':>9}{'batch':>7}")
        for name, config in settings.items():
            for backend, (loaded, _) in backends.items():
                app = create_app({model.model_id: loaded}, config)
                with run_in_thread(app) as url:
                    wait_ready(url)
                    for clients in args.clients:
                        r = run_load(url, packets, args.requests, clients)
                        share = 100.0 * r["throughput"] / ceilings[backend]["ceiling"]
                        print(f"{name:<36}{backend:>8}{clients:>8}{r['throughput']:>8.2f}"
                              f"{share:>7.0f}%{r['p50']:>9.1f}{r['p95']:>9.1f}{r['batch']:>7.2f}",
                              flush=True)


def torch_serve(model):
    """The torch in-process path of a group of packets (`ServerPart.decode`)."""
    import torch

    server = model.server

    def serve(group: list[bytes]) -> None:
        with torch.no_grad():
            server.decode(group)  # decode_latent parses too

    return serve


def onnx_backend(model, folder: Path, threads: int):
    """The ONNX server half of ``model`` (exported into ``folder``, loaded as ``serve --onnx``
    does): its `LoadedModel` and its in-process path of a group of packets."""
    from frankensplit.runtime.edge.export import export_server_onnx
    from frankensplit.runtime.server.onnx_server import load_onnx_server_model

    export_server_onnx(model, folder)
    loaded = load_onnx_server_model(folder, threads=threads)
    return loaded, loaded.part.decode


if __name__ == "__main__":
    main()

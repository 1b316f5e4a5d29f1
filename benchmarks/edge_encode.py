"""Time the edge path per 224x224 image: ONNX Runtime (1 and 2 threads) vs torch eager.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/edge_encode.py [--runs 50] [--bundle DIR]

Per configuration it prints the median over ``--runs`` single-image runs (after warm-up) of:
g_a (the encoder), entropy (round + rANS + packet framing), and their sum; preprocessing (PIL
resize/crop + normalise) is timed once, apart, because it is the same for both back ends. torch
eager uses the same thread count through ``torch.set_num_threads``. Without ``--bundle`` the model
is exported to a temporary folder first. Numbers depend on the machine and on its load: report
them with the command line and the CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY16 = Path(__file__).resolve().parents[2] / "shared/data/fixtures/tiny16"


def median_ms(fn: Callable[[], object], runs: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_onnx(bundle: Path, image: Path, threads: int, runs: int, warmup: int) -> dict:
    from frankensplit.runtime.client import EdgeClient

    client = EdgeClient(bundle, threads=threads)
    x = client.preprocess(image)[None]  # (1, 3, 224, 224)
    y = client.encode_latent(x)[0]
    g_a = median_ms(lambda: client.encode_latent(x), runs, warmup)
    entropy = median_ms(lambda: client.pack(y), runs, warmup)
    total = median_ms(lambda: client.pack(client.encode_latent(x)[0]), runs, warmup)
    return {"g_a": g_a, "entropy": entropy, "total": total, "bytes": len(client.pack(y))}


def bench_torch(model_id: str, image: Path, threads: int, runs: int, warmup: int) -> dict:
    import torch

    from frankensplit import bitstream
    from frankensplit.data.transforms import load_image, make_transform
    from frankensplit.models.zoo import create_model

    torch.set_num_threads(threads)
    model = create_model(model_id)
    edge = model.edge
    x = make_transform(model.teacher.data_config)(load_image(image))[None]
    with torch.no_grad():
        y = model.g_a(x)

        def pack() -> bytes:
            payload = model.entropy.compress(y)[0]
            return bitstream.pack(bitstream.Packet(model_id, tuple(y.shape[1:]), payload))

        g_a = median_ms(lambda: model.g_a(x), runs, warmup)
        entropy = median_ms(pack, runs, warmup)
        total = median_ms(lambda: edge.encode(x), runs, warmup)
    return {"g_a": g_a, "entropy": entropy, "total": total, "bytes": len(pack())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fs-lite0-untrained")
    parser.add_argument("--bundle", default=None, help="edge bundle (default: export one now)")
    parser.add_argument("--image", default=None, help="default: the first tiny16 fixture")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    image = Path(args.image) if args.image else min(TINY16.glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(args.bundle) if args.bundle else None
        if bundle is None:
            from frankensplit.runtime.export import export_model

            bundle = export_model(args.model, tmp).edge_dir
        from frankensplit.runtime.client import EdgeClient

        client = EdgeClient(bundle)
        pre = median_ms(lambda: client.preprocess(image), args.runs, args.warmup)
        rows = []
        for threads in (2, 1):
            rows.append((f"onnxruntime, {threads} thread(s)",
                         bench_onnx(bundle, image, threads, args.runs, args.warmup)))
        for threads in (2, 1):
            rows.append((f"torch eager, {threads} thread(s)",
                         bench_torch(args.model, image, threads, args.runs, args.warmup)))

    from frankensplit.sim.measure import cpu_name

    print(f"edge encode, {args.model}, image {image.name}, median of {args.runs} runs")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"preprocess (PIL + numpy): {pre:.2f} ms")
    print(f"{'back end':<28}{'g_a ms':>9}{'entropy ms':>12}{'g_a+entropy ms':>16}{'bytes':>8}")
    for name, r in rows:
        print(f"{name:<28}{r['g_a']:>9.2f}{r['entropy']:>12.2f}{r['total']:>16.2f}{r['bytes']:>8}")


if __name__ == "__main__":
    main()

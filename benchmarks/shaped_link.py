"""Measured end-to-end latency through a shaped link, against `frankensplit simulate`'s model.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/shaped_link.py --profile results/profile.json \\
        [--eval results/eval/results.json|shipped] [--rates 0.25,1,5] [--rtt-ms 40] [--requests 6]

What runs, all real and on loopback:

- ``python -m frankensplit serve`` (subprocess) on a server bundle exported from ``--model``, and
  the torch-free `EdgeClient` on the matching edge bundle: per request, g_a (onnxruntime,
  ``--edge-threads``) + entropy encode + HTTP POST, timed until the answer is in.
- Offloading: the codec's encoder on the 224x224 crop + HTTP POST of the real codec bytes to the
  same server's ``/v1/classify-image`` (`post_packet` with that endpoint: the same client, headers
  and retries), which decodes them and runs the unmodified teacher.
- Both go through :mod:`frankensplit.sim.shaper` (an asyncio TCP proxy: rate limit and RTT/2 each
  way, one extra RTT per new connection). The kernel's shapers are probed first and reported:
  ``tc`` netem/tbf inside ``unshare -rn``.

The prediction is the latency model of :mod:`frankensplit.sim.latency` with the profile's medians
for compute (wall clock; the CPU-time prediction is printed beside it), the payload bytes actually
sent, the modelled HTTP overhead and ``header_bytes=0`` (the proxy meters application bytes). A
first row without the shaper checks the compute terms. The "link" columns check the network terms
alone: measured = end-to-end minus the edge compute timed in the client and the compute the
server reports, predicted = uplink + RTTs + downlink; they separate the link model from how long
the (shared) CPU made compute take during the run. The HTTP request head and response sizes the
proxy counted are printed per row, to check the model's constants.

``--rate-choice`` runs the other benchmark of this link instead (``shaped_link_rates.py``): the
client that picks a rate per request by its uplink estimate and a deadline, against every fixed
rate, at several bandwidths and across a bandwidth step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def kernel_shapers() -> dict[str, str]:
    """Whether ``tc`` netem (delay) and tbf (rate) work inside ``unshare -rn`` here."""
    out = {}
    for name, qdisc in (("netem", "netem delay 20ms"),
                        ("tbf", "tbf rate 1mbit burst 16kb latency 100ms")):
        cmd = ["unshare", "-rn", "sh", "-c", f"ip link set lo up && tc qdisc add dev lo root {qdisc}"]
        try:
            r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as e:
            out[name] = f"unavailable ({e})"
            continue
        lines = (r.stderr or r.stdout).strip().splitlines()
        out[name] = "available" if r.returncode == 0 else f"unavailable ({lines[-1] if lines else r.returncode})"
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(args: list[str], port: int, log: Path, timeout: float = 300.0) -> subprocess.Popen:
    """Start ``python -m ARGS`` and wait for its /readyz."""
    with open(log, "w") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{args[0:2]} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"{args[0:2]} not ready within {timeout} s")


def timed(fn: Callable[[], tuple[int, dict, float]]) -> dict[str, Any]:
    """One request: end-to-end wall ms, payload bytes, edge ms and the server's own compute ms."""
    start = time.perf_counter()
    size, answer, edge_ms = fn()
    return {"ms": (time.perf_counter() - start) * 1000, "bytes": size, "edge_ms": edge_ms,
            "server_ms": answer.get("decode_ms", 0.0),  # all of the request's compute
            "attempts": answer.get("attempts", 1)}


def qualities(args: argparse.Namespace, model_id: str) -> dict[str, float]:
    """Codec -> quality: matched to the top-1 of ``--eval-model`` (default ``model_id``, the model
    measured here) on an eval result, or given."""
    out: dict[str, float] = {}
    if args.eval:
        from frankensplit.eval.records import read_results
        from frankensplit.sim.matching import match_model

        results = read_results(args.eval)  # "shipped": the package's dev-set results
        print(f"codec qualities matched on {results['origin']}")
        scenario = match_model(results, args.eval_model or model_id, args.codecs.split(","))
        for name, m in scenario.codecs.items():
            if m.quality is None:
                raise ValueError(f"{name}: no quality at the model's top-1 ({m.status})")
            out[name] = float(round(m.quality))  # JPEG takes whole qualities only
    for item in args.qualities.split(",") if args.qualities else []:
        name, _, q = item.partition("=")
        out[name] = float(q)
    if not out:
        raise ValueError("give --eval or --qualities")
    return out


def predict(profile: dict, method: str, quality: float | None, num_bytes: float,
            mbit: float, rtt_ms: float, edge: str, clock: str) -> Any:
    """The latency model's breakdown for one request (application bytes only, as the shaper)."""
    from frankensplit.sim.latency import Cost, Wire, end_to_end
    from frankensplit.sim.links import Link
    from frankensplit.sim.profile import codec_ms, median_ms

    if method == "frankensplit":
        fs = profile["frankensplit"]
        cost = Cost(method, "", num_bytes, median_ms(fs["edge"][edge]["total"], clock),
                    median_ms(fs["server"]["total"], clock))
    else:
        enc, dec = codec_ms(profile, method, quality=quality, clock=clock)
        cost = Cost(method, "", num_bytes, enc,
                    dec + median_ms(profile["teacher_ms"]["forward"], clock))
    return end_to_end(cost, Link("l", mbit, rtt_ms), Wire(header_bytes=0.0))


def run_rate(jobs: dict[str, tuple[int, Callable]], mbit: float | None, rtt_ms: float,
             requests: int) -> dict[str, list[dict]]:
    """``requests`` timed requests per method, methods interleaved, each through its own shaper.

    Requests never overlap, so one shaper per method is the same as one shared link. Each sample
    gets the bytes its connection carried each way (HTTP overhead included), when shaped.
    """
    from contextlib import ExitStack

    from frankensplit.sim.shaper import shaped_proxy

    with ExitStack() as stack:
        shapers = {} if mbit is None else {
            name: stack.enter_context(shaped_proxy(("127.0.0.1", port), mbit, rtt_ms))
            for name, (port, _) in jobs.items()}
        urls = {name: shapers[name].url if shapers else f"http://127.0.0.1:{port}"
                for name, (port, _) in jobs.items()}
        samples: dict[str, list[dict]] = {name: [] for name in jobs}
        for i in range(requests):
            for name, (_, send) in jobs.items():
                samples[name].append(timed(partial(send, urls[name], i)))
        for name, shaper in shapers.items():
            for sample, conn in zip(samples[name], shaper.connections):
                sample["up_bytes"], sample["down_bytes"] = conn.up_bytes, conn.down_bytes
    return samples


def main() -> None:
    if "--rate-choice" in sys.argv[1:]:  # the rate-choice benchmark has its own arguments
        from shaped_link_rates import main as rate_choice

        rate_choice()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="zoo model id (default: the default model)")
    parser.add_argument("--rate", type=int, default=None, metavar="I",
                        help="a variable-rate model's rate index (default: its default rate)")
    parser.add_argument("--profile", required=True, help="device profile (frankensplit profile)")
    parser.add_argument("--eval", default=None, help="eval results.json, or 'shipped' (the "
                        "package's dev-set results): codec quality at the model's top-1")
    parser.add_argument("--eval-model", default=None,
                        help="FrankenSplit id in the eval result whose top-1 the codecs are "
                             "matched to (default: --model)")
    parser.add_argument("--codecs", default="jpeg,webp")
    parser.add_argument("--qualities", default=None, help="CODEC=Q,... (overrides --eval)")
    parser.add_argument("--rates", default="0.25,1,5", help="Mbit/s, comma-separated")
    parser.add_argument("--rtt-ms", type=float, default=40.0)
    parser.add_argument("--requests", type=int, default=6, help="timed requests per method/rate")
    parser.add_argument("--edge-threads", type=int, default=1)
    parser.add_argument("--out", default="results/shaped_link.json")
    args = parser.parse_args()
    try:
        measure(args)
    except ValueError as e:  # a rate, model or eval file that does not fit: one line, no trace
        raise SystemExit(f"shaped_link.py: error: {e}") from None


def measure(args: argparse.Namespace) -> None:
    from frankensplit.codecs import create_codec
    from frankensplit.commands._common import check_rate
    from frankensplit.data import bundled_photos, crop_transform, load_image
    from frankensplit.models.zoo import create_model, default_model_id
    from frankensplit.models.zoo_index import rate_setting
    from frankensplit.runtime.edge.client import EdgeClient
    from frankensplit.runtime.edge.export import export_bundle
    from frankensplit.sim.profile import load_profile, profiled_setting

    profile = load_profile(args.profile)
    shapers = kernel_shapers()
    model = create_model(args.model or default_model_id())
    rate = check_rate(model.model_id, model.rates, args.rate, default=model.default_rate)
    # The setting measured (a variable-rate model at one rate: ``<id>@<lambda>``) is the one the
    # codecs are matched to and the one the profile must hold: predictions price its compute.
    setting = rate_setting(model.model_id, None if rate is None else model.rates[rate])
    if profiled_setting(profile) != setting:
        raise SystemExit(f"the profile is of {profiled_setting(profile)}, the link runs {setting}: "
                         f"profile it first (`frankensplit profile --model {model.model_id}"
                         f"{'' if rate is None else f' --rate {rate}'}`)")
    quality = qualities(args, setting)
    edge = f"onnx-{args.edge_threads}"
    photos = bundled_photos()
    crops = [crop_transform(model.data_config)(load_image(p)) for p in photos]
    tmp = Path(tempfile.mkdtemp(prefix="shaped_link_"))
    bundle = export_bundle(model, tmp / "bundle")
    del model
    client = EdgeClient(bundle.edge_dir, threads=args.edge_threads)
    xs = [client.preprocess(p)[None] for p in photos]  # (1, 3, 224, 224) each
    codecs = {name: create_codec(name) for name in quality}
    port = free_port()
    proc = None
    try:
        proc = start_server(["frankensplit", "serve", "--model", str(bundle.server_dir),
                             "--port", str(port), "--log-level", "warning",
                             "--threads", str(profile["server_threads"])], port, tmp / "serve.log")
        jobs = _jobs(client, xs, crops, codecs, quality, port, rate)
        rows = []
        run_rate(jobs, None, 0.0, 2)  # warm-up: first requests load lazily on the server
        for mbit in [None, *(float(r) for r in args.rates.split(","))]:
            samples = run_rate(jobs, mbit, args.rtt_ms, args.requests)
            rows += _rows(samples, profile, quality, mbit, args.rtt_ms, edge)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    report(rows, shapers, profile, args, quality)


def _jobs(client, xs, crops, codecs, quality, port, rate) -> dict:
    """method -> (server port, send(url, i)); each method gets its own shaper to the one server.
    FrankenSplit codes at ``rate`` (a variable-rate bundle's index; None: a fixed-rate one)."""
    from frankensplit.protocol import CLASSIFY_IMAGE_PATH
    from frankensplit.runtime.edge.client import post_packet

    def fs(url: str, i: int) -> tuple[int, dict, float]:
        start = time.perf_counter()
        packet = client.pack(client.encode_latent(xs[i % len(xs)])[0], rate)
        edge_ms = (time.perf_counter() - start) * 1000
        return len(packet), post_packet(url, packet), edge_ms

    def offload(name: str) -> Callable[[str, int], tuple[int, dict, float]]:
        def send(url: str, i: int) -> tuple[int, dict, float]:
            start = time.perf_counter()
            data = codecs[name].encode(crops[i % len(crops)], quality[name])
            edge_ms = (time.perf_counter() - start) * 1000
            return len(data), post_packet(url, data, endpoint=CLASSIFY_IMAGE_PATH), edge_ms
        return send

    return {"frankensplit": (port, fs), **{n: (port, offload(n)) for n in codecs}}


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _rows(samples: dict, profile: dict, quality: dict, mbit: float | None, rtt_ms: float,
          edge: str) -> list[dict]:
    """Measured against predicted, in full and for the link terms alone."""
    rows = []
    for method, runs in samples.items():
        ms = sorted(r["ms"] for r in runs)
        size = statistics.fmean(r["bytes"] for r in runs)
        rate, rtt = (mbit, rtt_ms) if mbit is not None else (1e6, 0.0)
        wall, cpu = (predict(profile, method, quality.get(method), size, rate, rtt, edge, clock)
                     for clock in ("wall", "cpu"))
        measured = statistics.median(ms)
        link_measured = statistics.median(r["ms"] - r["edge_ms"] - r["server_ms"] for r in runs)
        link_predicted = wall.uplink_ms + wall.rtt_ms + wall.downlink_ms
        rows.append({
            "mbit_per_s": mbit, "rtt_ms": rtt, "method": method,
            "quality": quality.get(method), "payload_bytes": round(size, 1),
            "requests": len(runs), "retried": sum(r["attempts"] > 1 for r in runs),
            "measured_median_ms": round(measured, 2),
            "measured_p90_ms": round(ms[max(0, -(-9 * len(ms) // 10) - 1)], 2),
            "predicted_ms": round(wall.total_ms, 2),
            "relative_error": round((wall.total_ms - measured) / measured, 4),
            "predicted_cpu_clock_ms": round(cpu.total_ms, 2),
            "relative_error_cpu_clock": round((cpu.total_ms - measured) / measured, 4),
            "edge_measured_ms": round(_median(runs, "edge_ms"), 2),
            "server_reported_ms": round(_median(runs, "server_ms"), 2),
            "link_measured_ms": round(link_measured, 2),
            "link_predicted_ms": round(link_predicted, 2),
            "link_relative_error": round((link_predicted - link_measured) / link_measured, 4)
            if mbit is not None else None,
        })
        if "up_bytes" in runs[0]:
            rows[-1]["http_request_head_bytes"] = statistics.fmean(
                r["up_bytes"] - r["bytes"] for r in runs)
            rows[-1]["http_response_bytes"] = statistics.fmean(r["down_bytes"] for r in runs)
    return rows


def report(rows: list[dict], shapers: dict, profile: dict, args: argparse.Namespace,
           quality: dict) -> None:
    from frankensplit.sim.profile import profiled_setting

    kernel = ", ".join(f"tc {k}: {v}" for k, v in shapers.items())
    print(f"shaper used: application-level asyncio proxy (frankensplit.sim.shaper); {kernel}")
    print(f"profile {args.profile} ({profiled_setting(profile)}), codec qualities {quality}, "
          f"{args.requests} requests per row, RTT {args.rtt_ms:g} ms, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'link':<11}{'method':<13}{'bytes':>7}{'meas ms':>9}{'p90':>8}{'pred ms':>9}"
          f"{'err':>8}{'pred(cpu)':>10}{'err':>8}{'edge':>7}{'server':>8}{'link meas':>10}"
          f"{'link pred':>10}{'err':>8}{'HTTP req/resp B':>16}")
    for r in rows:
        link = "no shaper" if r["mbit_per_s"] is None else f"{r['mbit_per_s']:g} Mbit/s"
        link_err = "-" if r["link_relative_error"] is None else f"{r['link_relative_error']:+.1%}"
        print(f"{link:<11}{r['method']:<13}{r['payload_bytes']:>7.0f}"
              f"{r['measured_median_ms']:>9.1f}{r['measured_p90_ms']:>8.1f}"
              f"{r['predicted_ms']:>9.1f}{r['relative_error']:>+8.1%}"
              f"{r['predicted_cpu_clock_ms']:>10.1f}{r['relative_error_cpu_clock']:>+8.1%}"
              f"{r['edge_measured_ms']:>7.1f}{r['server_reported_ms']:>8.1f}"
              f"{r['link_measured_ms']:>10.1f}{r['link_predicted_ms']:>10.1f}{link_err:>8}"
              f"{r.get('http_request_head_bytes', 0):>9.0f}/{r.get('http_response_bytes', 0):<6.0f}")
    retried = sum(r["retried"] for r in rows)
    print(f"requests the client had to retry: {retried} (their latency includes the back-off)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "shaper": "application-level (frankensplit.sim.shaper)", "kernel_shapers": shapers,
        "rtt_ms": args.rtt_ms, "profile": args.profile, "qualities": quality,
        "load_average_1m": os.getloadavg()[0], "rows": rows,
    }, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

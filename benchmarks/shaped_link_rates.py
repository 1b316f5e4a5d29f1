"""Rate chosen per request by the link, through the shaped link: adaptive against every fixed rate.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/shaped_link.py --rate-choice \\
        [--models fs-lite0-l64,fs-lite0-l4,...] [--deadline-ms 400] [--bandwidths 0.2,1,5] \\
        [--step 5:0.2] [--rtt-ms 40] [--images 40] [--data ../shared/data/eval/ilsvrc2012_val_dev]

(``shaped_link.py --rate-choice`` runs this file's `main`.) What runs, all real and on loopback:

- the rates, exported from the zoo: a variable-rate model (the zoo default, ``fs-lite0-vr``) is
  one edge + server bundle holding every rate; fixed-rate models (``--models fs-lite0-l64,...``,
  or the default's family when the default is a fixed-rate model: same teacher, encoder and
  decoder, one per shipped lambda) are one bundle each;
- ``python -m frankensplit serve`` (subprocess) with all the server bundles;
- per phase (each ``--bandwidths`` rate, then ``--step A:B``: A for the first half of the images,
  B for the second), one shaped link (:mod:`frankensplit.sim.shaper`, ``--rtt-ms``) and, per image
  in turn, the adaptive `RateClient` (all bundles, ``--deadline-ms``; a fresh client per phase, so
  it starts knowing nothing of the link, and keeps its estimate across the step) and one fixed-rate
  client per rate (per bundle, or per rate of the variable-rate bundle), each timed image in hand
  to answer. Requests never overlap.

Per phase and client: share of requests within the deadline, mean top-1 against the labels of the
``--data`` images, mean bytes, and for the adaptive client how often it sent each rate. The target
line checks: the adaptive client within the deadline for >= 95% of the requests in every phase, and
every fixed rate either under 95% in some phase or less accurate than the adaptive client in some
phase (a fixed rate that made every deadline and was as accurate everywhere would beat it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEV = Path(__file__).resolve().parents[2] / "shared/data/eval/ilsvrc2012_val_dev"
TARGET_SHARE = 0.95


def family(model_id: str | None) -> list[str]:
    """Trained zoo models of ``model_id``'s family (default: the zoo default's), fewest bytes
    first; a variable-rate model alone (its rates are the family)."""
    from frankensplit.models.zoo import MODELS, default_model_id

    base = MODELS.get(model_id or default_model_id())
    if base.architecture.rates is not None:
        return [base.model_id]
    same = [MODELS.get(m) for m in MODELS.names()]
    same = [e for e in same if e.trained and e.architecture == base.architecture]
    return [e.model_id for e in sorted(same, key=lambda e: e.lmbda or 0.0, reverse=True)]


def phases(args: argparse.Namespace) -> list[tuple[str, list[float]]]:
    """(name, bandwidth per half) for each phase: constant ones, then the step."""
    out = [(f"{b:g} Mbit/s", [b, b]) for b in map(float, args.bandwidths.split(","))]
    if args.step:
        a, _, b = args.step.partition(":")
        out.append((f"step {float(a):g} -> {float(b):g} Mbit/s", [float(a), float(b)]))
    return out


def run_phase(bandwidths: list[float], rtt_ms: float, port: int, images: list[Path],
              labels: list[int], bundles: dict[str, Path], args: argparse.Namespace) -> list[dict]:
    """Every client on every image; the link is ``bandwidths[0]`` then ``[1]`` from halfway."""
    from frankensplit.runtime.edge.client import post_packet
    from frankensplit.runtime.edge.rate_choice import RateClient
    from frankensplit.runtime.edge.retry import NO_RETRY
    from frankensplit.sim.shaper import shaped_proxy

    with ExitStack() as stack:
        links = [stack.enter_context(shaped_proxy(("127.0.0.1", port), b, rtt_ms))
                 for b in dict.fromkeys(bandwidths)]
        urls = [links[0].url, links[-1].url]
        adaptive = RateClient(list(bundles.values()), args.deadline_ms,
                              threads=args.edge_threads, warmup=images[0])
        adaptive.probe(urls[0])
        fixed = fixed_clients(bundles, args.edge_threads)
        for client, rate in fixed.values():
            client.encode(images[0], rate)  # warm the session, as the adaptive client's warm-up does
        records = []
        for i, (image, label) in enumerate(zip(images, labels)):
            url = urls[0] if i < len(images) // 2 else urls[1]
            answer = adaptive.classify(url, image, retry=NO_RETRY)
            records.append(_record("adaptive", i, label, answer, answer["latency_ms"],
                                   _sent(answer["rate"]), args.deadline_ms, answer["rate"]))
            for model_id, (client, rate) in fixed.items():
                start = time.perf_counter()
                packet = client.encode(image, rate)
                answer = post_packet(url, packet, retry=NO_RETRY)
                answer["packet_bytes"] = len(packet)
                ms = (time.perf_counter() - start) * 1000
                records.append(_record(f"fixed {model_id}", i, label, answer, ms, model_id,
                                       args.deadline_ms))
    return records


def fixed_clients(bundles: dict[str, Path], threads: int) -> dict[str, tuple[Any, int | None]]:
    """A fixed-rate client per rate: (client, rate index) by setting name: the model id of a
    fixed-rate bundle, ``<id>@<lambda>`` for each rate of a variable-rate one (one onnxruntime
    session shared by its rates)."""
    from frankensplit.models.zoo_index import rate_setting
    from frankensplit.runtime.edge.client import EdgeClient

    out: dict[str, tuple[Any, int | None]] = {}
    for model_id, bundle in bundles.items():
        client = EdgeClient(bundle, threads=threads)
        for i, lmbda in enumerate(client.rates or (None,)):
            out[rate_setting(model_id, lmbda)] = (client, None if lmbda is None else i)
    return out


def _sent(rate: dict) -> str:
    """The setting the adaptive client sent: its model id, or ``<id>@<lambda>``."""
    from frankensplit.models.zoo_index import rate_setting

    return rate_setting(rate["model_id"], rate.get("lambda"))


def _record(client: str, i: int, label: int, answer: dict, ms: float, model_id: str,
            deadline_ms: float, rate: dict | None = None) -> dict:
    server_ms = float(answer.get("decode_ms", 0.0)) + float(answer.get("queue_ms", 0.0))
    return {"client": client, "image": i, "sent": model_id, "bytes": answer["packet_bytes"],
            "ms": round(ms, 2), "server_ms": round(server_ms, 2), "within": ms <= deadline_ms,
            "correct": answer["predictions"][0]["index"] == label, "rate": rate}


def summarize(records: list[dict]) -> dict[str, dict]:
    """Per client: share within the deadline, mean top-1, mean bytes, rates sent."""
    out = {}
    for name in dict.fromkeys(r["client"] for r in records):
        rs = [r for r in records if r["client"] == name]
        out[name] = {
            "requests": len(rs), "within_share": sum(r["within"] for r in rs) / len(rs),
            "top1": 100.0 * sum(r["correct"] for r in rs) / len(rs),
            "bytes": statistics.fmean(r["bytes"] for r in rs),
            "median_ms": statistics.median(r["ms"] for r in rs),
            "p95_ms": sorted(r["ms"] for r in rs)[max(0, -(-95 * len(rs) // 100) - 1)],
            "sent": dict(sorted({m: sum(r["sent"] == m for r in rs)
                                 for m in {r["sent"] for r in rs}}.items())),
        }
    return out


def verdict(summary: dict[str, dict[str, dict]]) -> list[str]:
    """The target, checked: adaptive >= 95% everywhere; every fixed rate beaten somewhere."""
    lines = []
    adaptive_ok = all(s["adaptive"]["within_share"] >= TARGET_SHARE for s in summary.values())
    worst = min(s["adaptive"]["within_share"] for s in summary.values())
    lines.append(f"adaptive within the deadline in every phase: {'met' if adaptive_ok else 'NOT met'}"
                 f" (lowest share {worst:.1%}, target >= {TARGET_SHARE:.0%})")
    fixed = [c for c in next(iter(summary.values())) if c != "adaptive"]
    for name in fixed:
        missed = [p for p, s in summary.items() if s[name]["within_share"] < TARGET_SHARE]
        worse = [p for p, s in summary.items() if s[name]["top1"] < s["adaptive"]["top1"]]
        how = (f"misses the deadline share at {', '.join(missed)}" if missed else
               f"meets every deadline but is less accurate at {', '.join(worse)}" if worse else
               "meets every deadline and is at least as accurate everywhere: NOT beaten")
        lines.append(f"{name}: {how}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate-choice", action="store_true", help="(selects this benchmark)")
    parser.add_argument("--models", default=None, help="comma-separated zoo ids (default: the "
                        "trained models of the default's family)")
    parser.add_argument("--deadline-ms", type=float, default=400.0)
    parser.add_argument("--bandwidths", default="0.2,1,5", help="Mbit/s of the constant phases")
    parser.add_argument("--step", default="5:0.2", help="A:B Mbit/s, switched halfway ('' none)")
    parser.add_argument("--rtt-ms", type=float, default=40.0)
    parser.add_argument("--images", type=int, default=40, help="labelled images per phase")
    parser.add_argument("--data", default=str(DEV), help="folder with labels.csv")
    parser.add_argument("--edge-threads", type=int, default=1)
    parser.add_argument("--server-threads", type=int, default=1)
    parser.add_argument("--out", default="results/shaped_link_rates.json")
    args = parser.parse_args(argv)
    measure(args)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from shaped_link import free_port, start_server

    from frankensplit.data import read_labels_csv
    from frankensplit.models.zoo import MODELS
    from frankensplit.runtime.edge.export import export_model

    models = args.models.split(",") if args.models else family(None)
    if sum(len(MODELS.get(m).architecture.rates or (0,)) for m in models) < 2:
        raise SystemExit(f"rate choice needs at least two rates, got {models}")
    paths, labels = read_labels_csv(Path(args.data) / "labels.csv")
    paths, labels = paths[:args.images], labels[:args.images]
    tmp = Path(tempfile.mkdtemp(prefix="shaped_link_rates_"))
    try:
        exported = {m: export_model(m, tmp / m) for m in models}
        port = free_port()
        serve = ["frankensplit", "serve", "--port", str(port), "--log-level", "warning",
                 "--threads", str(args.server_threads)]
        for result in exported.values():
            serve += ["--model", str(result.server_dir)]
        proc = start_server(serve, port, tmp / "serve.log")
        try:
            bundles = {m: r.edge_dir for m, r in exported.items()}
            run_phase([100.0, 100.0], 0.0, port, paths[:2], labels[:2], bundles, args)  # warm-up
            out: dict[str, Any] = {"phases": {}, "records": {}}
            for name, bandwidths in phases(args):
                records = run_phase(bandwidths, args.rtt_ms, port, paths, labels, bundles, args)
                out["records"][name] = records
                out["phases"][name] = summarize(records)
                print(f"{name}: done, load average {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out.update(models=models, deadline_ms=args.deadline_ms, rtt_ms=args.rtt_ms,
               images=len(paths), load_average_1m=os.getloadavg()[0],
               verdict=verdict(out["phases"]))
    report(out)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return out


def report(out: dict[str, Any]) -> None:
    print(f"rate choice through the shaped link: deadline {out['deadline_ms']:g} ms, RTT "
          f"{out['rtt_ms']:g} ms, {out['images']} labelled images per phase, rates "
          f"{', '.join(out['models'])}; load average {out['load_average_1m']:.1f}")
    print(f"{'phase':<28}{'client':<26}{'within':>8}{'top-1':>8}{'bytes':>8}{'median':>8}"
          f"{'p95 ms':>8}  rates sent")
    for phase, by_client in out["phases"].items():
        for client, s in by_client.items():
            sent = ", ".join(f"{m} x{n}" for m, n in s["sent"].items()) if client == "adaptive" \
                else ""
            print(f"{phase:<28}{client:<26}{s['within_share']:>8.1%}{s['top1']:>7.1f}%"
                  f"{s['bytes']:>8.0f}{s['median_ms']:>8.0f}{s['p95_ms']:>8.0f}  {sent}")
    for line in out["verdict"]:
        print(line)


if __name__ == "__main__":
    main()

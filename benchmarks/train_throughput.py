"""Training-step throughput of the shipped recipe: today's step against each speed-up, side by side.

One step of configs/lite0_cpu.yaml (16 patches of 128x128, lambda 4, Adam, real fs-lite0 weights and
the real EfficientNet-Lite0 teacher), on real training images. Variants run interleaved, round after
round, and each reports the median step time, so a load that comes and goes on this shared machine
hits all of them alike. Also: the same at 224x224 crops (images/s), the data loader's own rate (does
it starve the step?), and the speed-ups that were tried and dropped, each in a subprocess because
some crash this torch build (PLATFORM.md). Not a unit test.

    python benchmarks/train_throughput.py                 # 2 threads, 5 rounds
    python benchmarks/train_throughput.py --threads 1 --rounds 3

Variants (what each changes over the one above it in the table):
- ``today``: main before this change: teacher head under ``no_grad``, g_s contiguous.
- ``+inference_mode``: the teacher's forward under ``torch.inference_mode`` (no autograd records).
- ``+channels_last g_s`` (the new default, ``TrainConfig.channels_last``): oneDNN's depthwise
  convolutions of the blueprint run in NHWC.
- ``default + kd``: the new default with the output-distillation term (tail forward + backward).
- ``+ amp``, ``+ kd + amp``: those two under ``amp: true`` (bfloat16 autocast of g_a, g_s, the
  teacher and the distillation tail; the entropy model in float32), on CPUs with native bfloat16
  only (a line under the table says when this one has none).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POOL = REPO.parent / "shared/data/train"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    p.add_argument("--model", default="fs-lite0-l4")
    p.add_argument("--data", type=Path, default=POOL)
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # subprocess entry
    return p.parse_args()


def real_batch(cfg: dict, data: Path, size: int, n: int, view: str) -> tuple:
    """n real training images as the recipe's view (patches at the eval scale, or eval crops)."""
    import torch

    from frankensplit.data import ImageDataset, make_transform

    ds = ImageDataset([str(data)], make_transform(cfg, view, size), limit=None)
    torch.manual_seed(0)
    idx = torch.randperm(len(ds))[:n]
    return torch.stack([ds[int(i)][0] for i in idx]), ds


def make_step(model, x, variant: str) -> Callable[[], None]:
    """A closure running one optimizer step of ``variant`` on a private copy of the codec."""
    from contextlib import nullcontext

    import torch

    from frankensplit.losses import output_distillation, rd_loss
    from frankensplit.train.loop import MixedPrecisionForward

    m = copy.deepcopy(model)
    m.train()
    amp = variant.endswith("amp")
    kd = variant.startswith("kd")
    if variant in ("channels_last", "kd", "cl_g_a", "amp", "kd_amp"):
        m.g_s.to(memory_format=torch.channels_last)
    if variant == "cl_g_a":  # keep the 3-channel projection contiguous (it crashes otherwise)
        for block in list(m.g_a)[1:]:
            block.to(memory_format=torch.channels_last)
    params = [p for n, p in m.named_parameters() if p.requires_grad and not n.endswith("quantiles")]
    opt = torch.optim.Adam(params, lr=1e-5)
    forward = torch.compile(m) if variant == "compile" else m
    if amp:
        forward = MixedPrecisionForward(m, "cpu", torch.bfloat16)
    ctx = torch.no_grad if variant == "today" else torch.inference_mode
    spec = m.teacher.spec

    def cast():  # the training loop's autocast of the teacher and the distillation tail
        return torch.autocast("cpu", dtype=torch.bfloat16) if amp else nullcontext()

    def step() -> None:
        with ctx(), cast():
            h = m.teacher.head(x).float()
            t_logits = m.teacher.tail(h).float() if kd else None
        h = h.clone()
        out = forward(x)
        parts = rd_loss(out["h_hat"], h, out["likelihoods"], 4.0, None, spec.layout)
        loss = parts["loss"]
        if kd:
            with cast():
                logits = m.teacher.tail(out["h_hat"]).float()
            loss = loss + 10.0 * h[0].numel() * output_distillation(logits, t_logits.clone())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        m.aux_loss().backward()

    return step


def time_steps(step: Callable[[], None], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t) / n


def loader_rate(ds, workers: int, batches: int = 12) -> float:
    """Batches per second the DataLoader delivers with ``workers`` worker processes."""
    from torch.utils.data import DataLoader

    it = iter(DataLoader(ds, batch_size=16, shuffle=True, num_workers=workers, drop_last=True))
    next(it)  # worker start-up is paid once per epoch, not per step
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches / (time.perf_counter() - t)


def probe(args: argparse.Namespace) -> None:
    """Subprocess: a few steps of one risky variant; prints its step time."""
    import torch

    from frankensplit.models.zoo import create_model

    torch.set_num_threads(args.threads)
    model = create_model(args.model)
    x, _ = real_batch(model.data_config, args.data, 128, 16, "patch")
    step = make_step(model, x, args.probe)
    step()
    step()  # warm-up (compilation)
    print(f"PROBE {time_steps(step, args.steps):.4f}")


def run_probe(args: argparse.Namespace, variant: str) -> str:
    cmd = [sys.executable, __file__, "--probe", variant, "--threads", str(args.threads),
           "--steps", str(args.steps), "--model", args.model, "--data", str(args.data)]
    try:
        r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return "timed out (> 900 s)"
    for line in r.stdout.splitlines():
        if line.startswith("PROBE "):
            return f"{16 / float(line.split()[1]):.1f} patches/s"
    tail = (r.stderr.strip().splitlines() or ["?"])[-1][:80]
    return f"failed (exit {r.returncode}: {tail})"


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.probe:
        return probe(args)
    import torch

    from frankensplit.models.zoo import create_model
    from frankensplit.sim.measure import cpu_name
    from frankensplit.train.start import cpu_has_bf16

    torch.set_num_threads(args.threads)
    model = create_model(args.model)
    cfg = model.data_config
    x128, ds = real_batch(cfg, args.data, 128, 16, "patch")
    x224, _ = real_batch(cfg, args.data, 224, 16, "eval")
    variants = [("today", "today"), ("+inference_mode", "inference_mode"),
                ("+channels_last g_s (default)", "channels_last"), ("default + kd", "kd")]
    if cpu_has_bf16():
        variants += [("default + amp", "amp"), ("default + kd + amp", "kd_amp")]
    steps = {(name, size): make_step(model, x, v) for name, v in variants
             for size, x in ((128, x128), (224, x224))}
    times: dict[tuple[str, int], list[float]] = {k: [] for k in steps}
    for k, step in steps.items():
        step()  # warm-up
    for _ in range(args.rounds):
        for k, step in steps.items():
            times[k].append(time_steps(step, args.steps))
    print(f"# Training-step throughput, {cpu_name()}, {args.threads} thread(s), torch "
          f"{torch.__version__}, {args.rounds} interleaved rounds x {args.steps} steps (median)\n")
    print("| variant | ms/step (16 x 128^2) | patches/s | x today | ms/step (16 x 224^2) "
          "| images/s | x today |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = {s: statistics.median(times[("today", s)]) for s in (128, 224)}
    for name, _ in variants:
        row = [name]
        for s in (128, 224):
            t = statistics.median(times[(name, s)])
            row += [f"{t * 1000:.0f}", f"{16 / t:.1f}", f"{base[s] / t:.2f}"]
        print("| " + " | ".join(row) + " |")
    if not cpu_has_bf16():
        print("\n(amp rows left out: this CPU has no native bfloat16, `amp: true` is refused)")
    print("\nData loader (16 patches of 128^2 from JPEG files, decode + bicubic resize + crop):")
    for workers in (0, 1):
        rate = loader_rate(ds, workers)
        print(f"- {workers} worker(s): {rate:.1f} batches/s = {16 * rate:.0f} patches/s")
    print("\nTried and dropped (subprocess each, 16 x 128^2 patches):")
    for name, v in (("torch.compile (inductor) of the whole codec", "compile"),
                    ("channels_last g_a too (blocks 2-3)", "cl_g_a")):
        print(f"- {name}: {run_probe(args, v)}")


if __name__ == "__main__":
    main()

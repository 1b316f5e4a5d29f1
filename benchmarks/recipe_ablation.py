"""Recipe ablation at a fixed budget: each variant trained from the same start for the same steps.

Every arm is ``frankensplit train`` on one base config plus the arm's ``--set`` overrides, from the
same codec weights (``--init``), seed, data and number of steps, without checkpoint selection (the
last weights are the result: equal budget, nothing chosen on the evaluation images). Then all arms
are evaluated in one ``frankensplit eval`` run on the validation split (the first 400 dev images,
real bytes, batch 1), and each arm's relative feature error ``sum (h_hat - h)^2 / sum h^2`` is
measured on training-pool and dev images, to tell underfitting from poor generalisation.
Arms run ``--jobs`` at a time, one torch thread each (two 1-thread processes use a 2-core machine
better than one 2-thread process when anything else runs beside it). Not a unit test.

    python benchmarks/recipe_ablation.py                        # every arm, 500 steps each
    python benchmarks/recipe_ablation.py --arms base,kd10 --steps 100 --val-limit 50   # quick look
    python benchmarks/recipe_ablation.py --report-only          # re-read finished arms
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared/data"
DEV = SHARED / "eval/ilsvrc2012_val_dev"

#: The arms start from the first-generation zoo (replaced since; read from git history by the
#: trainer, `frankensplit.sources`), as the table in docs/training.md did.
GEN1 = "git:77c9267:frankensplit/zoo/"
#: The paper's stage 2 at the same pixel budget: 8 fixed 224^2 crops per step cost about 1.53x the
#: pixels of 16 patches of 128^2, so 260 steps match 400 (saliency maps of the first 1280 images:
#: ``frankensplit saliency --teacher tf_efficientnet_lite0 --data ../shared/data/train --limit 1280``).
SALIENCY = ["stages.0.view=fixed", "stages.0.saliency=true", "stages.0.batch_size=8",
            "stages.0.lr=4.0e-4", "stages.0.steps_per_epoch=130", "data.train_limit=1280",
            f"saliency_cache={REPO / 'runs/saliency/tf_efficientnet_lite0'}"]

#: name -> (what it tests, --set overrides on top of the base config). An arm may set its own
#: ``lmbda`` and ``init_codec`` (a second point of a curve).
ARMS: dict[str, tuple[str, list[str]]] = {
    "base": ("head distillation, lr 1e-3, exp decay 0.9 / 250 steps (shipped rates recipe)", []),
    "base_l1": ("base at lambda 1 from fs-lite0-l1 (second point of base's curve)", [
        "lmbda=[1]", f"init_codec={GEN1}fs-lite0-l1.safetensors"]),
    "kd3": ("+ output distillation, kappa 3", ["kd_weight=3"]),
    "kd10": ("+ output distillation, kappa 10", ["kd_weight=10"]),
    "kd30": ("+ output distillation, kappa 30", ["kd_weight=30"]),
    "norm": ("+ per-channel normalised distortion", ["channel_norm=true"]),
    "cos": ("cosine lr from 2e-3, 50 warm-up steps", [
        "stages.0.schedule=cosine", "stages.0.lr=2.0e-3", "stages.0.warmup_steps=50"]),
    "pool": ("+ imagenet_sample_1k in the training pool (1000 classes)", [
        f"data.train=[{SHARED / 'train'},{SHARED / 'eval/imagenet_sample_1k'}]"]),
    "kd3_cos": ("kd3 + cos", ["kd_weight=3", "stages.0.schedule=cosine", "stages.0.lr=2.0e-3",
                              "stages.0.warmup_steps=50"]),
    "kd10_norm": ("kd10 + norm", ["kd_weight=10", "channel_norm=true"]),
    "kd3_cos_amp": ("kd3_cos under bfloat16 autocast (amp: true; CPUs with native bfloat16)",
                    ["kd_weight=3", "stages.0.schedule=cosine", "stages.0.lr=2.0e-3",
                     "stages.0.warmup_steps=50", "amp=true"]),
    "sal": ("paper's stage 2: saliency-weighted, 8 fixed 224^2 crops, lr 4e-4 (equal pixels)",
            SALIENCY),
    "kd10_cos": ("kd10 + cos", ["kd_weight=10", "stages.0.schedule=cosine",
                                "stages.0.lr=2.0e-3", "stages.0.warmup_steps=50"]),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "configs/lite0_cpu_rates.yaml"))
    p.add_argument("--init", default=f"{GEN1}fs-lite0-l4.safetensors",
                   help="start of every arm (a file, or git:<commit>:<path>)")
    p.add_argument("--lmbda", default="4")
    p.add_argument("--arms", default="base,kd10,kd30,norm,cos,pool")
    p.add_argument("--steps", type=int, default=500, help="training steps per arm (even)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--val-limit", type=int, default=400, help="first N dev images (validation)")
    p.add_argument("--error-images", type=int, default=150,
                   help="images per set for the train-pool vs dev feature error")
    p.add_argument("--out", type=Path, default=REPO / "runs/ablation")
    p.add_argument("--report-only", action="store_true")
    return p.parse_args()


def train_command(args: argparse.Namespace, arm: str) -> list[str]:
    _, sets = ARMS[arm]
    base = [f"init_codec={args.init}", f"lmbda=[{args.lmbda}]", f"model_id=abl-{arm}-l{{lmbda}}",
            "data.val=null", "threads=1", "stages.0.epochs=2",  # two epochs as the rates recipe
            f"stages.0.steps_per_epoch={args.steps // 2}"]
    cmd = [sys.executable, "-m", "frankensplit", "train", "--config", args.config,
           "--out", str(args.out / arm), "--no-progress"]
    for item in [*base, *sets]:
        cmd += ["--set", item]
    return cmd


def train_arms(args: argparse.Namespace, arms: list[str]) -> dict[str, float]:
    """Train the arms ``--jobs`` at a time; returns each arm's wall time in minutes."""
    pending, running, walls = list(arms), {}, {}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    while pending or running:
        while pending and len(running) < args.jobs:
            arm = pending.pop(0)
            if weights(args, arm).is_file():
                print(f"{arm}: already trained", flush=True)
                continue
            (args.out / arm).mkdir(parents=True, exist_ok=True)
            log = open(args.out / arm / "train.log", "w")  # noqa: SIM115 (closed with the process)
            running[arm] = (subprocess.Popen(train_command(args, arm), stdout=log,
                                             stderr=subprocess.STDOUT, env=env, cwd=REPO),
                           time.time(), log)
        for arm, (proc, t0, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                walls[arm] = (time.time() - t0) / 60
                print(f"{arm}: exit {proc.returncode} after {walls[arm]:.1f} min", flush=True)
                if proc.returncode:
                    raise SystemExit(f"{arm} failed: see {args.out / arm / 'train.log'}")
                del running[arm]
        time.sleep(2)
    return walls


def arm_lmbda(args: argparse.Namespace, arm: str) -> str:
    """The arm's lambda as in its folder name: its own ``lmbda=[x]`` or the common one."""
    own = [v for v in ARMS[arm][1] if v.startswith("lmbda=")]
    return f"{float(own[-1].split('[')[1].rstrip(']')):g}" if own else args.lmbda


def weights(args: argparse.Namespace, arm: str) -> Path:
    return args.out / arm / f"lmbda-{arm_lmbda(args, arm)}" / "last.safetensors"


def evaluate(args: argparse.Namespace, arms: list[str]) -> dict[str, dict]:
    """One eval run over every arm: rows by arm."""
    out = args.out / "eval"
    models = ",".join(str(weights(args, a)) for a in arms)
    cmd = [sys.executable, "-m", "frankensplit", "eval", "--model", models, "--data", str(DEV),
           "--codecs", "none", "--limit", str(args.val_limit), "--out", str(out), "--threads", "2",
           "--no-progress", "--resume"]
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    rows = json.loads((out / "results.json").read_text())["rows"]
    by_id = {r["setting"]: r for r in rows}
    return {a: by_id[f"abl-{a}-l{arm_lmbda(args, a)}"] for a in arms}


def feature_error(path: Path, folder: Path, n: int) -> float:
    """sum (h_hat - h)^2 / sum h^2 over ``n`` evenly spaced images of ``folder`` (eval view)."""
    import torch

    from frankensplit.data import ImageDataset, make_transform
    from frankensplit.models.zoo import load_model_file

    model = load_model_file(path).eval()
    ds = ImageDataset([str(folder)], make_transform(model.data_config, "eval"))
    idx = torch.linspace(0, len(ds) - 1, n).round().long().unique()
    num = den = 0.0
    with torch.inference_mode():
        for i in range(0, len(idx), 16):
            x = torch.stack([ds[int(j)][0] for j in idx[i:i + 16]])
            h, h_hat = model.teacher.head(x), model(x)["h_hat"]
            num += float((h_hat - h).pow(2).sum())
            den += float(h.pow(2).sum())
    return num / den


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; known: {sorted(ARMS)}")
    walls = {} if args.report_only else train_arms(args, arms)
    rows = evaluate(args, arms)
    import torch

    torch.set_num_threads(1)  # beside other jobs, one thread (two OpenMP threads stall on 2 cores)
    lines = [(f"Recipe ablation: lambda {args.lmbda}, {args.steps} steps of 16 x 128^2 patches per "
             f"arm from `{Path(args.init).name}`, base `{Path(args.config).name}`; first "
             f"{args.val_limit} dev images, real bytes, batch 1 (teacher "
             f"{next(iter(rows.values()))['teacher_top1']:.2f}%). Feature error = sum (h_hat - h)^2"
             f" / sum h^2 on {args.error_images} images of each set."), "",
             ("| arm | what | lambda | top-1 | KB | bpp actual | feature error train pool | dev "
             "| wall min |"), "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    cache_path = args.out / "feature_error.json"  # keyed by weights file and image count
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    for arm in arms:
        r = rows[arm]
        key = f"{weights(args, arm)}:{args.error_images}"
        if key not in cache:
            cache[key] = [feature_error(weights(args, arm), SHARED / "train", args.error_images),
                          feature_error(weights(args, arm), DEV, args.error_images)]
            cache_path.write_text(json.dumps(cache, indent=1))
        e_train, e_dev = cache[key]
        wall = f"{walls[arm]:.1f}" if arm in walls else "-"
        lines.append(f"| {arm} | {ARMS[arm][0]} | {arm_lmbda(args, arm)} | {r['top1']:.2f} | "
                     f"{r['kb']:.2f} | "
                     f"{r['bpp_actual']:.3f} | {e_train:.3f} | {e_dev:.3f} | {wall} |")
    text = "\n".join(lines)
    (args.out / "ablation.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

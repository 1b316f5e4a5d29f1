"""Where a split model loses accuracy: feature error at the split, with and without quantisation.

For each model (zoo id or codec file), on the first ``--images`` dev images (timm eval transform):

- relative feature error ``sum (h_hat - h)^2 / sum h^2`` at the split, in eval mode (quantised
  latent, what a packet carries) and with the unquantised latent ``y`` fed to g_s (what the decoder
  could do with a perfect channel): their gap is the cost of quantisation, the second alone the
  capacity (or training) of the encoder-decoder pair;
- the same error per channel of h (the worst channels, against their share of h's energy);
- top-1 through the codec (labels) and agreement with the teacher's top-1, for the quantised and
  the unquantised latent;
- the teacher's top-1 when its own features get Gaussian noise of the codec's relative error:
  how much accuracy an error of that size costs by itself.

    python benchmarks/split_diagnosis.py --models es-lite0-wide-l4-s2,fs-lite0-l4 --images 150

Not a unit test; prints what it measured.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared/data/eval/ilsvrc2012_val_dev"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="es-lite0-wide-l4-s2,fs-lite0-l4")
    p.add_argument("--images", type=int, default=150)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=Path, default=DEV)
    return p.parse_args()


def diagnose(model_ref: str, files: list, labels: list[int]) -> dict:
    import torch

    from frankensplit.data import load_image, make_transform
    from frankensplit.models.zoo import create_model, load_model_file

    is_file = Path(model_ref).suffix == ".safetensors"
    model = (load_model_file(model_ref) if is_file else create_model(model_ref)).eval()
    transform = make_transform(model.data_config, "eval")
    err_q = err_y = energy = 0.0
    per_channel_q = per_channel_h = None
    counts = dict.fromkeys(("top1_q", "top1_y", "agree_q", "agree_y", "teacher", "noisy"), 0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for start in range(0, len(files), 16):
            x = torch.stack([transform(load_image(p)) for p in files[start:start + 16]])
            label = torch.tensor(labels[start:start + 16])
            h = model.teacher.head(x)
            y = model.g_a(x)
            y_hat, _ = model.entropy_forward(y, None if model.rates is None else 0)
            h_q, h_y = model.g_s(y_hat), model.g_s(y)
            channel_axis = 1 if model.teacher.spec.layout == "NCHW" else -1
            dims = [d for d in range(h.ndim) if d != channel_axis % h.ndim]
            err_q += float((h_q - h).pow(2).sum())
            err_y += float((h_y - h).pow(2).sum())
            energy += float(h.pow(2).sum())
            pc_q, pc_h = (h_q - h).pow(2).sum(dims), h.pow(2).sum(dims)
            per_channel_q = pc_q if per_channel_q is None else per_channel_q + pc_q
            per_channel_h = pc_h if per_channel_h is None else per_channel_h + pc_h
            teacher = model.teacher.tail(h).argmax(1)
            pred_q, pred_y = model.classify(h_q).argmax(1), model.classify(h_y).argmax(1)
            rel = (err_q / energy) ** 0.5  # noise of the codec's relative error so far
            noise = torch.randn(h.shape, generator=gen) * h.pow(2).mean().sqrt() * rel
            noisy = model.teacher.tail(h + noise).argmax(1)
            counts["top1_q"] += int((pred_q == label).sum())
            counts["top1_y"] += int((pred_y == label).sum())
            counts["agree_q"] += int((pred_q == teacher).sum())
            counts["agree_y"] += int((pred_y == teacher).sum())
            counts["teacher"] += int((teacher == label).sum())
            counts["noisy"] += int((noisy == label).sum())
    n = len(files)
    share = per_channel_q / per_channel_q.sum()
    worst = share.argsort(descending=True)[:3].tolist()
    return {
        "model": model.model_id, "split": f"{model.teacher.spec.reduction}x "
        f"{tuple(model.teacher.spec.feature_shape)}",
        "rel_error_quantised": err_q / energy, "rel_error_unquantised": err_y / energy,
        **{k: 100.0 * v / n for k, v in counts.items()},
        "worst_channels": [(c, float(share[c]), float(per_channel_h[c] / per_channel_h.sum()))
                           for c in worst],
    }


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from frankensplit.eval.pipeline import load_dataset
    from frankensplit.threads import torch_threads

    files, labels = load_dataset(args.data, args.images)
    print(f"{len(files)} images of {args.data.name}; errors are sum (h_hat - h)^2 / sum h^2")
    print("| model | split | rel. error q / y | top-1 q / y | agreement q / y | teacher | "
          "teacher + noise of that error | worst channels (share of error / of energy) |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    with torch_threads(args.threads):
        for ref in args.models.split(","):
            d = diagnose(ref.strip(), files, labels)
            worst = ", ".join(f"{c}: {e:.2f}/{h:.2f}" for c, e, h in d["worst_channels"])
            print(f"| {d['model']} | {d['split']} | {d['rel_error_quantised']:.3f} / "
                  f"{d['rel_error_unquantised']:.3f} | {d['top1_q']:.1f} / {d['top1_y']:.1f} | "
                  f"{d['agree_q']:.1f} / {d['agree_y']:.1f} | {d['teacher']:.1f} | "
                  f"{d['noisy']:.1f} | {worst} |", flush=True)


if __name__ == "__main__":
    main()

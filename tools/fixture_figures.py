"""Measure every trained zoo model on the 16 fixture photos and record the figures in index.json.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/fixture_figures.py [MODEL_ID ...] [--check] [--noise]

For each trained entry of ``frankensplit/zoo/index.json`` (or only the ids given) the shipped
model codes the labelled photos of ``../shared/data/fixtures/tiny16`` through its real path
(``edge.encode`` -> packets -> ``server.decode``) and these figures go into the entry's
``metrics`` (the other metrics are kept):

- ``fixture16_top1``: top-1 (%) against the labels;
- ``fixture16_teacher_agreement``: top-1 agreement (%) with the uncompressed teacher;
- ``fixture16_nll``: mean negative log-likelihood of the labels (nats), a continuous figure that
  moves with any change of the decoded features, even one that flips no top-1;
- ``fixture16_bytes_per_image``: mean real packet bytes (header and CRC included), and
  ``fixture16_bpp_actual``: the same in bits per pixel of the crop;
- ``fixture16_sha256``: the weights file they were measured on (and ``fixture16_command``).

A variable-rate model has each figure once per rate, named as the rate's setting is
(``fixture16_top1@<lambda>``).

``tests/test_zoo_figures.py`` measures them again on every test run and compares. Run this after
shipping or retraining a model (``tools/ship_model.py`` replaces an entry, figures included),
and commit the index it writes. ``--check`` only prints the measured figures beside the recorded
ones; ``--noise`` also measures at 1 and 2 threads and with batch 1 and prints the spread (the
test's tolerances come from it). Not a library module: a maintainer's tool.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
INDEX = REPO / "frankensplit" / "zoo" / "index.json"
FIXTURES = REPO.parent / "shared" / "data" / "fixtures" / "tiny16"
PREFIX = "fixture16_"


def measure(model: Any, folder: Path = FIXTURES, batch: int = 16) -> dict[str, float]:
    """The fixture figures of one model (see the module docstring), coded ``batch`` at a time.

    A variable-rate model is measured at every rate, each figure's key suffixed as the rate's
    setting is (``top1@<lambda>``, `rate_setting`); g_a and the teacher run once for all rates
    (`EdgePart.pack` codes one latent at each), as ``encode`` would at each rate."""
    import torch

    from frankensplit.data import load_image, make_transform
    from frankensplit.eval import load_dataset

    files, labels = load_dataset(folder)
    if min(labels) < 0:
        raise ValueError(f"{folder} has unlabelled images: the figures need labels")
    transform = make_transform(model.data_config, "eval")
    x = torch.stack([transform(load_image(path)) for path in files])  # (16, 3, 224, 224)
    rates = model.rates or (None,)
    packets: dict[float | None, list[bytes]] = {v: [] for v in rates}
    logits: dict[float | None, list[torch.Tensor]] = {v: [] for v in rates}
    with torch.no_grad():
        for i in range(0, len(files), batch):
            y = model.edge.g_a(x[i : i + batch])  # (b, C, h, w)
            for index, lmbda in enumerate(rates):
                chunk = model.edge.pack(y, None if lmbda is None else index)
                packets[lmbda] += chunk
                logits[lmbda].append(model.server.decode(chunk))
        teacher = model.teacher(x).argmax(1)  # (16,)
    out = {}
    for lmbda in rates:
        at = "" if lmbda is None else f"@{lmbda:g}"
        figures = _figures(torch.cat(logits[lmbda]), torch.tensor(labels), teacher,
                           packets[lmbda], x.shape[2] * x.shape[3])
        out.update({k + at: v for k, v in figures.items()})
    return out


def _figures(logits: Any, target: Any, teacher: Any, packets: list[bytes],
             pixels: int) -> dict[str, float]:
    """The figures of one rate: ``logits`` (n, classes) decoded from ``packets``."""
    import torch

    n = len(packets)
    nll = torch.nn.functional.cross_entropy(logits.double(), target)
    top1 = logits.argmax(1)
    return {
        "top1": round(100.0 * float((top1 == target).sum()) / n, 2),
        "teacher_agreement": round(100.0 * float((top1 == teacher).sum()) / n, 2),
        "nll": round(float(nll), 5),
        "bytes_per_image": round(sum(map(len, packets)) / n, 4),
        "bpp_actual": round(8.0 * sum(map(len, packets)) / (n * pixels), 4),
    }


def trained_ids(index: dict[str, Any]) -> list[str]:
    """Ids of the index entries with shipped weights, in index order."""
    return [m["model_id"] for m in index["models"] if m.get("weights")]


def _noise(model: Any) -> dict[str, float]:
    """Largest difference of each figure over 1/2 threads and batch 1/16."""
    import torch

    threads = torch.get_num_threads()
    runs = []
    try:
        for n, batch in ((1, 16), (2, 16), (1, 1)):
            torch.set_num_threads(n)
            runs.append(measure(model, batch=batch))
    finally:
        torch.set_num_threads(threads)
    return {k: max(r[k] for r in runs) - min(r[k] for r in runs) for k in runs[0]}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", help="ids to measure (default: every trained entry)")
    p.add_argument("--check", action="store_true", help="print only, do not write index.json")
    p.add_argument("--noise", action="store_true", help="also print the spread over threads")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from frankensplit.files import file_sha256
    from frankensplit.models.zoo import ZOO_DIR, create_model

    index = json.loads(INDEX.read_text())
    known = trained_ids(index)
    todo = args.models or known
    if unknown := sorted(set(todo) - set(known)):
        raise SystemExit(f"not trained entries of {INDEX}: {unknown}")
    for entry in index["models"]:
        if entry["model_id"] not in todo:
            continue
        model = create_model(entry["model_id"])
        figures = measure(model)
        old = {k: entry["metrics"].get(PREFIX + k) for k in figures}
        print(f"{entry['model_id']}: " + ", ".join(
            f"{k} {v:g}" + ("" if old[k] is None or math.isclose(old[k], v) else f" (was {old[k]:g})")
            for k, v in figures.items()))
        if args.noise:
            print("  spread over 1/2 threads and batch 1/16:", _noise(model))
        entry["metrics"].update({PREFIX + k: v for k, v in figures.items()})
        entry["metrics"][PREFIX + "sha256"] = file_sha256(ZOO_DIR / entry["weights"])
        entry["metrics"][PREFIX + "command"] = "python tools/fixture_figures.py"
    if not args.check:
        INDEX.write_text(json.dumps(index, indent=2) + "\n")
        print(f"wrote {INDEX}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

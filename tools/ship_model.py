"""Ship a trained codec: copy its weights into the package and record it in the zoo index.

A split model (FrankenSplit or Entropic Student, written by ``frankensplit train``) goes to
``frankensplit/zoo/<model_id>.safetensors`` with an ``index.json`` entry: its `Architecture` (read
from the file's metadata, so the entry rebuilds exactly what was trained), lambda, sha256, the
command that produced it with the sha256 of each file it starts from (``parent_sha256``: hashed
before the copy, since a parent may be the very file being replaced), and the training run's
validation figures. Shipping over a file that an entry's command names by its plain path as a
parent is refused: that command would start from other weights; name it ``git:<commit>:<path>``. A Balle 2018 image codec goes
to ``frankensplit/zoo/bmshj2018/`` (the default source of the ``bmshj2018-factorized`` codec).

With ``--results`` (the ``results.json`` of ``frankensplit eval`` / ``benchmarks/results.py``), the
entry also records the model's dev-set figures, and its description quotes them. Rerunning replaces
an entry of the same id. Then run ``tools/fixture_figures.py``: ``tests/test_zoo_figures.py`` holds
every shipped model to the fixture figures recorded for its weights. Not a library module: a
maintainer's tool.

    python tools/ship_model.py runs/es_lite0_cpu/lmbda-0.25/best.safetensors \\
        --config "configs/es_lite0_cpu.yaml" [--results results/readme_eval/results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "frankensplit" / "zoo"


def _train_metrics(run_dir: Path) -> dict[str, Any]:
    """Validation figures of the best checkpoint and the steps of the run (summary.json, and the
    stages' batch sizes from the run folder's config.json)."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())
    best = summary.get("best", {})
    config = run_dir.parent / "config.json"
    batch = ({s["name"]: s["batch_size"] for s in json.loads(config.read_text())["stages"]}
             if config.is_file() else {})
    n = int(best.get("images") or 256)  # validation images (older runs: the first 256 dev images)
    out = {f"val_top1_{n}": best.get("top1"), f"val_teacher_top1_{n}": best.get("teacher_top1"),
           "val_bpp_estimated": best.get("bpp_estimated")}
    if batch:
        out["train_steps_this_run"] = sum(h["images"] // batch[h["stage"]]
                                          for h in summary.get("history", []))
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items() if v is not None}


def _dev_metrics(results: Path, model_id: str) -> dict[str, Any]:
    """The model's row in an eval's results.json, as ``dev<N>_*`` figures."""
    data = json.loads(results.read_text())
    row = next((r for r in data["rows"] if r["setting"] == model_id), None)
    if row is None:
        raise SystemExit(f"{results} has no row for {model_id}")
    n = row["images"]
    return {f"dev{n}_top1": round(row["top1"], 2), f"dev{n}_top5": round(row["top5"], 2),
            f"dev{n}_teacher_top1": round(row["teacher_top1"], 2),
            f"dev{n}_bytes_per_image": round(row["bytes"]),
            f"dev{n}_bpp_actual": round(row["bpp_actual"], 3),
            f"dev{n}_bpp_estimated": round(row["bpp_estimated"], 3),
            "command": "python benchmarks/results.py"}


def _describe(label: str, lmbda: float, metrics: dict[str, Any]) -> str:
    dev = {k.split("_", 1)[1]: v for k, v in metrics.items() if k.startswith("dev")}
    if dev:
        return (f"{label}, lambda {lmbda:g}, CPU-scale: {dev['top1']:.2f}% top-1 (teacher "
                f"{dev['teacher_top1']:.2f}%) at {dev['bytes_per_image'] / 1000:.2f} KB = "
                f"{dev['bpp_actual']:.3f} bpp on the dev set")
    val = next(((k, v) for k, v in metrics.items() if k.startswith("val_top1_")), ("_0", math.nan))
    return f"{label}, lambda {lmbda:g}, CPU-scale: {val[1]:.2f}% top-1 on " \
           f"{val[0].rsplit('_', 1)[1]} dev images at training time"


def _parent_sha256(model_id: str, config: str, dest: Path, index: dict[str, Any]) -> dict[str, str]:
    """sha256 of each file ``config`` starts from; refuses when ``dest`` is one an entry's
    command (the new one's or another's) names by plain path: replacing it changes that start."""
    from frankensplit.sources import git_ref, source_sha256
    from frankensplit.train.parents import command_parents

    commands = {m["model_id"]: m["config"] for m in index["models"] if m.get("config")}
    commands[model_id] = config
    for other, command in commands.items():
        for key, source in command_parents(command, REPO).items():
            if git_ref(source) is None and (REPO / source).resolve() == dest.resolve():
                raise SystemExit(f"{other}'s command starts from {source} ({key}), which shipping "
                                 f"{model_id} replaces: name it git:<commit>:<path> first")
    return {key: source_sha256(source, REPO)
            for key, source in command_parents(config, REPO).items()}


def ship(src: Path, config: str, results: Path | None) -> Path:
    """Copy ``src`` into the zoo and (split models) write its index entry; returns the new path."""
    sys.path.insert(0, str(REPO))
    from frankensplit.files import file_sha256
    from frankensplit.models.architecture import Architecture
    from frankensplit.models.codec_file import codec_metadata
    from frankensplit.models.zoo_index import ModelEntry, entry_dict

    meta = codec_metadata(src)
    kind = json.loads(meta.get("architecture", "{}")).get("kind")
    model_id, lmbda = meta["model_id"], float(meta["lmbda"])
    if kind == "image_codec":
        dest = ZOO / "bmshj2018" / f"{model_id}.safetensors"
        dest.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dest)
        return dest
    if kind != "split":
        raise SystemExit(f"{src}: no architecture metadata (written by an old frankensplit train)")
    arch = Architecture.from_json(meta["architecture"], str(src))
    dest = ZOO / f"{model_id}.safetensors"
    index_path = ZOO / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"models": []}
    parents = _parent_sha256(model_id, config, dest, index)
    shutil.copyfile(src, dest)
    metrics = _train_metrics(src.parent)
    if results is not None:
        metrics.update(_dev_metrics(results, model_id))
    backbone = arch.teacher.removeprefix("tf_efficientnet_")
    label = ("Entropic Student" if arch.method == "entropic_student"
             else f"{arch.reuses}'s encoder reused for {backbone}" if arch.reuses else backbone)
    entry = entry_dict(ModelEntry(model_id, arch, dest.name, sha256=file_sha256(dest), lmbda=lmbda,
                                  config=config, parent_sha256=parents,
                                  description=_describe(label, lmbda, metrics), metrics=metrics))
    models = [m for m in index["models"] if m["model_id"] != model_id] + [entry]
    index["models"] = models
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("codec", type=Path, help="a codec file written by frankensplit train")
    p.add_argument("--config", required=True,
                   help="the command line's config part that produced it, recorded in the index "
                        "(run from the repository: its paths are relative to it)")
    p.add_argument("--results", type=Path, default=None,
                   help="results.json of an eval that includes this model (dev-set figures)")
    args = p.parse_args(argv)
    print(f"shipped {ship(args.codec, args.config, args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ship a trained codec: copy its weights into the package and record it in the zoo index.

A split model (FrankenSplit or Entropic Student, written by ``frankensplit train``) goes to
``frankensplit/zoo/<model_id>.safetensors`` with an ``index.json`` entry: its `Architecture` (read
from the file's metadata, so the entry rebuilds exactly what was trained), lambda, sha256, the
command that produced it with the sha256 of each file it starts from (``parent_sha256``: hashed
before the copy, since a parent may be the very file being replaced), and the training run's
validation figures. Shipping over a file that an entry's command names by its plain path as a
parent is refused: that command would start from other weights; name it ``git:<commit>:<path>``.
A Balle 2018 image codec goes to ``frankensplit/zoo/bmshj2018/`` (the default source of the
``bmshj2018-factorized`` codec).

A model with a tail of its own (Entropic Student's second stage, ``architecture.tail: trained``)
is re-saved, not copied: loaded with its teacher's weights (``--teacher-weights``, default auto:
the weights the model is served with) and written by ``save_codec`` with the tail in float16
(``--tail-dtype``) and without the tail tensors equal to the teacher's (``omit_teacher_tail``: the
batch-norm statistics, and a module the run froze such as lite0's classifier, ``tail.8``; see
``save_codec`` for why both are safe). Its g_a, entropy model (CDF tables) and g_s are bit for bit
the trained file's, and every tensor left out equals the teacher's, checked; the file then loads
only with those teacher weights (a digest of the tensors left out is recorded and checked). Every
other model is copied byte for byte. A split model's zoo file above ``MAX_BYTES`` (10 MB) is
refused before anything is written: the package carries every shipped file. The index's sha256
is the written file's. The tool prints the file's size and, for an own tail, how many of its
tensors and values are left to the teacher.

Training steps (``metrics``, see `frankensplit.models.zoo_index.ModelEntry`) come from the run
folder's ``summary.json``: ``train_steps_this_run`` from its history (each epoch's images over its
stage's batch size), ``train_steps_to_checkpoint`` where the shipped file is a best checkpoint
from before the run's end (``best``'s stage and epoch), and ``train_steps_total``, which adds the
parents' steps: 0 from scratch, the ``train_steps_total`` of the index entry whose sha256 is the
``init_codec`` parent's, or ``--parent-steps N`` for a parent the index no longer holds (an older
version; required then), plus ``--g-s-steps N`` (required) for an ``init_g_s`` decoder's own
training.

With ``--results`` (the ``results.json`` of ``frankensplit eval`` / ``benchmarks/results.py``), the
entry also records the model's dev-set figures, and its description quotes them. A variable-rate
model's ``--default-rate I`` records the rate index its edge codes at when none is named
(`ModelEntry.default_rate`). Rerunning replaces an entry of the same id; a default rate the
replaced entry records is kept where its rates are the same and none is given. Then run ``tools/fixture_figures.py``: ``tests/test_zoo_figures.py`` holds
every shipped model to the fixture figures recorded for its weights. Not a library module: a
maintainer's tool.

    python tools/ship_model.py runs/es_fair/lmbda-4/best.safetensors \\
        --config "configs/es_lite0_fair.yaml" [--results results/readme_eval/results.json] \\
        [--parent-steps N] [--g-s-steps N] [--default-rate I]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "frankensplit" / "zoo"
#: Largest split-model file the zoo takes (10 MB, decimal as the docs count).
MAX_BYTES = 10_000_000


def _summary(run_dir: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The run's ``summary.json`` and each stage's batch size (from the summary's config, or
    for older runs the run folder's ``config.json``)."""
    path = run_dir / "summary.json"
    if not path.is_file():
        raise SystemExit(f"{run_dir} has no summary.json: cannot count the steps in its "
                         "weights (ship a best or last.safetensors of a frankensplit train run)")
    summary = json.loads(path.read_text())
    config = run_dir.parent / "config.json"
    stages = (summary.get("config") or {}).get("stages") or (
        json.loads(config.read_text())["stages"] if config.is_file() else [])
    batch: dict[str, int] = {}
    for stage in stages:
        if batch.setdefault(stage["name"], stage["batch_size"]) != stage["batch_size"]:
            raise SystemExit(f"{run_dir}: two stages named {stage['name']!r} with different "
                             "batch sizes: cannot tell their steps apart")
    return summary, batch


def _run_steps(src: Path, summary: dict[str, Any], batch: dict[str, int]) -> tuple[int, int]:
    """(steps of the whole run, steps in ``src``): the second is smaller where ``src`` is the
    best-validation checkpoint of an epoch before the run's end (``best``'s stage and epoch)."""
    from frankensplit.files import file_sha256

    history = summary.get("history") or []
    missing = {h["stage"] for h in history} - batch.keys()
    if not history or missing:
        raise SystemExit(f"{src.parent}: no history in summary.json or no batch size for stages "
                         f"{sorted(missing)}: cannot count the run's steps")
    steps = [h["images"] // batch[h["stage"]] for h in history]  # one record per epoch
    last, best = src.parent / "last.safetensors", summary.get("best", {})
    digest = file_sha256(src)
    if (last.is_file() and file_sha256(last) == digest) or "stage" not in best:
        return sum(steps), sum(steps)  # the last weights (no validation picked a checkpoint)
    best_file = src.parent / "best.safetensors"
    if not best_file.is_file() or file_sha256(best_file) != digest:
        raise SystemExit(f"{src} is neither its run's best.safetensors nor last.safetensors: "
                         "cannot tell which step its weights are from")
    val = {k: v for k, v in best.items() if k not in ("score", "stage", "epoch")}
    at = next((i for i, h in enumerate(history) if (h["stage"], h.get("epoch"), h.get("val"))
               == (best["stage"], best["epoch"], val)), None)
    if at is None:
        raise SystemExit(f"{src.parent}: summary.json's best ({best['stage']} epoch "
                         f"{best['epoch']}) is no epoch of its history")
    return sum(steps), sum(steps[:at + 1])


def _lineage_steps(parents: dict[str, str], index: dict[str, Any], parent_steps: int | None,
                   g_s_steps: int | None) -> int:
    """Steps in the weights a run starts from: 0 from scratch, else the ``init_codec`` parent's
    ``train_steps_total`` (the index entry of the same sha256, or ``parent_steps`` for a version
    the index no longer holds), plus ``g_s_steps`` for an ``init_g_s`` decoder."""
    if "init_codec" not in parents and parent_steps is not None:
        raise SystemExit("--parent-steps: this command has no init_codec parent (from scratch)")
    if "init_g_s" not in parents and g_s_steps is not None:
        raise SystemExit("--g-s-steps: this command has no init_g_s decoder")
    total = 0
    if "init_codec" in parents:
        digest = parents["init_codec"]
        recorded = next((m["metrics"]["train_steps_total"] for m in index["models"]
                         if m.get("sha256") == digest
                         and "train_steps_total" in m.get("metrics", {})), None)
        if recorded is None and parent_steps is None:
            raise SystemExit(f"the init_codec parent (sha256 {digest[:12]}...) is no entry of the "
                             "zoo index (an older version?): pass --parent-steps N, the steps in "
                             "its weights over its whole lineage (its train_steps_total)")
        if None not in (recorded, parent_steps) and recorded != parent_steps:
            raise SystemExit(f"--parent-steps {parent_steps}: the zoo index records "
                             f"{recorded} for the init_codec parent (sha256 {digest[:12]}...)")
        total = recorded if recorded is not None else parent_steps
    if "init_g_s" in parents:
        if g_s_steps is None:
            raise SystemExit("the command starts its decoder from an init_g_s file: pass "
                             "--g-s-steps N, the steps that trained that decoder beyond the "
                             "init_codec parent's lineage (docs/training.md, the shipped zoo)")
        total += g_s_steps
    return total


def _train_metrics(src: Path, parents: dict[str, str], index: dict[str, Any],
                   parent_steps: int | None = None, g_s_steps: int | None = None,
                   rates: tuple[float, ...] | None = None) -> dict[str, Any]:
    """Validation figures of the best checkpoint (summary.json) and the training steps:
    ``train_steps_this_run``, ``train_steps_to_checkpoint`` (where ``src`` came before the
    run's end) and ``train_steps_total`` (the parents' lineage included; see `_lineage_steps`).
    A variable-rate model (``rates``) adds each rate's validation top-1 and estimated bpp
    (``val_top1_<N>@<lambda>``); its ``val_top1_<N>`` is their mean, the score that chose it."""
    summary, batch = _summary(src.parent)
    run, here = _run_steps(src, summary, batch)
    best = summary.get("best", {})
    n = int(best.get("images") or 256)  # validation images (older runs: the first 256 dev images)
    out = {f"val_top1_{n}": best.get("top1"), f"val_teacher_top1_{n}": best.get("teacher_top1"),
           "val_bpp_estimated": best.get("bpp_estimated"), "train_steps_this_run": run,
           "train_steps_to_checkpoint": here if here < run else None,
           "train_steps_total": _lineage_steps(parents, index, parent_steps, g_s_steps) + here}
    per_rate = {r["lmbda"]: r for r in best.get("rates") or []}
    for lmbda in rates or ():
        if lmbda not in per_rate:
            raise SystemExit(f"{src.parent}: summary.json's best has no validation of lambda "
                             f"{lmbda:g}, a rate of the model")
        out[f"val_top1_{n}@{lmbda:g}"] = per_rate[lmbda]["top1"]
        out[f"val_bpp_estimated@{lmbda:g}"] = per_rate[lmbda]["bpp_estimated"]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items() if v is not None}


def _dev_metrics(results: Path, model_id: str,
                 rates: tuple[float, ...] | None = None) -> dict[str, Any]:
    """The model's row in an eval's results.json, as ``dev<N>_*`` figures; for a variable-rate
    model (``rates``) every rate's row, each key suffixed as its setting is
    (``dev<N>_top1@<lambda>``, `rate_setting`)."""
    from frankensplit.models.zoo_index import rate_setting

    data = json.loads(results.read_text())
    out: dict[str, Any] = {}
    for lmbda in rates or (None,):
        setting = rate_setting(model_id, lmbda)
        row = next((r for r in data["rows"] if r["setting"] == setting), None)
        if row is None:
            raise SystemExit(f"{results} has no row for {setting}")
        n, at = row["images"], "" if lmbda is None else f"@{lmbda:g}"
        out.update({f"dev{n}_top1{at}": round(row["top1"], 2),
                    f"dev{n}_top5{at}": round(row["top5"], 2),
                    f"dev{n}_teacher_top1": round(row["teacher_top1"], 2),
                    f"dev{n}_bytes_per_image{at}": round(row["bytes"]),
                    f"dev{n}_bpp_actual{at}": round(row["bpp_actual"], 3),
                    f"dev{n}_bpp_estimated{at}": round(row["bpp_estimated"], 3)})
    return {**out, "command": "python benchmarks/results.py"}


def _describe(label: str, lmbda: float | None, metrics: dict[str, Any],
              rates: tuple[float, ...] | None = None) -> str:
    """One line for ``frankensplit models``: the dev-set figures where recorded (a variable-rate
    model: its lowest and highest rate), else the validation ones."""
    if rates is not None:
        low, high = (recorded_dev(metrics, f"@{v:g}") for v in (rates[0], rates[-1]))
        what = f"{label}, variable rate ({len(rates)} rates, lambda {rates[0]:g} to {rates[-1]:g})"
        if low and high:
            return (f"{what}, CPU-scale: {low['top1']:.2f}-{high['top1']:.2f}% top-1 (teacher "
                    f"{low['teacher_top1']:.2f}%) at {low['bytes_per_image'] / 1000:.2f}-"
                    f"{high['bytes_per_image'] / 1000:.2f} KB on the dev set")
        val = next(((k, v) for k, v in metrics.items() if k.startswith("val_top1_")), ("_0", 0))
        return (f"{what}, CPU-scale: {val[1]:.2f}% mean top-1 over its rates on "
                f"{val[0].rsplit('_', 1)[1]} dev images at training time")
    dev = recorded_dev(metrics, "")
    if dev:
        return (f"{label}, lambda {lmbda:g}, CPU-scale: {dev['top1']:.2f}% top-1 (teacher "
                f"{dev['teacher_top1']:.2f}%) at {dev['bytes_per_image'] / 1000:.2f} KB = "
                f"{dev['bpp_actual']:.3f} bpp on the dev set")
    val = next(((k, v) for k, v in metrics.items() if k.startswith("val_top1_")), ("_0", math.nan))
    return f"{label}, lambda {lmbda:g}, CPU-scale: {val[1]:.2f}% top-1 on " \
           f"{val[0].rsplit('_', 1)[1]} dev images at training time"


def recorded_dev(metrics: dict[str, Any], at: str) -> dict[str, Any]:
    """The ``dev<N>_<figure><at>`` metrics as {figure: value} (``at``: ``""`` or ``@<lambda>``;
    the teacher's top-1 is recorded once, without it)."""
    out = {}
    for key, value in metrics.items():
        m = re.fullmatch(r"dev\d+_(\w+?)" + re.escape(at), key)
        if m and (at or "@" not in key):
            out[m.group(1)] = value
        elif re.fullmatch(r"dev\d+_teacher_top1", key):
            out["teacher_top1"] = value
    return out if "top1" in out else {}


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


def _check_size(path: Path, what: Path) -> None:
    """Refuse a zoo file above `MAX_BYTES` (``path``: the bytes to ship, ``what``: named)."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{what}: the zoo file would be {size / 1e6:.2f} MB, above the "
                         f"{MAX_BYTES / 1e6:g} MB a shipped model may take")


def _check_resaved(src: Path, new: Path, teacher_tail: dict[str, Any]) -> None:
    """Refuse a re-saved file whose tensors are not ``src``'s: the same names but those it leaves
    to the teacher, every tensor equal bit for bit (an own tail's floating ones after rounding to
    the dtype it is now stored in), and each one left to the teacher equal to ``teacher_tail``'s
    (the teacher's tail state) bit for bit."""
    import torch

    from frankensplit.files import read_safetensors
    from frankensplit.models.codec_file import tail_from_teacher

    old, (ours, meta) = read_safetensors(src)[0], read_safetensors(new)
    omitted = {f"tail.{name}": teacher_tail[name] for name in tail_from_teacher(meta, new) or []}
    if old.keys() != ours.keys() | omitted.keys() or ours.keys() & omitted.keys():
        raise SystemExit(f"{src}: re-saving changed its tensor names "
                         f"({sorted(old.keys() ^ (ours.keys() | omitted.keys()))[:3]}...)")
    for key, tensor in omitted.items():
        if tensor.dtype != old[key].dtype or not torch.equal(tensor, old[key]):
            raise SystemExit(f"{src}: re-saving left {key} to the teacher, whose tensor differs")
    for key, tensor in ours.items():
        want = old[key]
        if key.startswith("tail.") and want.is_floating_point():
            want = want.to(tensor.dtype)
        if tensor.dtype != want.dtype or not torch.equal(tensor, want):
            raise SystemExit(f"{src}: re-saving changed tensor {key}")


def _write_own_tail(src: Path, dest: Path, meta: dict[str, str], tail_dtype: str,
                    teacher_weights: str | None) -> None:
    """Write ``src``, a model with an own tail, to ``dest`` with its tail stored as
    ``tail_dtype`` and its tensors equal to the teacher's (of ``teacher_weights``; None: random)
    left out, through ``save_codec`` (checked by `_check_resaved` and `_check_size`; a refused
    file never reaches ``dest``)."""
    from frankensplit.models.codec_file import save_codec
    from frankensplit.models.zoo import load_model_file

    # The teacher's weights decide which tail tensors are its own: the ones it is served with.
    model = load_model_file(src, teacher_weights=teacher_weights)
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        save_codec(model, tmp, meta, tail_dtype=tail_dtype, update_tables=False,
                   omit_teacher_tail=True)
        _check_resaved(src, tmp, model.teacher.tail.state_dict())
        _check_size(tmp, src)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def ship(src: Path, config: str, results: Path | None, parent_steps: int | None = None,
         g_s_steps: int | None = None, tail_dtype: str = "float16",
         teacher_weights: str | None = "auto", default_rate: int | None = None) -> Path:
    """Copy ``src`` into the zoo (a model with an own tail: re-save it with that tail stored as
    ``tail_dtype``, leaving out its tensors equal to those of the teacher of ``teacher_weights``)
    and (split models) write its index entry; returns the new path.

    ``parent_steps``: the init_codec parent's ``train_steps_total`` where the index has no entry
    of its sha256; ``g_s_steps``: the steps that trained an ``init_g_s`` decoder (`_lineage_steps`);
    ``default_rate``: a variable-rate model's (None: the replaced entry's, for the same rates).
    """
    sys.path.insert(0, str(REPO))
    from frankensplit.files import file_sha256
    from frankensplit.models.architecture import Architecture
    from frankensplit.models.codec_file import codec_metadata
    from frankensplit.models.zoo_index import ModelEntry, entry_dict

    meta = codec_metadata(src)
    kind = json.loads(meta.get("architecture", "{}")).get("kind")
    model_id = meta["model_id"]
    lmbda = float(meta["lmbda"]) if "lmbda" in meta else None  # none: a variable-rate model
    if kind == "image_codec":
        dest = ZOO / "bmshj2018" / f"{model_id}.safetensors"
        dest.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dest)
        return dest
    if kind != "split":
        raise SystemExit(f"{src}: no architecture metadata (written by an old frankensplit train)")
    arch = Architecture.from_json(meta["architecture"], str(src))
    if (lmbda is None) != (arch.rates is not None):
        raise SystemExit(f"{src}: metadata names {'no' if lmbda is None else 'a'} lambda for a "
                         f"{'fixed' if arch.rates is None else 'variable'}-rate architecture")
    dest = ZOO / f"{model_id}.safetensors"
    index_path = ZOO / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"models": []}
    replaced = next((m for m in index["models"] if m["model_id"] == model_id), {})
    if default_rate is None and tuple(replaced.get("rates") or ()) == (arch.rates or ()):
        default_rate = replaced.get("default_rate")  # a re-ship keeps the entry's default
    try:  # before anything is written
        ModelEntry(model_id, arch, default_rate=default_rate)
    except ValueError as e:
        raise SystemExit(f"--default-rate: {e}") from None
    parents = _parent_sha256(model_id, config, dest, index)
    metrics = _train_metrics(src, parents, index, parent_steps, g_s_steps,
                             arch.rates)  # before the copy
    if arch.tail is None:
        _check_size(src, src)
        shutil.copyfile(src, dest)
    else:
        _write_own_tail(src, dest, meta, tail_dtype, teacher_weights)
    if results is not None:
        metrics.update(_dev_metrics(results, model_id, arch.rates))
    backbone = arch.teacher.removeprefix("tf_efficientnet_")
    label = ("Entropic Student" if arch.method == "entropic_student"
             else f"{arch.reuses}'s encoder reused for {backbone}" if arch.reuses else backbone)
    entry = entry_dict(ModelEntry(model_id, arch, dest.name, sha256=file_sha256(dest), lmbda=lmbda,
                                  config=config, parent_sha256=parents,
                                  description=_describe(label, lmbda, metrics, arch.rates),
                                  metrics=metrics, default_rate=default_rate))
    models = [m for m in index["models"] if m["model_id"] != model_id] + [entry]
    index["models"] = models
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return dest


def _steps(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: a number of steps, >= 0")
    return value


def _tail_note(src: Path, dest: Path) -> str:
    """For a shipped own tail: how many of its tensors and values are left to the teacher."""
    from frankensplit.files import read_safetensors
    from frankensplit.models.codec_file import codec_metadata, tail_from_teacher

    meta = codec_metadata(dest)
    listed = tail_from_teacher(meta, dest)
    if listed is None:
        return ""
    tail = read_safetensors(src, parts=("tail",))[0]  # the trained file: every tail tensor
    values = sum(tail[f"tail.{name}"].numel() for name in listed)
    total = sum(t.numel() for t in tail.values())
    return (f"; tail: {len(listed)} of {len(tail)} tensors ({values:,} of {total:,} values) "
            f"left to the teacher {meta['teacher']}, the rest stored in {meta['tail_dtype']}")


def main(argv: Sequence[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    from frankensplit.cli import non_negative_int, teacher_weights
    from frankensplit.models.codec_file import TAIL_DTYPES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("codec", type=Path, help="a codec file written by frankensplit train")
    p.add_argument("--config", required=True,
                   help="the command line's config part that produced it, recorded in the index "
                        "(run from the repository: its paths are relative to it)")
    p.add_argument("--results", type=Path, default=None,
                   help="results.json of an eval that includes this model (dev-set figures)")
    p.add_argument("--parent-steps", type=_steps, default=None,
                   help="train_steps_total of the init_codec parent, where it is no entry of the "
                        "zoo index (an older version); an indexed parent's is read from the index")
    p.add_argument("--g-s-steps", type=_steps, default=None,
                   help="with an init_g_s decoder: the steps that trained it beyond the "
                        "init_codec parent's lineage (added to train_steps_total)")
    p.add_argument("--tail-dtype", choices=sorted(TAIL_DTYPES), default="float16",
                   help="how a model with its own tail stores it (default: float16)")
    p.add_argument("--teacher-weights", default="auto", type=teacher_weights("random"),
                   help="a model with its own tail: the teacher weights it is served with, "
                        "whose tail tensors are left out of the file (auto, offline, online, "
                        "random or a checkpoint path; default auto)")
    p.add_argument("--default-rate", type=non_negative_int, default=None, metavar="I",
                   help="a variable-rate model's default rate index: what its edge codes at "
                        "when no rate is named (default: the replaced entry's, if its rates are "
                        "the same; else none)")
    args = p.parse_args(argv)
    weights = None if args.teacher_weights == "random" else args.teacher_weights
    dest = ship(args.codec, args.config, args.results, args.parent_steps, args.g_s_steps,
                args.tail_dtype, weights, args.default_rate)
    note = _tail_note(args.codec, dest)  # "" for a file without an own tail
    print(f"shipped {dest} ({dest.stat().st_size / 1e6:.2f} MB{note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

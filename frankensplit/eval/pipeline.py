"""One call for a whole evaluation: dataset -> record log -> rows -> result files.

``frankensplit eval``, ``frankensplit demo`` and ``benchmarks/results.py`` all go through
:func:`run_eval`, so they measure the same way and write the same files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from frankensplit.codecs.base import DEFAULT_CODECS
from frankensplit.eval.aggregate import aggregate, summarize
from frankensplit.eval.records import RecordLog, read_records
from frankensplit.eval.report import write_report
from frankensplit.eval.runner import evaluate
from frankensplit.eval.schema import split_rate_setting
from frankensplit.models.split import FrankenSplit

__all__ = ["RECORDS_FILE", "WEIGHTS_FILE", "EvalResult", "load_dataset", "run_eval"]

#: Name of the per-image record log inside the output folder.
RECORDS_FILE = "records.jsonl"
#: Beside it: model id -> fingerprint of the codec weights its records were measured with.
WEIGHTS_FILE = "weights.json"


@dataclass(frozen=True)
class EvalResult:
    """What an evaluation produced.

    Attributes:
        rows: one dict per operating point (:data:`~frankensplit.eval.schema.SCHEMA` columns).
        summary: per-teacher summary figures (:func:`~frankensplit.eval.aggregate.summarize`).
        meta: data, image count, models, codecs, environment.
        paths: written files by kind ("json", "csv", "plot", "markdown", "records").
    """

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    meta: dict[str, Any]
    paths: dict[str, Path]


def load_dataset(data: str | Path, limit: int | None = None) -> tuple[list[Path], list[int]]:
    """Files and labels (-1 when unknown) of a folder (with labels.csv, or wnid folders) or CSV.

    Raises:
        ValueError: no images, a bad labels file, or a non-positive limit.
    """
    from frankensplit.data import ImageDataset

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    dataset = ImageDataset(data, transform=lambda img: img, limit=limit)
    return list(dataset.files), list(dataset.labels)


def _meta(models: Sequence[FrankenSplit], data: str, n: int, labelled: bool,
          codecs: Mapping[str, Sequence[float] | None]) -> dict[str, Any]:
    from frankensplit import __version__
    from frankensplit.models.zoo import MODELS

    def trained(model_id: str) -> bool | None:
        return MODELS.get(model_id).trained if model_id in MODELS else None

    return {
        "data": data, "images": n, "reference": "label" if labelled else "teacher",
        "models": [{"model_id": m.model_id, "method": m.method, "teacher": m.teacher.name,
                    "trained": trained(m.model_id)} for m in models],
        "codecs": {c: None if q is None else [float(v) for v in q] for c, q in codecs.items()},
        "torch_threads": torch.get_num_threads(), "frankensplit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _forget(out: Path, model_ids: Sequence[str]) -> int:
    """Drop the records and the weights entry of ``model_ids`` from the log in ``out`` (a model
    retrained under its id and measured again, while every other row resumes); returns how many
    records went. The log is rewritten whole and replaced atomically."""
    from frankensplit.eval.records import read_records

    log, weights = out / RECORDS_FILE, out / WEIGHTS_FILE
    drop = set(model_ids)
    records = list(read_records(log))  # read once: the log of a full run is tens of MB
    # a variable-rate model's rows are "<id>@<lambda>" (`frankensplit.eval.schema.rate_setting`)
    kept = [r for r in records if split_rate_setting(r["setting"])[0] not in drop]
    if log.is_file():
        tmp = log.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(log)
    if weights.is_file():
        known = {k: v for k, v in json.loads(weights.read_text()).items() if k not in drop}
        _write_weights(weights, known)
    return len(records) - len(kept)


def _write_weights(path: Path, fingerprints: dict[str, str]) -> None:
    path.write_text(json.dumps(fingerprints, indent=2, sort_keys=True) + "\n")


def _check_weights(path: Path, models: Sequence[FrankenSplit], resume: bool) -> None:
    """Refuse to resume records of a model id whose weights changed since they were measured.

    Records are keyed by model id, so without this a model retrained and shipped under the same
    id would silently keep its old figures on ``resume``. A log written before this file existed
    has nothing to compare with and resumes unchecked.
    """
    from frankensplit.models.codec_file import codec_fingerprint

    now = {m.model_id: codec_fingerprint(m) for m in models}
    before = json.loads(path.read_text()) if resume and path.is_file() else {}
    changed = sorted(k for k, v in now.items() if before.get(k, v) != v)
    if changed:
        raise ValueError(
            f"{path.parent}: the records of {changed} were measured with other weights "
            "(retrained since?): evaluate into a new folder, start again without resume, or "
            "measure only them again (benchmarks/results.py --remeasure, run_eval(remeasure=))")
    _write_weights(path, {**before, **now})  # in the log's folder


def run_eval(
    models: Sequence[FrankenSplit],
    files: Sequence[str | Path],
    labels: Sequence[int],
    out: str | Path,
    codecs: Mapping[str, Sequence[float] | None] | None = None,
    *,
    data: str = "",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    margins: Sequence[float] = (1.0, 3.0),
    plot: bool = True,
    remeasure: Sequence[str] = (),
) -> EvalResult:
    """Measure, aggregate and write results.json/.csv, rate_accuracy.png and summary.md.

    Args:
        models: split models, FrankenSplit or Entropic Student (eval mode, CDF tables built).
        files: image files (see :func:`load_dataset`).
        labels: label per file, -1 when unknown (then accuracy is agreement with the teacher).
        out: output folder; the record log ``records.jsonl`` lives there too.
        codecs: codec name (or ``NAME:SOURCE``) -> qualities (None: its default sweep); default
            :data:`~frankensplit.codecs.DEFAULT_CODECS`
            at their default sweeps. An empty mapping compares FrankenSplit with the teacher only.
        data: description of the data source, written into the results.
        resume: continue the record log in ``out``, measuring only what it lacks.
        overwrite: discard an existing record log.
        progress: tqdm bar on stderr.
        margins: penalties (points) for the "bytes to stay within" figures.
        plot: draw rate_accuracy.png (matplotlib costs seconds; tests skip it).
        remeasure: model ids whose records ``resume`` drops and measures again (retrained
            under the same id); every other record resumes.

    Raises:
        ValueError: bad inputs, an existing log without ``resume``/``overwrite``, a log of
            another dataset, or (``resume``) records of a model whose weights changed since.
    """
    out = Path(out)
    codecs = {c: None for c in DEFAULT_CODECS} if codecs is None else dict(codecs)
    records_path = out / RECORDS_FILE
    if isinstance(remeasure, str):
        raise TypeError(f"remeasure takes a list of model ids, got the string {remeasure!r}")
    if remeasure and not resume:
        raise ValueError("remeasure drops records from a log that resume continues: set resume")
    unknown = sorted(set(remeasure) - {m.model_id for m in models})
    if unknown:  # their records would go and nothing would measure them again
        raise ValueError(f"remeasure {unknown}: not among the models evaluated")
    if remeasure:
        _forget(out, remeasure)
    with RecordLog(records_path, files, resume=resume, overwrite=overwrite) as log:
        _check_weights(out / WEIGHTS_FILE, models, resume)
        points = evaluate(models, files, labels, codecs, log, progress=progress)
    rows = aggregate(read_records(records_path), points, len(files))
    summary = summarize(rows, margins)
    labelled = all(int(label) >= 0 for label in labels)
    meta = _meta(models, data or f"{len(files)} files", len(files), labelled, codecs)
    paths = write_report(out, rows, summary, meta, plot=plot)
    return EvalResult(rows, summary, meta, {**paths, "records": records_path})

"""The per-image record log (JSONL) that makes an evaluation resumable, and reading results back.

Every finished (operating point, image) pair is one line, appended and flushed at once; the final
aggregation reads nothing but this file. An interrupted run therefore loses at most the image in
flight, and ``resume=True`` skips every pair already logged. A half-written last line (the process
was killed mid-write) is dropped when the log is reopened; a damaged line anywhere else is an error,
because silently skipping it would bias the averages. :func:`read_results` reads a finished
evaluation's ``results.json`` (``frankensplit simulate``, the benchmarks), or the dev-set results
the package ships (:mod:`frankensplit.eval.shipped`), converted to the same rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from frankensplit.eval.schema import (
    RECORD_FIELDS,
    RESULTS_VERSION,
    SCHEMA,
    TEACHER_METHOD,
    TEACHER_SETTING,
)

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

__all__ = ["SHIPPED", "Key", "RecordLog", "read_records", "read_results", "record_key"]

#: (teacher, method, setting, index): identifies one record.
Key = tuple[str, str, str, int]


def record_key(record: dict[str, Any]) -> Key:
    """The identity of a record."""
    return (record["teacher"], record["method"], record["setting"], int(record["index"]))


#: The name :func:`read_results` takes for the shipped dev-set results
#: (``frankensplit/zoo/results_dev.json``); a folder of that name is ``./shipped``.
SHIPPED = "shipped"

#: Row fields the readers of result rows rely on (:mod:`frankensplit.sim.matching`, benchmarks).
_ROW_NEEDS = ("teacher", "method", "setting", "quality", "images", "top1", "teacher_top1", "bytes")

#: Top-level fields only a shipped results file has (an evaluation's has ``meta`` instead).
_SHIPPED_ONLY = ("teachers", "methods", "bytes_resolution")


def read_results(path: str | Path) -> dict[str, Any]:
    """Read rate-accuracy results: a ``frankensplit eval`` results.json (or the folder holding
    it), or a shipped results file (:mod:`frankensplit.eval.shipped`; :data:`SHIPPED` names the
    one the package ships), whose rows are converted to an evaluation's.

    Returns:
        The evaluation's layout (``version``, ``meta``, ``rows`` with the columns of
        :data:`~frankensplit.eval.schema.SCHEMA`) and ``origin``: where the figures come from, in
        one line (the file; for a shipped file also its data set, commit and command). A shipped
        file's rows gain a teacher row per teacher, ``quality`` (the setting as a number, None
        for split models) and ``penalty``; they have no timings.

    Raises:
        ValueError: an unreadable file, not JSON, another layout or version, no rows, or a row
            lacking a field (the message names the file and what is wrong).
    """
    from frankensplit.eval import shipped  # the zoo index behind it: only when reading results

    path = shipped.RESULTS_FILE if str(path) == SHIPPED else Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read results {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not rows or not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path} has no result rows (a list of objects under 'rows')")
    if "meta" not in doc and any(k in doc for k in _SHIPPED_ONLY):
        return _from_shipped(path)
    if doc.get("version") != RESULTS_VERSION:
        raise ValueError(f"{path} is not a `frankensplit eval` results.json of version "
                         f"{RESULTS_VERSION}, nor a shipped results file")
    for i, row in enumerate(rows):
        missing = [k for k in _ROW_NEEDS if k not in row]
        if missing:
            raise ValueError(f"{path}: rows[{i}] lacks {missing}")
    return {**doc, "origin": _eval_origin(path, doc.get("meta"))}


def _eval_origin(path: Path, meta: Any) -> str:
    """``PATH (`frankensplit eval`, data ..., N images, created ...)``, as far as the meta says."""
    meta = meta if isinstance(meta, dict) else {}
    words = {"data": "data {}", "images": "{} images", "frankensplit_version": "frankensplit {}",
             "created": "created {}"}
    said = [w.format(meta[k]) for k, w in words.items() if k in meta]
    return f"{path} (" + ", ".join(["`frankensplit eval`", *said]) + ")"


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} is {value!r}, expected a number")
    return float(value)


def _quality(setting: str) -> float | None:
    """A codec row's setting is its quality as text; a split model's is its model id (None)."""
    try:
        value = float(setting)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _shipped_row(row: Mapping[str, Any], nbytes: float | None, reference: tuple[float, Any],
                 data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One shipped row (or a teacher's) with the columns of an evaluation's; ``reference``: its
    teacher's uncompressed top-1 and top-5."""
    top1, (ref1, ref5) = _number(row["top1"], f"{where}.top1"), reference
    full = {**row, "quality": None if nbytes is None else _quality(str(row["setting"])),
            "images": int(data["images"]), "reference": data["reference"], "top1": top1,
            "teacher_top1": ref1, "teacher_top5": ref5, "penalty": round(ref1 - top1, 2),
            "bytes": nbytes, "kb": None if nbytes is None else nbytes / 1000.0}
    return {k: full.get(k) for k in SCHEMA}  # timings: not in a shipped file


def _from_shipped(path: Path) -> dict[str, Any]:
    """A shipped results file (read and checked by :func:`~frankensplit.eval.shipped.load_results`)
    as an evaluation's results."""
    from frankensplit.eval import shipped

    doc = shipped.load_results(path)
    data = doc["data"]
    lacks = [k for k in ("name", "path", "images", "reference")
             if not isinstance(data, dict) or k not in data]
    if lacks:
        raise ValueError(f"{path}: 'data' lacks {lacks}")
    images = int(_number(data["images"], f"{path}: data.images"))
    if not doc["teachers"] or not isinstance(doc["teachers"], dict):
        raise ValueError(f"{path}: 'teachers' must map each teacher to its {{top1, top5}}")
    refs = {}
    for name, ref in doc["teachers"].items():
        if not isinstance(ref, dict) or "top1" not in ref:
            raise ValueError(f"{path}: teachers.{name} is {ref!r}, expected {{top1, top5}}")
        refs[name] = (_number(ref["top1"], f"{path}: teachers.{name}.top1"), ref.get("top5"))
    rows = [_shipped_row({"teacher": t, "method": TEACHER_METHOD, "setting": TEACHER_SETTING,
                          "top1": top1, "top5": top5}, None, refs[t], data, f"{path}: teachers.{t}")
            for t, (top1, top5) in refs.items()]
    for i, r in enumerate(doc["rows"]):
        where = f"{path}: rows[{i}]"
        nbytes = _number(r["bytes_per_image"], f"{where}.bytes_per_image")
        rows.append(_shipped_row({**r, "setting": str(r["setting"])}, nbytes, refs[r["teacher"]],
                                 data, where))
    own = path.resolve() == shipped.RESULTS_FILE.resolve()
    shown = shipped.RESULTS_FILE.relative_to(shipped.RESULTS_FILE.parents[2]) if own else path
    commit = str(doc["commit"])
    origin = (f"{shown} (shipped dev-set results: {data['name']}, {images:,} images, measured at "
              f"commit {commit[:12]} by `{doc['command']}`; bytes to {doc['bytes_resolution']})")
    meta = {"data": data["path"], "data_name": data["name"], "images": images,
            "reference": data["reference"], "results_file": str(path), "commit": commit,
            "command": doc["command"], "source": doc["source"],
            "bytes_resolution": doc["bytes_resolution"], "remeasured": doc["remeasured"],
            "methods": doc["methods"]}
    return {"version": RESULTS_VERSION, "columns": SCHEMA, "meta": meta, "rows": rows,
            "summary": [], "origin": origin}


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a log, in file order (a half-written last line is ignored).

    Raises:
        ValueError: a damaged line that is not the last one, or a record missing fields.
    """
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines) and not line.endswith("\n"):
                return  # interrupted mid-write
            raise ValueError(f"{path}:{number}: damaged record ({e})") from e
        missing = [f for f in RECORD_FIELDS if f not in record]
        if missing:
            raise ValueError(f"{path}:{number}: record lacks {missing}")
        yield record


class RecordLog:
    """Append-only record log, opened fresh or for resuming.

    Args:
        path: the JSONL file.
        files: the dataset's files; a logged record whose file name differs from the dataset's at
            its index belongs to another dataset and makes resuming an error.
        resume: keep the existing records (else the log must not exist yet, or ``overwrite``).
        overwrite: start a fresh log, deleting an existing one.

    Raises:
        ValueError: the log exists and neither ``resume`` nor ``overwrite`` is set (hours of
            measurements are not discarded by default), or it belongs to another dataset.
    """

    def __init__(
        self, path: str | Path, files: Sequence[str | Path], resume: bool, overwrite: bool = False
    ) -> None:
        self.path = Path(path)
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if exists and not (resume or overwrite):
            raise ValueError(
                f"{self.path} already holds records; resume it (--resume) or start again "
                "(--overwrite), or choose another output folder"
            )
        self.done: set[Key] = set()
        if resume and exists:
            self._load(files)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = open(self.path, "a" if resume else "w")  # noqa: SIM115

    def _load(self, files: Sequence[str | Path]) -> None:
        names = [Path(f).name for f in files]
        for record in read_records(self.path):
            index = int(record["index"])
            if index < len(names) and Path(record["file"]).name != names[index]:
                raise ValueError(
                    f"{self.path} was written for another dataset: image {index} is "
                    f"{record['file']!r} there, {names[index]!r} here"
                )
            self.done.add(record_key(record))
        # Cut a half-written last line so that appending continues on a fresh line.
        text = self.path.read_text()
        if text and not text.endswith("\n"):
            self.path.write_text(text[: text.rfind("\n") + 1])

    def __contains__(self, key: Key) -> bool:
        return key in self.done

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Log records (one image's worth) and flush them to disk."""
        if self._file is None:
            raise ValueError(f"record log {self.path} is closed")
        for record in records:
            self._file.write(json.dumps({f: record[f] for f in RECORD_FIELDS}) + "\n")
            self.done.add(record_key(record))
        self._file.flush()

    def close(self) -> None:
        """Close the file (further appends are an error)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The per-image record log (JSONL) that makes an evaluation resumable, and reading results back.

Every finished (operating point, image) pair is one line, appended and flushed at once; the final
aggregation reads nothing but this file. An interrupted run therefore loses at most the image in
flight, and ``resume=True`` skips every pair already logged. A half-written last line (the process
was killed mid-write) is dropped when the log is reopened; a damaged line anywhere else is an error,
because silently skipping it would bias the averages. :func:`read_results` reads a finished
evaluation's ``results.json`` (``frankensplit simulate``, the benchmarks).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from frankensplit.eval.schema import RECORD_FIELDS, RESULTS_VERSION

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

__all__ = ["Key", "RecordLog", "read_records", "read_results", "record_key"]

#: (teacher, method, setting, index): identifies one record.
Key = tuple[str, str, str, int]


def record_key(record: dict[str, Any]) -> Key:
    """The identity of a record."""
    return (record["teacher"], record["method"], record["setting"], int(record["index"]))


def read_results(path: str | Path) -> dict[str, Any]:
    """Read a ``frankensplit eval`` results.json (or the folder holding it).

    Raises:
        ValueError: not JSON, another results version, or no rows.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    if not isinstance(results, dict) or results.get("version") != RESULTS_VERSION:
        raise ValueError(f"{path} is not a results.json of version {RESULTS_VERSION}")
    if not results.get("rows"):
        raise ValueError(f"{path} has no result rows")
    return results


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

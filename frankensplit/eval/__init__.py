"""Rate-accuracy evaluation: FrankenSplit against standard codecs, with real bytes.

Every image goes through every operating point at batch size 1 with real entropy / image coding;
the uncompressed teacher's output is computed once per image and shared::

    records.jsonl  (one line per image and operating point; what --resume continues)
        -> rows    (one per teacher x method x setting; columns in ``SCHEMA``)
        -> results.json, results.csv, rate_accuracy.png, summary.md

The record and row schema is documented in :mod:`frankensplit.eval.schema`; the summary figures
(bytes needed to stay within a margin of the teacher, rate saving at equal top-1) in
:mod:`frankensplit.eval.summary`.
"""

from frankensplit._lazy import lazy_exports

#: module of each public name, imported on first use (`frankensplit --help` imports no torch).
_EXPORTS = {
    "frankensplit.eval.aggregate": ("aggregate", "curves", "summarize"),
    "frankensplit.eval.pipeline": ("RECORDS_FILE", "EvalResult", "load_dataset", "run_eval"),
    "frankensplit.eval.records": ("RecordLog", "read_records", "read_results"),
    "frankensplit.eval.schema": ("FRANKENSPLIT_METHOD", "RECORD_FIELDS", "SCHEMA",
        "TEACHER_METHOD"),
    "frankensplit.eval.runner": ("OperatingPoint", "evaluate", "plan"),
    "frankensplit.eval.summary": ("Overlap", "Saving", "bytes_at_accuracy", "bytes_within",
        "coverage", "overlap_saving", "rate_savings", "rate_savings_at_baseline", "within_table"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
lazy_exports(__name__, _EXPORTS)

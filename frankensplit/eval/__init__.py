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

from frankensplit.eval.aggregate import aggregate, curves, summarize
from frankensplit.eval.pipeline import (
    DEFAULT_CODECS,
    RECORDS_FILE,
    EvalResult,
    load_dataset,
    run_eval,
)
from frankensplit.eval.records import RecordLog, read_records
from frankensplit.eval.runner import FRANKENSPLIT_METHOD, OperatingPoint, evaluate, plan
from frankensplit.eval.schema import RECORD_FIELDS, SCHEMA, TEACHER_METHOD
from frankensplit.eval.summary import (
    Saving,
    bytes_at_accuracy,
    bytes_within,
    coverage,
    rate_savings,
    rate_savings_at_baseline,
    within_table,
)

__all__ = [
    "DEFAULT_CODECS",
    "FRANKENSPLIT_METHOD",
    "RECORDS_FILE",
    "RECORD_FIELDS",
    "SCHEMA",
    "TEACHER_METHOD",
    "EvalResult",
    "OperatingPoint",
    "RecordLog",
    "Saving",
    "aggregate",
    "bytes_at_accuracy",
    "bytes_within",
    "coverage",
    "curves",
    "evaluate",
    "load_dataset",
    "plan",
    "rate_savings",
    "rate_savings_at_baseline",
    "read_records",
    "run_eval",
    "summarize",
    "within_table",
]

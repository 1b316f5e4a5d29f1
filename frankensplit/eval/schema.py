"""What an evaluation writes: the per-image records and the per-operating-point result rows.

Records (``records.jsonl`` in the output folder, one JSON object per line, appended as images are
done so that an interrupted run loses at most the image in flight)::

    teacher         timm name of the teacher the method feeds
    method          "teacher", a split model's method ("frankensplit", "entropic_student"; with
                    ``_vr`` appended for a variable-rate model: `variable_rate_method`) or a
                    codec name ("jpeg", "webp", "avif", "jxl", "bmshj2018-factorized")
    setting         "uncompressed" (teacher), the model id (split models; ``<model id>@<lambda>``
                    for each rate of a variable-rate model: `rate_setting`), the quality as text
                    (codecs; for jxl the butteraugli distance, for bmshj2018-factorized lambda)
    index, file     position in the dataset and the image's file name (checked on --resume)
    label           ILSVRC class index, -1 when unknown
    reference       the class this record is scored against: the label, or the uncompressed
                    teacher's top-1 when the dataset has no labels
    pred            the method's top-5 classes, best first
    correct1/5      reference == pred[0] / reference in pred
    bytes           bytes sent for this image (whole packet or file; null for the teacher)
    bits_estimated  -sum(log2 likelihoods) of the latent (learned methods only, else null)
    pixels          H*W of the teacher's input crop (50176 at 224x224), for bpp
    encode_ms       edge side: g_a + entropy encoding, or the codec's encoder
    decode_ms       server side, bytes -> input of the network: entropy decoding to y_hat, or the
                    codec's decoder
    infer_ms        server side network: g_s + teacher tail (frankensplit), the whole teacher on
                    the decoded crop (codecs) or on the original crop (teacher)

Result rows (``results.csv``; ``results.json["rows"]``), one per (teacher, method, setting), columns
and meaning in :data:`SCHEMA`. All means are over the same images; accuracies are in percent,
``penalty`` in percentage points, 1 KB = 1000 bytes, bpp over the teacher's input crop
(``bytes * 8 / (224 * 224)`` at 224x224; header and container included: ``bpp_actual`` is the real
rate, ``bpp_estimated`` the likelihood estimate, reported side by side).
"""

from __future__ import annotations

from frankensplit.models.zoo_index import rate_setting  # one naming rule for every command

__all__ = [
    "FRANKENSPLIT_METHOD", "RECORD_FIELDS", "RESULTS_VERSION", "SCHEMA", "TEACHER_METHOD",
    "TEACHER_SETTING", "VARIABLE_RATE_SUFFIX", "fixed_rate_method", "is_variable_rate",
    "rate_setting", "split_rate_setting", "variable_rate_method",
]

#: Version of the results.json layout; bumped whenever a column changes meaning.
RESULTS_VERSION = 1

#: ``method`` and ``setting`` of the uncompressed teacher's rows and records.
TEACHER_METHOD = "teacher"
TEACHER_SETTING = "uncompressed"

#: ``method`` of FrankenSplit rows and records (their ``setting`` is the model id).
FRANKENSPLIT_METHOD = "frankensplit"

#: Appended to a variable-rate model's method: its rates form a curve of their own.
VARIABLE_RATE_SUFFIX = "_vr"


def variable_rate_method(method: str) -> str:
    """The ``method`` of a variable-rate model's rows: ``frankensplit_vr`` for ``frankensplit``."""
    return method + VARIABLE_RATE_SUFFIX


def is_variable_rate(method: str) -> bool:
    """Whether rows of ``method`` are the rates of a variable-rate model."""
    return method.endswith(VARIABLE_RATE_SUFFIX) and len(method) > len(VARIABLE_RATE_SUFFIX)


def fixed_rate_method(method: str) -> str:
    """The method of the fixed-rate models a variable-rate method belongs with (``frankensplit``
    for ``frankensplit_vr``); any other method unchanged."""
    return method[:-len(VARIABLE_RATE_SUFFIX)] if is_variable_rate(method) else method


def split_rate_setting(setting: str) -> tuple[str, float | None]:
    """``(model id, lambda)`` of a `rate_setting`; ``(setting, None)`` for any other setting."""
    model_id, at, lmbda = setting.rpartition("@")
    try:
        return (model_id, float(lmbda)) if at and model_id else (setting, None)
    except ValueError:
        return setting, None

#: Fields of one per-image record, in order.
RECORD_FIELDS: tuple[str, ...] = (
    "teacher", "method", "setting", "index", "file", "label", "reference", "pred",
    "correct1", "correct5", "bytes", "bits_estimated", "pixels",
    "encode_ms", "decode_ms", "infer_ms",
)

#: Result-row columns (the CSV header, in order) -> meaning. Empty cells / null mean "does not
#: apply" (e.g. bytes of the uncompressed teacher, bpp_estimated of a standard codec).
SCHEMA: dict[str, str] = {
    "teacher": "timm name of the teacher classifying the method's output",
    "method": "teacher | frankensplit | entropic_student | jpeg | webp | avif | jxl | "
              "bmshj2018-factorized | ... (_vr appended: a variable-rate model's rates)",
    "setting": "uncompressed | model id | model id@lambda (one rate of a variable-rate model) "
               "| codec quality (jxl: butteraugli distance; bmshj2018-factorized: lambda)",
    "quality": "codec quality as a number (null for teacher and split models)",
    "images": "number of images averaged over",
    "reference": "label: top-1/5 against the labels; teacher: agreement with the uncompressed "
                 "teacher's top-1 (datasets without labels)",
    "top1": "top-1 accuracy (%)",
    "top5": "top-5 accuracy (%)",
    "teacher_top1": "uncompressed teacher's top-1 (%) on the same images and preprocessing",
    "teacher_top5": "uncompressed teacher's top-5 (%)",
    "penalty": "teacher_top1 - top1 (percentage points)",
    "bytes": "mean bytes per image sent (packet header / file container included)",
    "kb": "bytes / 1000",
    "bpp_actual": "bytes * 8 / pixels of the teacher's input crop (real rate)",
    "bpp_estimated": "likelihood estimate of the latent's rate (learned methods only)",
    "encode_ms": "mean edge encoding time (ms, batch size 1)",
    "decode_ms": "mean server decoding time, bytes -> network input (ms)",
    "infer_ms": "mean server network time (g_s + tail, or the whole teacher) (ms)",
}

"""Evaluation: summary figures against shared/BASELINES.md, result schema, resume = one run."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from frankensplit.codecs import parse_qualities
from frankensplit.eval import (
    RECORD_FIELDS,
    RECORDS_FILE,
    SCHEMA,
    EvalResult,
    bytes_at_accuracy,
    bytes_within,
    coverage,
    load_dataset,
    overlap_saving,
    rate_savings,
    rate_savings_at_baseline,
    read_records,
    run_eval,
    summarize,
)
from frankensplit.eval.records import record_key
from frankensplit.eval.report import summary_markdown
from frankensplit.models.split import FrankenSplit
from frankensplit.threads import torch_threads

# ------------------------------------------------------------------------------------------------
# Summary figures (pure functions)
# ------------------------------------------------------------------------------------------------

#: shared/BASELINES.md: mean bytes / top-1 per setting, low to high quality; teacher 83.36%.
BASELINES_TEACHER = 83.36
BASELINES = {
    "jpeg": [(2180, 41.4), (3035, 64.6), (4414, 75.0), (5553, 78.3), (7414, 78.3), (9892, 80.8),
             (17752, 82.0)],
    "webp": [(2232, 67.0), (2766, 70.6), (3661, 74.0), (4514, 76.3), (6096, 79.5), (7674, 79.9),
             (14991, 81.8)],
    "avif": [(952, 46.7), (1193, 57.0), (1659, 66.6), (2317, 71.6), (4972, 79.2), (9745, 82.0),
             (17635, 82.7)],
    "jxl": [(2198, 64.9), (3030, 71.8), (4347, 75.4), (6517, 78.8), (8860, 80.6), (14266, 82.2),
            (21037, 83.1)],
}
#: Its quoted figures, KB per image (None: "never gets there").
QUOTED_KB = {
    (1, "avif"): 13.2, (1, "jxl"): 15.3, (1, "jpeg"): None, (1, "webp"): None,
    (3, "avif"): 6.6, (3, "jxl"): 8.6, (3, "webp"): 9.1, (3, "jpeg"): 9.4,
}


def _shifted(curve: list[tuple[float, float]], delta: float) -> list[tuple[float, float]]:
    return [(b, a + delta) for b, a in curve]


@pytest.mark.parametrize(("margin", "codec"), sorted(QUOTED_KB))
def test_within_margin_matches_baselines_md(margin: int, codec: str) -> None:
    """The quoted KB lie within what the table's 0.1-point rounding of top-1 allows.

    The table's top-1 values are rounded to 0.1 points, so each quoted figure is checked against
    the interval spanned by shifting every accuracy by +-0.05 (bytes needed fall as accuracies
    rise), widened by the quote's own rounding to 0.1 KB. The nominal value is within 0.12 KB.
    """
    curve, quoted = BASELINES[codec], QUOTED_KB[(margin, codec)]
    nominal = bytes_within(curve, BASELINES_TEACHER, margin)
    if quoted is None:
        assert nominal is None
        assert coverage(curve, BASELINES_TEACHER - margin) == "not reached"
        return
    low = bytes_within(_shifted(curve, +0.05), BASELINES_TEACHER, margin)
    high = bytes_within(_shifted(curve, -0.05), BASELINES_TEACHER, margin)
    assert low / 1000 - 0.05 <= quoted <= high / 1000 + 0.05
    assert abs(nominal / 1000 - quoted) < 0.12


def test_kilobyte_is_1000_bytes_and_bpp() -> None:
    """AVIF within 1 point: 13.2 KB and 2.11 bpp only with 1 KB = 1000 bytes (1024 gives 12.9)."""
    avif = bytes_within(BASELINES["avif"], BASELINES_TEACHER, 1)
    assert round(avif / 1000, 1) == 13.2 and round(avif / 1024, 1) != 13.2
    assert round(avif * 8 / (224 * 224), 2) == 2.11
    assert round(bytes_within(BASELINES["jxl"], BASELINES_TEACHER, 1) * 8 / 50176, 2) == 2.44
    assert round(bytes_within(BASELINES["avif"], BASELINES_TEACHER, 3) * 8 / 50176, 2) == 1.05


def test_monotone_curve_is_log_linear() -> None:
    curve = [(4000, 70.0), (1000, 50.0)]  # any order
    assert bytes_at_accuracy(curve, 60.0) == pytest.approx(2000.0)  # geometric midpoint
    assert bytes_at_accuracy(curve, 70.0) == pytest.approx(4000.0)
    assert bytes_at_accuracy(curve, 50.0) == pytest.approx(1000.0)
    assert bytes_at_accuracy(curve, 60.0, rule="stay") == pytest.approx(2000.0)


def test_no_extrapolation() -> None:
    curve = [(1000, 50.0), (4000, 70.0)]
    assert bytes_at_accuracy(curve, 70.5) is None  # above the best point
    assert coverage(curve, 70.5) == "not reached"
    assert bytes_at_accuracy(curve, 40.0) is None  # already exceeded at the lowest rate
    assert coverage(curve, 40.0) == "below range"
    assert bytes_at_accuracy([(1000, 50.0)], 50.0) == 1000.0
    assert bytes_at_accuracy([(1000, 50.0)], 49.0) is None
    assert bytes_at_accuracy([], 10.0) is None


def test_non_monotone_curve_rules() -> None:
    curve = [(1000, 50.0), (2000, 70.0), (3000, 60.0), (4000, 80.0)]
    assert bytes_at_accuracy(curve, 65.0) == pytest.approx(1000 * 2**0.75)  # first crossing
    assert bytes_at_accuracy(curve, 65.0, rule="stay") == pytest.approx(3000 * (4 / 3) ** 0.25)
    assert bytes_at_accuracy(curve, 75.0) == pytest.approx(3000 * (4 / 3) ** 0.75)
    assert bytes_at_accuracy(curve, 75.0, rule="stay") == pytest.approx(3000 * (4 / 3) ** 0.75)
    dips_at_end = curve[:3]
    assert bytes_at_accuracy(dips_at_end, 65.0) == pytest.approx(1000 * 2**0.75)
    assert bytes_at_accuracy(dips_at_end, 65.0, rule="stay") is None
    flat = [(5553, 78.3), (7414, 78.3), (9892, 80.8)]  # JPEG's plateau
    assert bytes_at_accuracy(flat, 78.3) == 5553


def test_bad_curves_are_refused() -> None:
    with pytest.raises(ValueError, match="rule"):
        bytes_at_accuracy([(1000, 50.0)], 50.0, rule="last")
    with pytest.raises(ValueError, match="positive"):
        bytes_at_accuracy([(0, 50.0)], 50.0)
    with pytest.raises(ValueError, match="finite"):
        bytes_at_accuracy([(100, math.nan)], 50.0)
    with pytest.raises(TypeError, match="bytes, top1"):
        bytes_at_accuracy([(100,)], 50.0)


def test_rate_savings_at_equal_top1() -> None:
    baseline = [(1000, 50.0), (4000, 70.0)]
    savings = rate_savings([(900, 80.0), (500, 60.0)], baseline)
    assert [s.bytes for s in savings] == [500, 900]  # sorted by bytes
    assert savings[0].baseline_bytes == pytest.approx(2000.0)
    assert savings[0].saving == pytest.approx(0.75)
    assert savings[1].baseline_bytes is None and savings[1].saving is None  # not covered


def test_rate_savings_read_at_the_baseline_points() -> None:
    # A baseline that never reaches FrankenSplit's top-1 values: no saving at FS's points ...
    fs = [(1000, 30.0), (2000, 70.0)]
    weak = [(16000, 50.0), (8000, 40.0)]
    assert all(s.saving is None for s in rate_savings(fs, weak))
    # ... but FS's curve covers the baseline's 40% and 50% (log-linear, as everywhere)
    at = rate_savings_at_baseline(fs, weak)
    assert [s.baseline_bytes for s in at] == [8000, 16000]  # sorted by the baseline's bytes
    assert at[0].bytes == pytest.approx(1000 * 2 ** 0.25)
    assert at[0].saving == pytest.approx(1 - 1000 * 2 ** 0.25 / 8000)
    assert at[1].bytes == pytest.approx(1000 * 2 ** 0.5)
    (below,) = rate_savings_at_baseline(fs, [(500, 20.0)])  # below FS's measured range
    assert below.bytes is None and below.saving is None
    # FS's bytes are read with the "stay" rule: a dip below the target after reaching it counts
    noisy = [(1000, 30.0), (1500, 45.0), (1800, 38.0), (2000, 70.0)]
    assert rate_savings_at_baseline(noisy, [(8000, 40.0)])[0].bytes > 1800


def test_overlap_saving_reads_the_whole_shared_range() -> None:
    # Both curves straight in log bytes, FrankenSplit at 0.2x the baseline's bytes everywhere:
    # a constant 80% saving over exactly the top-1 range both cover (60-75%).
    base = [(2000, 60.0), (8000, 80.0)]  # top-1 = 60 + 20 * log4(bytes / 2000)
    fs = [(400 * 4 ** ((a - 60) / 20), a) for a in (55.0, 60.0, 75.0)]
    o = overlap_saving(fs, base)
    assert (o.low, o.high) == (pytest.approx(60.0), pytest.approx(75.0))
    assert len(o.savings) == 41 and o.savings[0][0] == pytest.approx(60.0)
    assert o.min_saving == pytest.approx(0.8) and o.max_saving == pytest.approx(0.8)
    cut = overlap_saving(fs, base, band=(65.0, 82.0), steps=3)
    assert [t for t, _ in cut.savings] == pytest.approx([65.0, 70.0, 75.0])
    # No shared range (or one cut away by the band): None, never an extrapolated figure.
    assert overlap_saving([(400, 40.0), (800, 50.0)], base) is None
    assert overlap_saving(fs, base, band=(76.0, 82.0)) is None
    with pytest.raises(ValueError, match="steps"):
        overlap_saving(fs, base, steps=1)


def test_overlap_saving_never_flatters_a_noisy_curve() -> None:
    # FrankenSplit's curve dips (65% at 2000 B, 60% at 3000 B): 62.5% counts as reached only
    # from 3000 B on ("stay"), not at ~1700 B; and its range ends at its last point (75%).
    fs = [(1000, 50.0), (2000, 65.0), (3000, 60.0), (4000, 75.0), (5000, 74.0)]
    base = [(1500, 40.0), (20000, 80.0)]
    o = overlap_saving(fs, base, steps=11)
    assert (o.low, o.high) == (pytest.approx(50.0), pytest.approx(74.0))
    top1, saving = o.savings[5]
    assert top1 == pytest.approx(62.0)
    assert (1 - saving) * bytes_at_accuracy(base, top1) > 3000
    values = [s for _, s in o.savings]
    assert (o.min_saving, o.max_saving) == (min(values), max(values))
    assert o.min_saving < o.max_saving


def _rows(curves: dict[str, list[tuple[float, float]]], teacher_top1: float) -> list[dict]:
    """Synthetic result rows (only the columns the summary reads)."""
    rows = [{"teacher": "t", "method": "teacher", "setting": "uncompressed", "bytes": None,
             "top1": teacher_top1, "images": 1286, "reference": "label"}]
    for method, curve in curves.items():
        rows += [{"teacher": "t", "method": method, "setting": str(i), "bytes": b, "top1": a}
                 for i, (b, a) in enumerate(curve)]
    return rows


def test_summarize_and_markdown() -> None:
    fs = [(3000.0, 81.0), (5000.0, 83.0)]
    rows = _rows({"frankensplit": fs, **BASELINES}, BASELINES_TEACHER)
    (s,) = summarize(rows)
    assert s["within"]["avif"]["1"] == pytest.approx(13221, abs=1)
    assert s["within"]["jpeg"]["1"] is None and s["within_status"]["jpeg"]["1"] == "not reached"
    assert s["within"]["frankensplit"]["3"] is None  # 81.0 at the lowest rate already
    assert s["within_status"]["frankensplit"]["3"] == "below range"
    by_setting = {p["setting"]: p for p in s["savings"]["avif"]}
    assert by_setting["0"]["saving"] == pytest.approx(1 - 3000 / by_setting["0"]["baseline_bytes"])
    assert by_setting["1"]["saving"] is None  # AVIF never reaches 83.0
    reverse = s["savings_at_baseline"]["avif"]  # one entry per AVIF point, read on FS's curve
    assert len(reverse) == len(BASELINES["avif"])
    covered = [p for p in reverse if p["saving"] is not None]
    assert covered and all(81.0 <= p["top1"] <= 83.0 for p in covered)
    for p in covered:
        assert p["saving"] == pytest.approx(1 - p["bytes"] / p["baseline_bytes"])
    for row in rows:
        row.update(dict.fromkeys(("top5", "penalty", "kb", "bpp_actual", "bpp_estimated",
                                  "encode_ms", "decode_ms", "infer_ms"), 0.0))
    text = summary_markdown(rows, [s], {"data": "d", "images": 1286, "reference": "label"})
    assert "| AVIF | 13.2 | 6.6 |" in text and "| JPEG | not reached | 9.4 |" in text
    assert "| FrankenSplit | 4.2 | below lowest setting |" in text  # 3000 * (5/3)**0.68
    assert "| AVIF | " in text.split("read at each baseline setting")[1]
    avif = s["overlap"]["avif"]  # FS covers 81-83%, AVIF reaches 83.0 nowhere: up to its best
    assert avif["low"] == pytest.approx(81.0) and avif["high"] == pytest.approx(
        max(a for _, a in BASELINES["avif"]))
    assert f"| AVIF | 81.00-{avif['high']:.2f}% | " in text.split("shares with each baseline")[1]


def _vr_rows() -> list[dict]:
    """Synthetic rows: the teacher, two fixed-rate FrankenSplit models, a variable-rate model's
    three rates and JPEG, every column the report prints."""
    rows = _rows({"jpeg": BASELINES["jpeg"]}, BASELINES_TEACHER)
    rows += [{"teacher": "t", "method": "frankensplit", "setting": f"fs-l{lmbda}", "bytes": b,
              "top1": a} for lmbda, b, a in ((4, 4400.0, 79.9), (16, 2000.0, 78.4))]
    rows += [{"teacher": "t", "method": "frankensplit_vr", "setting": f"fs-vr@{lmbda:g}",
              "bytes": b, "top1": a}
             for lmbda, b, a in ((16.0, 2500.0, 75.2), (4.0, 4300.0, 78.2), (0.5, 7400.0, 82.5))]
    for row in rows:
        row.update({k: row.get(k, 0.0) for k in ("top5", "penalty", "kb", "bpp_actual",
                                                 "bpp_estimated", "encode_ms", "decode_ms",
                                                 "infer_ms")})
    return rows


def test_schema_names_a_variable_rate_models_rows() -> None:
    from frankensplit.eval.schema import (
        fixed_rate_method,
        is_variable_rate,
        rate_setting,
        split_rate_setting,
        variable_rate_method,
    )

    assert variable_rate_method("frankensplit") == "frankensplit_vr"
    assert is_variable_rate("frankensplit_vr") and not is_variable_rate("frankensplit")
    assert fixed_rate_method("frankensplit_vr") == fixed_rate_method("frankensplit")
    assert rate_setting("fs-lite0-vr", 0.0625) == "fs-lite0-vr@0.0625"
    assert split_rate_setting("fs-lite0-vr@0.0625") == ("fs-lite0-vr", 0.0625)
    for other in ("fs-lite0-l4", "50", "uncompressed", "@4", "a@b"):
        assert split_rate_setting(other) == (other, None)


def test_a_variable_rate_model_is_a_curve_of_its_own() -> None:
    (s,) = summarize(_vr_rows())
    assert set(s["within"]) == {"jpeg", "frankensplit", "frankensplit_vr"}
    assert s["within"]["frankensplit_vr"]["1"] == pytest.approx(
        bytes_within([(2500, 75.2), (4300, 78.2), (7400, 82.5)], BASELINES_TEACHER, 1))
    assert set(s["savings"]) == {"jpeg"}  # neither FrankenSplit curve is the other's baseline
    assert [p["setting"] for p in s["savings"]["jpeg"]] == ["fs-l16", "fs-l4"]
    vr = s["variable_rate"]["frankensplit_vr"]
    assert set(vr["savings"]) == set(vr["savings_at_baseline"]) == {"jpeg"}
    assert [p["setting"] for p in vr["savings"]["jpeg"]] == ["fs-vr@16", "fs-vr@4", "fs-vr@0.5"]
    point = vr["savings"]["jpeg"][1]  # 78.2% at 4300 bytes against JPEG's curve
    assert point["saving"] == pytest.approx(
        1 - 4300 / bytes_at_accuracy(BASELINES["jpeg"], 78.2))
    text = summary_markdown(_vr_rows(), [s], {"data": "d", "images": 1286, "reference": "label"})
    for rate, lmbda in enumerate(("16", "4", "0.5")):  # a row per rate, named by index and lambda
        assert f"| FrankenSplit, variable rate | fs-vr, rate {rate} (lambda {lmbda}) | " in text
    assert "| FrankenSplit, variable rate | 7.3 | 5.6 |" in text  # within 1 / 3 points
    assert "| FrankenSplit | top-1 | KB | vs JPEG |" in text
    assert "| FrankenSplit, variable rate | top-1 | KB | vs JPEG |" in text
    assert "| fs-vr, rate 1 (lambda 4) | 78.20 | 4.30 | " in text
    assert "vs FrankenSplit" not in text


def test_only_a_variable_rate_model_gets_no_empty_fixed_rate_tables() -> None:
    rows = [r for r in _vr_rows() if r["method"] != "frankensplit"]
    (s,) = summarize(rows)
    assert s["savings"] == {"jpeg": []}
    text = summary_markdown(rows, [s], {"data": "d", "images": 1286, "reference": "label"})
    assert "FrankenSplit's rate saving" not in text
    assert "The variable-rate model's rate saving" in text


def test_the_plot_draws_the_variable_rate_model_as_its_own_line(monkeypatch, tmp_path) -> None:
    from matplotlib.figure import Figure

    from frankensplit.eval.report import plot_rate_accuracy

    drawn = {}

    def savefig(fig, path, **_):  # what the figure holds when saved
        (ax,) = fig.axes
        drawn.update({t.get_text(): line for t, line in zip(ax.get_legend().get_texts(),
                                                             ax.get_legend().get_lines())})
        drawn["lines"] = {line.get_label(): line for line in ax.get_lines()}

    monkeypatch.setattr(Figure, "savefig", savefig)
    rows = [{**r, "kb": None if r["bytes"] is None else r["bytes"] / 1000} for r in _vr_rows()]
    plot_rate_accuracy(tmp_path / "plot.png", rows)
    assert {"FrankenSplit", "FrankenSplit, variable rate", "JPEG"} <= set(drawn)
    vr = drawn["lines"]["FrankenSplit, variable rate"]
    assert list(vr.get_xdata()) == [2.5, 4.3, 7.4] and vr.get_linestyle() == "--"
    assert list(drawn["lines"]["FrankenSplit"].get_xdata()) == [2.0, 4.4]


def test_parse_qualities() -> None:
    assert parse_qualities([], ["jpeg"]) == {"jpeg": None}
    assert parse_qualities(["10,50", "jxl=2"], ["jpeg", "jxl"]) == {"jpeg": (10, 50), "jxl": (2,)}
    with pytest.raises(ValueError, match="avif"):
        parse_qualities(["avif=10"], ["jpeg"])
    with pytest.raises(ValueError, match="numbers"):
        parse_qualities(["ten"], ["jpeg"])


# ------------------------------------------------------------------------------------------------
# Real runs on tiny16
# ------------------------------------------------------------------------------------------------

TINY16 = Path(__file__).resolve().parents[2] / "shared/data/fixtures/tiny16"
CODECS = {"jpeg": (30,)}
Dataset = tuple[list[Path], list[int]]
TIMES = ("encode_ms", "decode_ms", "infer_ms")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, like ``frankensplit eval``: far faster than two on a busy 2-core box."""

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def model() -> FrankenSplit:
    from frankensplit.models.zoo import create_model

    return create_model("fs-lite0-untrained")


@pytest.fixture(scope="module")
def data() -> Dataset:
    if not (TINY16 / "labels.csv").is_file():
        pytest.skip(f"shared fixtures not found at {TINY16}")
    return load_dataset(TINY16, limit=4)


@pytest.fixture(scope="module")
def one_run(
    model: FrankenSplit, data: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> EvalResult:
    out = tmp_path_factory.mktemp("eval")
    return run_eval([model], *data, out, CODECS, data="tiny16")


def test_result_files_follow_the_schema(one_run: EvalResult) -> None:
    paths = one_run.paths
    doc = json.loads(paths["json"].read_text())
    assert doc["columns"] == SCHEMA and doc["meta"]["images"] == 4
    assert doc["meta"]["reference"] == "label"
    assert [(r["method"], r["setting"]) for r in doc["rows"]] == [
        ("teacher", "uncompressed"), ("frankensplit", "fs-lite0-untrained"), ("jpeg", "30")]
    for row in doc["rows"]:
        assert list(row) == list(SCHEMA)
        assert row["images"] == 4 and 0 <= row["top1"] <= row["top5"] <= 100
        assert row["penalty"] == pytest.approx(row["teacher_top1"] - row["top1"])
    teacher, fs, jpeg = doc["rows"]
    assert teacher["bytes"] is None and teacher["penalty"] == 0 and teacher["top1"] == 100
    for row in (fs, jpeg):
        assert row["bpp_actual"] == pytest.approx(row["bytes"] * 8 / (224 * 224))
        assert row["kb"] == pytest.approx(row["bytes"] / 1000)
        assert row["encode_ms"] > 0 and row["decode_ms"] > 0 and row["infer_ms"] > 0
    assert jpeg["bpp_estimated"] is None and jpeg["quality"] == 30
    assert 0 < fs["bpp_estimated"] <= fs["bpp_actual"]  # real bytes include header and overhead
    with open(paths["csv"], newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == list(SCHEMA)
        assert len(list(reader)) == 3
    assert set(doc["summary"][0]["within"]) == {"frankensplit", "jpeg"}
    assert "| method | setting | top-1" in paths["markdown"].read_text()
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = list(read_records(paths["records"]))
    assert len(records) == 3 * 4 and all(list(r) == list(RECORD_FIELDS) for r in records)


def test_interrupted_then_resumed_equals_one_run(
    model: FrankenSplit, data: Dataset, one_run: EvalResult, tmp_path: Path
) -> None:
    files, labels = data
    run_eval([model], files[:2], labels[:2], tmp_path, CODECS, plot=False)  # "interrupted"
    with open(tmp_path / RECORDS_FILE, "a") as f:
        f.write('{"teacher": "tf_efficientnet_lite0", "meth')  # killed mid-write
    with pytest.raises(ValueError, match="resume"):
        run_eval([model], files, labels, tmp_path, CODECS)
    resumed = run_eval([model], files, labels, tmp_path, CODECS, resume=True, plot=False)
    strip = [{k: v for k, v in r.items() if k not in TIMES} for r in resumed.rows]
    assert strip == [{k: v for k, v in r.items() if k not in TIMES} for r in one_run.rows]
    assert len(list(read_records(tmp_path / RECORDS_FILE))) == 3 * 4  # nothing measured twice


def test_resume_refuses_another_dataset(
    model: FrankenSplit, data: Dataset, tmp_path: Path
) -> None:
    files, labels = data
    run_eval([model], files[:1], labels[:1], tmp_path, {}, plot=False)
    with pytest.raises(ValueError, match="another dataset"):
        run_eval([model], files[1:2], labels[1:2], tmp_path, {}, resume=True, plot=False)


def test_resume_refuses_records_of_changed_weights(
    model: FrankenSplit, data: Dataset, tmp_path: Path
) -> None:
    import torch

    from frankensplit.models.zoo import create_model

    files, labels = data
    run_eval([model], files[:1], labels[:1], tmp_path, {}, plot=False)
    run_eval([model], files[:2], labels[:2], tmp_path, {}, resume=True, plot=False)  # same weights
    retrained = create_model(model.model_id)  # the same id, its decoder moved a little
    with torch.no_grad():
        next(retrained.g_s.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match="other weights"):
        run_eval([retrained], files[:2], labels[:2], tmp_path, {}, resume=True, plot=False)
    assert len(list(read_records(tmp_path / RECORDS_FILE))) == 2 * 2  # nothing appended
    before = {record_key(r): r for r in read_records(tmp_path / RECORDS_FILE)}
    run_eval([retrained], files[:2], labels[:2], tmp_path, {}, resume=True, plot=False,
             remeasure=[model.model_id])
    after = {record_key(r): r for r in read_records(tmp_path / RECORDS_FILE)}
    assert after.keys() == before.keys()  # the model's two images measured again, once each
    ours = [k for k in after if k[2] == model.model_id]
    assert len(ours) == 2 and all(after[k]["encode_ms"] != before[k]["encode_ms"] for k in ours)
    with pytest.raises(ValueError, match="not among the models"):
        run_eval([retrained], files[:2], labels[:2], tmp_path, {}, resume=True, plot=False,
                 remeasure=["fs-typo"])
    teacher = [k for k in after if k[1] == "teacher"]
    assert teacher and all(after[k] == before[k] for k in teacher)  # the teacher's rows resumed
    run_eval([retrained], files[:2], labels[:2], tmp_path, {}, resume=True, plot=False)  # agrees


def test_unlabelled_scores_agreement_with_teacher(
    model: FrankenSplit, data: Dataset, tmp_path: Path
) -> None:
    files, _ = data
    result = run_eval([model], files[:2], [-1, -1], tmp_path, {}, plot=False)
    teacher, fs = result.rows
    assert teacher["reference"] == fs["reference"] == "teacher"
    assert teacher["top1"] == teacher["top5"] == 100.0


def test_eval_command(model: FrankenSplit, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from frankensplit.cli import main

    argv = ["eval", "--model", "fs-lite0-untrained", "--data", str(TINY16), "--limit", "2",
            "--codecs", "jpeg", "--qualities", "30", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert (tmp_path / "results.csv").is_file() and (tmp_path / "rate_accuracy.png").is_file()
    capsys.readouterr()
    assert main(argv) == 2  # the log exists: no silent overwrite
    assert "resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    assert main([*argv, "--codecs", "nope"]) == 2


def test_one_backbone_at_two_input_sizes_gets_two_teacher_groups(
    model: FrankenSplit, data: Dataset, tmp_path: Path
) -> None:
    from frankensplit.models.architecture import Architecture

    small = Architecture("tf_efficientnet_lite0", input_size=192, crop_pct=0.875).build(
        "fs-lite0-192")
    small.eval().update(force=True)
    doc = json.loads(run_eval([model, small], *data, tmp_path, {}, data="tiny16")
                     .paths["json"].read_text())
    rows = [(r["teacher"], r["method"], r["setting"]) for r in doc["rows"]]
    assert rows == [
        ("tf_efficientnet_lite0", "teacher", "uncompressed"),
        ("tf_efficientnet_lite0", "frankensplit", "fs-lite0-untrained"),
        ("tf_efficientnet_lite0@192px", "teacher", "uncompressed"),
        ("tf_efficientnet_lite0@192px", "frankensplit", "fs-lite0-192"),
    ]
    fs = next(r for r in doc["rows"] if r["setting"] == "fs-lite0-192")
    assert fs["bytes"] < next(r for r in doc["rows"] if r["setting"] == "fs-lite0-untrained")["bytes"]
    # one label, one preprocessing: a model of that size but another crop is refused
    from frankensplit.eval.runner import plan

    other = Architecture("tf_efficientnet_lite0", input_size=192, crop_pct=0.9).build(
        "fs-lite0-192-crop", backbone=small.teacher)
    with pytest.raises(ValueError, match="fs-lite0-192-crop preprocesses as"):
        plan([small, other], {})


def _results_benchmark():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks/results.py"
    spec = importlib.util.spec_from_file_location("results_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_results_page_names_what_was_measured_not_how_the_run_resumed() -> None:
    module = _results_benchmark()
    argv = ["--resume", "--remeasure", "fs-a,fs-b", "--limit", "16", "--remeasure=fs-c",
            "--no-progress", "--threads", "2"]
    assert module.published_args(argv) == ["--limit", "16", "--threads", "2"]


def test_results_remeasures_a_source_and_its_reuse_decoder_each_in_its_own_run(
    tmp_path: Path,
) -> None:
    # A retrained reuse source goes with its refitted decoders: the source's rows are in the
    # codec run (readme_eval), the decoder's in the reuse run (reuse_eval); each run drops and
    # measures its own, and run_eval would refuse the other's ids.
    module = _results_benchmark()
    models = "fs-lite0-l4,fs-lite0-l4.lite1,fs-lite1-l1,fs-lite1-l4,fs-lite1-l16"
    base = ["--models", models, "--codecs", "", "--limit", "1", "--out", str(tmp_path),
            "--no-docs", "--no-progress"]
    assert module.main(base) == 0
    logs = {d: tmp_path / d / RECORDS_FILE for d in ("readme_eval", "reuse_eval")}
    before = {d: {record_key(r): r for r in read_records(p)} for d, p in logs.items()}
    again = ["fs-lite0-l4", "fs-lite0-l4.lite1"]
    assert module.main([*base, "--resume", "--remeasure", ",".join(again)]) == 0
    for d, p in logs.items():
        after = {record_key(r): r for r in read_records(p)}
        assert after.keys() == before[d].keys()
        for k, r in after.items():
            measured_again = r["encode_ms"] != before[d][k]["encode_ms"]
            assert measured_again == (k[2] in again), (d, k)
    assert module.main([*base, "--resume", "--remeasure", "fs-typo"]) == 2
    assert module.main([*base, "--resume"]) == 0  # a later resume still names both
    page = (tmp_path / "README_results.md").read_text()
    assert "`fs-lite0-l4`, `fs-lite0-l4.lite1`: retrained and measured again" in page


def test_results_page_names_every_model_remeasured_since_the_fresh_run(tmp_path: Path) -> None:
    # Two resumed runs remeasured different models: the page after the second names both; a
    # fresh run starts the list anew.
    module = _results_benchmark()
    assert module.remeasured_since_fresh(tmp_path, ["fs-a"], resume=True) == ["fs-a"]
    assert module.remeasured_since_fresh(tmp_path, ["fs-b", "fs-a"], resume=True) == ["fs-a", "fs-b"]
    assert module.remeasured_since_fresh(tmp_path, [], resume=True) == ["fs-a", "fs-b"]
    assert module.remeasured_since_fresh(tmp_path, [], resume=False) == []
    assert module.remeasured_since_fresh(tmp_path, ["fs-c"], resume=True) == ["fs-c"]

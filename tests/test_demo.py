"""``frankensplit demo`` and the shipped dev-set results it plots.

The demo runs once (module fixture: the real command on two bundled photos with the zoo's default
model); the tests check what it prints against the real pipeline, and the shipped results file
against the zoo index, so the demo, the README and ``frankensplit models`` quote one measurement.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from frankensplit.cli import main
from frankensplit.eval.schema import split_rate_setting, variable_rate_method
from frankensplit.eval.shipped import (
    NOT_YET_FAIR,
    curve,
    equal_top1,
    load_results,
    plot_results,
    split_baselines,
    variable_rate_of,
    write_results,
)
from frankensplit.models.zoo import MODELS, default_model_id
from frankensplit.models.zoo_index import rate_setting

REPO = Path(__file__).resolve().parents[1]
_BYTES = re.compile(r"^(\S+): ([\d,]+) bytes on the wire", re.MULTILINE)
_PRED = re.compile(r"\d\. .{28} +(\d+\.\d)%")
_RATE = re.compile(r"^ +(\d+) \( *([\d.]+)\) +([\d,]+) ", re.MULTILINE)  # index (lambda) bytes


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(photos, printed text, out folder, torch threads after the run) of one demo run."""
    import torch

    from frankensplit.data import bundled_photos
    from frankensplit.threads import torch_threads

    photos = bundled_photos()[:2]
    if len(photos) < 2:
        pytest.skip("scikit-image's sample photos are not installed")
    folder = tmp_path_factory.mktemp("photos")
    for path in photos:
        shutil.copy(path, folder / path.name)
    out = tmp_path_factory.mktemp("demo")
    text = io.StringIO()
    with torch_threads(2), contextlib.redirect_stdout(text):
        code = main(["demo", "--images", str(folder), "--out", str(out)])
        threads_after = torch.get_num_threads()
    assert code == 0
    return sorted(folder.iterdir()), text.getvalue(), out, threads_after


def test_demo_prints_the_bytes_of_the_real_packets(demo, default_model) -> None:
    """The top-5 block's bytes are the packet the default codes (at its default rate, for a
    variable-rate default), and a variable-rate default's line per rate each rate's packet."""
    from frankensplit.data import load_image, make_transform
    from frankensplit.threads import torch_threads

    photos, text, _, _ = demo
    printed = {name: int(size.replace(",", "")) for name, size in _BYTES.findall(text)}
    assert sorted(printed) == [p.name for p in photos]
    transform = make_transform(default_model.data_config, "eval")
    rates = default_model.rates
    for path in photos:
        x = transform(load_image(path)).unsqueeze(0)
        with torch_threads(1):  # as the demo ran: a rounding tie may fall otherwise elsewhere
            (packet,) = default_model.edge.encode(x)
            sizes = [len(default_model.edge.encode(x, r)[0]) for r in range(len(rates or ()))]
        assert printed[path.name] == len(packet), path.name
        if rates is not None:
            assert len(packet) == sizes[default_model.default_rate]
            block = text.split(f"\n{path.name}: {len(packet):,} bytes on the wire")[1]
            block = block.split("\n\n")[0]  # its top-5, then a line per rate
            rows = [(int(r), float(v), int(b.replace(",", ""))) for r, v, b in _RATE.findall(block)]
            assert rows == [(r, rates[r], sizes[r]) for r in range(len(rates))], path.name


def test_demo_top5_probabilities_are_sorted_and_sum_to_at_most_one(demo) -> None:
    photos, text, _, _ = demo
    blocks = text.split("bytes on the wire")[1:]
    assert len(blocks) == len(photos)
    for block in blocks:
        rows = [_PRED.findall(line) for line in block.splitlines() if _PRED.search(line)][:5]
        assert len(rows) == 5 and all(len(r) == 2 for r in rows)  # teacher | FrankenSplit
        for column in zip(*rows):
            probs = [float(p) for p in column]
            assert probs == sorted(probs, reverse=True)
            assert sum(probs) <= 100.0 + 5 * 0.05  # printed to 0.1%


def test_demo_plots_the_shipped_results_and_leaves_threads_alone(demo) -> None:
    _, text, out, threads_after = demo
    plot = out / "rate_accuracy.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert threads_after == 2  # the demo runs on 1 thread (its default), for its run only
    doc = load_results()
    default = _default_setting()
    row = next(r for r in doc["rows"] if r["setting"] == default)
    assert re.search(rf"{re.escape(default)} \* +{row['top1']:.2f} +{row['bytes_per_image']:,}",
                     text)
    assert len(re.findall(r" \* +\d", text)) == 1, "one row marked: the default (at its rate)"
    assert doc["commit"][:7] in text and "make results" in text and "docs/results.md" in text
    assert "teacher's answer" not in text  # no per-image oracle quality any more


def test_demo_reads_a_split_baseline_across_the_range_it_shares(demo) -> None:
    """The Entropic Student's curve ends below every FrankenSplit row's top-1, so the tables
    have no column for it (an all-'-' column says nothing); its line reads the saving across the
    top-1 range both curves cover, as computed from the shipped file."""
    from frankensplit.eval.summary import overlap_saving

    _, text, _, _ = demo
    doc = load_results()
    teacher = next(iter(doc["teachers"]))
    for method in split_baselines(doc):
        label = doc["methods"][method]["label"]
        o = overlap_saving(curve(doc, teacher, "frankensplit"), curve(doc, teacher, method))
        assert o is not None, f"{method} shares no top-1 range with FrankenSplit"
        assert (f"{label} (" in text and f"both cover ({o.low:.2f}-{o.high:.2f}%), FrankenSplit's "
                f"fixed-rate models need {100 * o.min_saving:.0f}-{100 * o.max_saving:.0f}% "
                "fewer bytes at equal top-1." in text)
    for header in (line for line in text.splitlines() if line.lstrip().startswith("model ")):
        assert all(doc["methods"][m]["label"] not in header for m in split_baselines(doc))


def test_demo_without_photos_is_a_clear_error(tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["demo", "--images", str(empty)]) == 2
    assert "error" in capsys.readouterr().err.lower()


def test_shipped_results_agree_with_the_zoo_index() -> None:
    # The default's row is what the demo marks and the README quotes; every shipped model in
    # the file must carry the index's dev-set figures (bytes to the file's resolution).
    # A variable-rate model's rows (``<id>@<lambda>``) carry its figures at that rate
    # (``dev1286_top1@<lambda>``).
    doc = load_results()
    n = doc["data"]["images"]
    rows = {r["setting"]: r for r in doc["rows"] if split_rate_setting(r["setting"])[0] in MODELS}
    assert _default_setting() in rows
    for setting, row in rows.items():
        model_id, lmbda = split_rate_setting(setting)
        metrics, at = MODELS.get(model_id).metrics, "" if lmbda is None else f"@{lmbda:g}"
        assert row["top1"] == metrics[f"dev{n}_top1{at}"], setting
        assert row["top5"] == metrics[f"dev{n}_top5{at}"], setting
        assert abs(row["bytes_per_image"] - metrics[f"dev{n}_bytes_per_image{at}"]) \
            <= doc["bytes_resolution"] / 2, setting
        assert row["bpp_actual"] == metrics[f"dev{n}_bpp_actual{at}"], setting
        assert doc["teachers"][row["teacher"]]["top1"] == metrics[f"dev{n}_teacher_top1"]


def _default_setting() -> str:
    """The zoo default's results setting: its id, or ``<id>@<lambda>`` at its default rate."""
    entry = MODELS.get(default_model_id())
    rates = entry.architecture.rates
    return rate_setting(entry.model_id, None if rates is None else rates[entry.default_rate])


def test_shipped_results_are_fixed_settings_with_their_provenance() -> None:
    doc = load_results()
    assert doc["data"]["reference"] == "label" and doc["data"]["images"] > 1000
    assert re.fullmatch(r"[0-9a-f]{40}", doc["commit"])
    assert doc["command"].startswith("python benchmarks/results.py")
    if (REPO / ".git").exists():
        assert subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", doc["commit"]],
                              check=False).returncode == 0
    seen = set()
    for row in doc["rows"]:
        key = (row["teacher"], row["method"], row["setting"])
        assert key not in seen
        seen.add(key)
        model_id, lmbda = split_rate_setting(row["setting"])
        if row["setting"] in MODELS:  # a split model: the setting is its id
            assert MODELS.get(row["setting"]).architecture.method == row["method"]
        elif lmbda is not None and model_id in MODELS:  # one rate of a variable-rate model
            arch = MODELS.get(model_id).architecture
            assert lmbda in arch.rates and row["method"] == variable_rate_method(arch.method)
            assert doc["methods"][row["method"]]["variable_rate_of"] == arch.method
        else:  # a codec: one number (quality, distance or lambda) for every image
            float(row["setting"])
        assert row["bytes_per_image"] > 0 and 0 <= row["top1"] <= row["top5"] <= 100
    for method, info in doc["methods"].items():
        assert info["fair"] == (method not in NOT_YET_FAIR)


def _benchmark(name: str):
    """``benchmarks/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark",
                                                  REPO / f"benchmarks/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(method, setting, top1, num_bytes):
    """An eval result row with the columns the shipped file and the benchmarks read."""
    return {"teacher": "t", "method": method, "setting": setting, "quality": None, "images": 2,
            "top1": top1, "top5": top1 + 5, "teacher_top1": 80.0, "bytes": num_bytes,
            "bpp_actual": None if num_bytes is None else num_bytes * 8 / 50176,
            "bpp_estimated": None}


def _vr_rows() -> list[dict]:
    """The teacher, two fixed-rate FrankenSplit models, JPEG and a variable-rate model's rates
    (top-1 on two images: 0, 50 or 100%)."""
    return [_row("teacher", "uncompressed", 80.0, None), _row("frankensplit", "fs-a", 50.0, 1200.0),
            _row("frankensplit", "fs-b", 100.0, 5000.0), _row("jpeg", "10", 0.0, 1500.0),
            _row("jpeg", "50", 100.0, 6000.0),
            _row("frankensplit_vr", "fs-vr@16", 50.0, 1000.0),
            _row("frankensplit_vr", "fs-vr@4", 100.0, 2500.0),
            _row("frankensplit_vr", "fs-vr@1", 100.0, 5500.0)]


def _shipped(tmp_path: Path, rows: list[dict]) -> Path:
    """benchmarks/results.py's results file of ``rows`` (two labelled images), written."""
    result = type("Result", (), {"rows": rows, "meta": {"data": "d", "images": 2,
                                                        "reference": "label"}})
    doc = _benchmark("results").shipped_results(result, tmp_path, "python benchmarks/results.py",
                                                [])
    return write_results(tmp_path / "results_dev.json", doc)


def test_results_written_by_the_benchmark_parse_and_compare(tmp_path: Path) -> None:
    # benchmarks/results.py's file from eval rows, written and read back.
    module = _benchmark("results")
    row = _row
    rows = [row("teacher", "uncompressed", 80.0, None), row("frankensplit", "fs-a", 70.004, 999.6),
            row("frankensplit", "fs-b", 79.0, 3000.0), row("jpeg", "10", 60.0, 1500.0),
            row("jpeg", "50", 75.0, 3000.0)]
    result = type("Result", (), {"rows": rows, "meta": {"data": "d", "images": 2,
                                                        "reference": "label"}})
    doc = module.shipped_results(result, tmp_path, "python benchmarks/results.py", [])
    back = load_results(write_results(tmp_path / "results_dev.json", doc))
    assert back == doc and back["rows"][0]["bytes_per_image"] == 1000
    assert back["teachers"] == {"t": {"top1": 80.0, "top5": 85.0}}
    table = equal_top1(back, "t")
    assert table[0]["baselines"] == {"jpeg": pytest.approx(1500 * 2 ** (10 / 15))}
    assert table[1]["baselines"] == {"jpeg": None}  # 79% is beyond JPEG's measured curve


def test_the_results_file_tells_a_variable_rate_model_from_the_fixed_rate_ones(tmp_path) -> None:
    doc = load_results(_shipped(tmp_path, _vr_rows()))
    assert doc["methods"]["frankensplit_vr"]["variable_rate_of"] == "frankensplit"
    assert doc["methods"]["frankensplit_vr"]["label"] == "FrankenSplit, variable rate"
    assert [variable_rate_of(doc, m) for m in ("frankensplit", "jpeg")] == [None, None]
    fixed = equal_top1(doc, "t")  # the codecs are the baselines, not the other FrankenSplit curve
    assert [r["setting"] for r in fixed] == ["fs-a", "fs-b"]
    assert all(set(r["baselines"]) == {"jpeg"} for r in fixed)
    rates = equal_top1(doc, "t", "frankensplit_vr")
    assert [r["setting"] for r in rates] == ["fs-vr@16", "fs-vr@4", "fs-vr@1"]
    assert rates[0]["baselines"] == {"jpeg": pytest.approx(1500 * 4 ** 0.5)}
    older = {**doc, "methods": {m: {k: v for k, v in info.items() if k != "variable_rate_of"}
                                for m, info in doc["methods"].items()}}
    assert variable_rate_of(older, "frankensplit_vr") is None  # written before the field
    bad = {**doc, "methods": {**doc["methods"], "jpeg": {**doc["methods"]["jpeg"],
                                                         "variable_rate_of": 1}}}
    with pytest.raises(ValueError, match="methods.jpeg"):
        load_results(write_results(tmp_path / "bad.json", bad))


def test_split_baselines_are_the_fair_methods_that_are_not_codecs(tmp_path) -> None:
    rows = [*_vr_rows(), _row("entropic_student", "es-x", 50.0, 4000.0),
            _row("bmshj2018-factorized", "0.0067", 50.0, 3000.0)]
    doc = load_results(_shipped(tmp_path, rows))
    assert split_baselines(doc) == ["entropic_student"]  # not a codec, not NOT_YET_FAIR's Balle
    assert curve(doc, "t", "jpeg") == [(1500, 0.0), (6000, 100.0)]


def test_the_demo_plot_draws_a_variable_rate_model_as_its_own_line(monkeypatch, tmp_path) -> None:
    from matplotlib.figure import Figure

    lines = {}

    def savefig(fig, path, **_):
        (ax,) = fig.axes
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        lines.update({line.get_label(): line for line in ax.get_lines()
                      if line.get_label() in legend})

    monkeypatch.setattr(Figure, "savefig", savefig)
    doc = load_results(_shipped(tmp_path, _vr_rows()))
    plot_results(tmp_path / "plot.png", doc, "t", highlight="fs-b")
    vr = lines["FrankenSplit, variable rate"]
    assert list(vr.get_xdata()) == [1.0, 2.5, 5.5] and vr.get_linestyle() == "--"
    assert list(lines["FrankenSplit"].get_xdata()) == [1.2, 5.0]
    assert vr.get_color() != lines["JPEG"].get_color()


def _records(path: Path, tops: dict[str, tuple[bool, bool]]) -> Path:
    """A record log of two images: setting -> (image 0 right, image 1 right)."""
    lines = [json.dumps({"teacher": "t", "method": "frankensplit_vr", "setting": setting,
                         "index": i, "correct1": right})
             for setting, both in tops.items() for i, right in enumerate(both)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_vr_report_reads_the_variable_rate_rows_from_the_results_file(tmp_path, capsys) -> None:
    results = _shipped(tmp_path, _vr_rows())
    records = _records(tmp_path / "records.jsonl", {"fs-vr@16": (True, False),
                                                    "fs-vr@4": (True, True),
                                                    "fs-vr@1": (True, True)})
    vr_report = _benchmark("vr_report")
    assert vr_report.main(["--results", str(results), "--records", str(records)]) == 0
    out = capsys.readouterr().out
    assert "Every row from one run" in out and "## fs-vr (teacher t: 80.00%)" in out
    assert "| fs-vr@16 | 1.00 | 0.159 | 50.00 | 50.00 | - | " in out  # val 2, other 0
    assert "| fs-vr@4 | 2.50 | 0.399 | 100.00 | 100.00 | - | " in out
    assert "- fs-a: 50.00% at 1.20 KB; variable rate 59.95 (+9.95 points)" in out  # log-linear
    assert "above the fixed-rate curve at their own bytes (interpolated on it): 1 of the 1" in out
    _records(records, {"fs-vr@16": (True, True), "fs-vr@4": (True, True),
                       "fs-vr@1": (True, True)})  # another run's
    assert vr_report.main(["--results", str(results), "--records", str(records)]) == 0
    assert "Validation / other columns: none" in capsys.readouterr().out
    fixed_only = _shipped(tmp_path, [r for r in _vr_rows() if r["method"] != "frankensplit_vr"])
    assert vr_report.main(["--results", str(fixed_only)]) == 2
    assert "--eval DIR" in capsys.readouterr().err


def test_vr_report_compares_past_the_curves_end_with_its_nearest_rate() -> None:
    at = _benchmark("vr_report").at_fixed_bytes
    vr = [(1000.0, 60.0), (4000.0, 80.0)]
    assert at(vr, 2000.0, 72.0) == "70.00 (-2.00 points)"  # log-linear: halfway
    assert at(vr, 9000.0, 79.0) == ("outside its curve; its nearest rate, with fewer bytes "
                                    "(4.00 KB): 80.00 (+1.00 points)")
    assert at(vr, 900.0, 50.0) == ("outside its curve; its nearest rate, with more bytes "
                                   "(1.00 KB): 60.00 (+10.00 points)")


def test_vr_report_still_reads_an_eval_folder(tmp_path, capsys) -> None:
    from frankensplit.eval.report import write_json

    results = _shipped(tmp_path, [r for r in _vr_rows() if r["method"] != "frankensplit_vr"])
    folder = tmp_path / "eval_vr"
    folder.mkdir()
    rows = [r for r in _vr_rows() if r["method"] in ("teacher", "frankensplit_vr")]
    write_json(folder / "results.json", rows, [], {"data": "d", "images": 2})
    _records(folder / "records.jsonl", {"fs-vr@16": (False, True), "fs-vr@4": (True, True),
                                        "fs-vr@1": (True, True)})
    assert _benchmark("vr_report").main(["--eval", str(folder), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "Variable-rate eval:" in out and "another run on the same images" in out
    assert "| fs-vr@16 | 1.00 | 0.159 | 50.00 | 50.00 | - | " in out  # its own records


def test_results_order_puts_a_variable_rate_model_after_its_fixed_rate_ones() -> None:
    from frankensplit.models.architecture import Architecture
    from frankensplit.models.zoo_index import ModelEntry

    lite0, lite1 = Architecture("tf_efficientnet_lite0"), Architecture("tf_efficientnet_lite1")
    vr = Architecture("tf_efficientnet_lite0", entropy="gained_factorized", rates=(64.0, 1.0))
    es = Architecture("tf_efficientnet_lite0", method="entropic_student",
                      encoder="entropic_student", decoder="entropic_student",
                      latent_channels=24, split_reduction=4)
    entries = [ModelEntry("fs1-l1", lite1, "w", lmbda=1.0), ModelEntry("fs-vr", vr, "w"),
               ModelEntry("fs-l4", lite0, "w", lmbda=4.0), ModelEntry("es-l4", es, "w", lmbda=4.0),
               ModelEntry("fs-l0.25", lite0, "w", lmbda=0.25)]
    order = sorted(entries, key=_benchmark("results").result_order)
    assert [e.model_id for e in order] == ["es-l4", "fs-l0.25", "fs-l4", "fs-vr", "fs1-l1"]

"""``frankensplit demo`` and the shipped dev-set results it plots.

The demo runs once (module fixture: the real command on two bundled photos with the zoo's default
model); the tests check what it prints against the real pipeline, and the shipped results file
against the zoo index, so the demo, the README and ``frankensplit models`` quote one measurement.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from frankensplit.cli import main
from frankensplit.eval.shipped import (
    NOT_YET_FAIR,
    equal_top1,
    load_results,
    write_results,
)
from frankensplit.models.zoo import MODELS, default_model_id

REPO = Path(__file__).resolve().parents[1]
_BYTES = re.compile(r"^(\S+): ([\d,]+) bytes on the wire", re.MULTILINE)
_PRED = re.compile(r"\d\. .{28} +(\d+\.\d)%")


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
    from frankensplit.data import load_image, make_transform
    from frankensplit.threads import torch_threads

    photos, text, _, _ = demo
    printed = {name: int(size.replace(",", "")) for name, size in _BYTES.findall(text)}
    assert sorted(printed) == [p.name for p in photos]
    transform = make_transform(default_model.data_config, "eval")
    for path in photos:
        with torch_threads(1):  # as the demo ran: a rounding tie may fall otherwise elsewhere
            (packet,) = default_model.edge.encode(transform(load_image(path)).unsqueeze(0))
        assert printed[path.name] == len(packet), path.name


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
    default = default_model_id()
    row = next(r for r in doc["rows"] if r["setting"] == default)
    assert re.search(rf"{re.escape(default)} \* +{row['top1']:.2f} +{row['bytes_per_image']:,}",
                     text)
    assert doc["commit"][:7] in text and "make results" in text and "docs/results.md" in text
    assert "teacher's answer" not in text  # no per-image oracle quality any more


def test_demo_without_photos_is_a_clear_error(tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["demo", "--images", str(empty)]) == 2
    assert "error" in capsys.readouterr().err.lower()


def test_shipped_results_agree_with_the_zoo_index() -> None:
    # The default's row is what the demo marks and the README quotes; every shipped model in
    # the file must carry the index's dev-set figures (bytes to the file's resolution).
    doc = load_results()
    n = doc["data"]["images"]
    rows = {r["setting"]: r for r in doc["rows"] if r["setting"] in MODELS}
    assert default_model_id() in rows
    for model_id, row in rows.items():
        metrics = MODELS.get(model_id).metrics
        assert row["top1"] == metrics[f"dev{n}_top1"], model_id
        assert row["top5"] == metrics[f"dev{n}_top5"], model_id
        assert abs(row["bytes_per_image"] - metrics[f"dev{n}_bytes_per_image"]) \
            <= doc["bytes_resolution"] / 2, model_id
        assert row["bpp_actual"] == metrics[f"dev{n}_bpp_actual"], model_id
        assert doc["teachers"][row["teacher"]]["top1"] == metrics[f"dev{n}_teacher_top1"]


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
        if row["setting"] in MODELS:  # a split model: the setting is its id
            assert MODELS.get(row["setting"]).architecture.method == row["method"]
        else:  # a codec: one number (quality, distance or lambda) for every image
            float(row["setting"])
        assert row["bytes_per_image"] > 0 and 0 <= row["top1"] <= row["top5"] <= 100
    for method, info in doc["methods"].items():
        assert info["fair"] == (method not in NOT_YET_FAIR)


def test_results_written_by_the_benchmark_parse_and_compare(tmp_path: Path) -> None:
    # benchmarks/results.py's file from eval rows, written and read back.
    spec = importlib.util.spec_from_file_location("results_benchmark",
                                                  REPO / "benchmarks/results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def row(method, setting, top1, num_bytes):
        return {"teacher": "t", "method": method, "setting": setting, "top1": top1,
                "top5": top1 + 5, "bytes": num_bytes,
                "bpp_actual": None if num_bytes is None else num_bytes * 8 / 50176,
                "bpp_estimated": None}

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

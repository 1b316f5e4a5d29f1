"""``frankensplit demo``, the main job: the shipped models on real photos, beside JPEG.

Runs the real command (shipped default weights, real teacher, real coding) on three of the
labelled fixture photos with one baseline codec, so it stays a few seconds long.
"""

from __future__ import annotations

import json
import shutil

import pytest

from frankensplit.cli import main
from frankensplit.models.zoo import MODELS, default_model_id


@pytest.fixture
def photos(tiny16, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted(tiny16.glob("*.jpg"))[:3]:
        shutil.copy(path, folder / path.name)
    return folder


def test_demo_prints_one_row_per_photo_and_writes_the_comparison(photos, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--images", str(photos), "--codecs", "jpeg", "--out", str(out),
                 "--threads", "1"]) == 0
    text = capsys.readouterr().out
    default = default_model_id()
    for path in photos.iterdir():
        assert path.name[:22] in text  # the table truncates names to 22 characters
    assert f"FrankenSplit ({default}): mean" in text and "jpeg: mean" in text
    for name in ("rate_accuracy.png", "summary.md", "results.json", "results.csv"):
        assert (out / name).is_file(), name
    rows = json.loads((out / "results.json").read_text())["rows"]
    settings = {r["setting"] for r in rows if r["method"] == "frankensplit"}
    # The embedded defaults show every shipped model of the default's teacher: a curve.
    shipped = {m for m in MODELS.names() if MODELS.get(m).trained
               and MODELS.get(m).architecture.teacher == MODELS.get(default).architecture.teacher
               and MODELS.get(m).architecture.encoder == MODELS.get(default).architecture.encoder}
    assert settings == shipped and default in settings
    fs_rows = [r for r in rows if r["method"] == "frankensplit"]
    assert all(r["bytes"] > 0 and 0 <= r["top1"] <= 100 for r in fs_rows)


def test_demo_with_one_named_model_evaluates_only_that_model(photos, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--images", str(photos), "--codecs", "jpeg", "--out", str(out),
                 "--model", default_model_id(), "--threads", "1"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {r["setting"] for r in rows if r["method"] == "frankensplit"} == {default_model_id()}


def test_demo_without_photos_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["demo", "--images", str(empty)]) == 2
    assert "error" in capsys.readouterr().err.lower()

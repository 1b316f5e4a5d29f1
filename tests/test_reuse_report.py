"""The reuse report: reuse decoders read against their backbone's end-to-end curve (pure data)."""

from __future__ import annotations

import math

import pytest

from frankensplit.eval.reuse import reuse_markdown, reuse_rows, top1_at_bytes


def row(teacher: str, method: str, setting: str, top1: float, num_bytes: float | None) -> dict:
    return {"teacher": teacher, "method": method, "setting": setting, "top1": top1,
            "bytes": num_bytes}


ROWS = [
    row("tf_efficientnet_lite1", "teacher", "uncompressed", 84.0, None),
    row("tf_efficientnet_lite1", "frankensplit", "fs-lite1-l16", 70.0, 3000.0),
    row("tf_efficientnet_lite1", "frankensplit", "fs-lite1-l4", 76.0, 6000.0),
    row("tf_efficientnet_lite1@224px", "teacher", "uncompressed", 83.0, None),
    row("tf_efficientnet_lite1@224px", "frankensplit", "fs-lite0-l4.lite1", 74.0, 5000.0),
]


def test_top1_is_read_linear_in_log_bytes_and_never_extrapolated():
    curve = [(1000.0, 60.0), (4000.0, 80.0)]
    assert top1_at_bytes(curve, 2000.0) == pytest.approx(70.0)  # halfway in log bytes
    assert top1_at_bytes(curve, 1000.0) == 60.0 and top1_at_bytes(curve, 4000.0) == 80.0
    assert top1_at_bytes(curve, 999.0) is None and top1_at_bytes(curve, 4001.0) is None
    assert top1_at_bytes([(5000.0, 70.0)], 5000.0) == 70.0
    assert top1_at_bytes([(5000.0, 70.0)], 4000.0) is None


def test_reuse_rows_pair_each_decoder_with_its_backbone_and_both_teacher_rows():
    (r,) = reuse_rows(ROWS, {"fs-lite0-l4.lite1": ["fs-lite1-l16", "fs-lite1-l4"]})
    assert (r.backbone, r.teacher_top1, r.teacher_top1_edge) == ("tf_efficientnet_lite1", 84.0, 83.0)
    t = math.log(5000 / 3000) / math.log(6000 / 3000)
    assert r.e2e_top1 == pytest.approx(70.0 + t * 6.0)
    assert r.cost == pytest.approx(r.e2e_top1 - 74.0)
    table = reuse_markdown([r])
    assert "fs-lite0-l4.lite1 | 74.00 | 5.0 |" in table and "fs-lite1-l4 (6.0: 76.00)" in table
    (alone,) = reuse_rows(ROWS, {"fs-lite0-l4.lite1": ["fs-lite1-l4"]})
    assert alone.e2e_top1 is None and alone.cost is None  # one point at other bytes: not covered
    assert "not covered" in reuse_markdown([alone])


def test_reuse_rows_refuse_missing_models_and_other_backbones():
    with pytest.raises(ValueError, match="no measured rows"):
        reuse_rows(ROWS, {"fs-lite0-l4.lite1": ["fs-lite2-l4"]})
    other = [*ROWS, row("tf_efficientnet_lite2", "frankensplit", "fs-lite2-l4", 77.0, 6000.0)]
    with pytest.raises(ValueError, match="paired with codecs of"):
        reuse_rows(other, {"fs-lite0-l4.lite1": ["fs-lite2-l4"]})


def test_default_pairs_pair_each_shipped_reuse_model_with_its_backbones_codecs():
    from frankensplit.eval.reuse import default_pairs
    from frankensplit.models.zoo_index import MODELS

    pairs = default_pairs()
    assert pairs, "no shipped reuse model: docs/reuse.md's table has nothing to show"
    for reuse, e2e in pairs.items():
        entry = MODELS.get(reuse)
        assert entry.architecture.reuses and e2e
        for m in e2e:  # the backbone's own codecs, never another reuse model or backbone
            other = MODELS.get(m).architecture
            assert other.teacher == entry.architecture.teacher and other.reuses is None


def test_pair_ids_lists_each_model_once_in_order():
    from frankensplit.eval.reuse import pair_ids

    pairs = {"fs-lite0-l16.lite1": ["fs-lite1-l16", "fs-lite1-l4"],
             "fs-lite0-l4.lite1": ["fs-lite1-l16", "fs-lite1-l4"]}
    assert pair_ids(pairs) == ["fs-lite0-l16.lite1", "fs-lite1-l16", "fs-lite1-l4",
                               "fs-lite0-l4.lite1"]

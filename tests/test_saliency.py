"""Saliency maps: target layers per family, maps in [0, 1], the cache (hit, resume, invalidation),
the dataset that serves them, the CLI, and one saliency-guided training step.

Tiny random timm models check every family's layers and shapes; the real EfficientNet-Lite0 teacher
(offline weights) on 4 fixture images checks the cache end to end.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from frankensplit.backbones import create_classifier, resolve_data_config
from frankensplit.data import ImageDataset, make_transform
from frankensplit.saliency import (
    MAP_SIZE,
    SaliencyDataset,
    TargetLayers,
    build_cache,
    saliency_maps,
    target_layers,
)
from frankensplit.threads import torch_threads

TINY16 = Path(__file__).resolve().parents[2] / "shared/data/fixtures/tiny16"

#: (timm name, tiny kwargs, expected target layers, layout) per family.
FAMILIES = {
    "resnet": ("resnet18", {}, ("layer2.1", "layer3.1", "layer4.1"), "NCHW"),
    "convnext": ("convnext_tiny", {"depths": (1, 1, 2, 1), "dims": (8, 16, 24, 32)},
                 ("stages.1.blocks.0.norm", "stages.2.blocks.1.norm", "stages.3.blocks.0.norm"),
                 "NHWC"),
    "convnext-conv-mlp": ("convnext_atto", {},
                          ("stages.1.blocks.1.norm", "stages.2.blocks.5.norm",
                           "stages.3.blocks.1.norm"), "NCHW"),
    "swin": ("swin_tiny_patch4_window7_224",
             {"embed_dim": 16, "depths": (1, 1, 2, 1), "num_heads": (1, 1, 1, 1), "img_size": 64,
              "window_size": 2},
             ("layers.1.blocks.0.norm1", "layers.2.blocks.1.norm1", "layers.3.blocks.0.norm1"),
             "NHWC"),
    "efficientnet": ("tf_efficientnet_lite0", {}, ("blocks.2.1", "blocks.4.2", "blocks.6.0"),
                     "NCHW"),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP contention on shared cores, and keeps every map of
    the module computed with the same reduction order (a resumed cache is compared bit for bit)."""
    with torch_threads(1):
        yield


@pytest.mark.parametrize("family", FAMILIES)
def test_target_layers_and_maps_per_family(family):
    name, kwargs, names, layout = FAMILIES[family]
    torch.manual_seed(0)
    model = create_classifier(name, None, **kwargs).eval().requires_grad_(False)
    layers = target_layers(model)
    assert layers == TargetLayers(names, layout)
    deepest = [info["module"] for info in model.feature_info][-3:]
    assert all(n.startswith(stage + ".") for n, stage in zip(layers.names, deepest))
    s = saliency_maps(model, torch.randn(2, 3, 64, 64), [3, -1], layers)
    assert s.shape == (2, MAP_SIZE, MAP_SIZE) and s.dtype == torch.float32
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert torch.allclose(s.flatten(1).amax(1), torch.ones(2), atol=1e-4)  # min-max normalised


def test_unknown_labels_explain_the_top1_class():
    torch.manual_seed(0)
    name, kwargs, _, _ = FAMILIES["convnext"]
    model = create_classifier(name, None, **kwargs).eval().requires_grad_(False)
    x = torch.randn(2, 3, 64, 64)
    top1 = model(x).argmax(1)
    assert torch.equal(saliency_maps(model, x, [-1, -1]), saliency_maps(model, x, top1))
    assert not torch.equal(saliency_maps(model, x, [-1, -1]), saliency_maps(model, x, [5, 7]))
    with pytest.raises(ValueError, match="2 labels for 1 images"):
        saliency_maps(model, x[:1], [1, 2])
    with pytest.raises(ValueError, match="layout"):
        TargetLayers(("layer1",), "CHW")


# ------------------------------------------------------------------------------------------------
# The cache, with the real Lite0 teacher on 4 fixture images (copied: the tests edit them)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lite0():
    return create_classifier("tf_efficientnet_lite0", "offline").eval().requires_grad_(False)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """4 labelled images and their cache, built through ``frankensplit saliency``."""
    if not TINY16.is_dir():
        pytest.skip(f"fixture images not found in {TINY16} (needs the shared data folder)")
    from frankensplit.cli import main

    root = tmp_path_factory.mktemp("saliency")
    data = root / "data"
    data.mkdir()
    files = sorted(TINY16.glob("*.jpg"))[:4]
    for f in files:
        shutil.copy2(f, data / f.name)
    lines = (TINY16 / "labels.csv").read_text().splitlines()
    (data / "labels.csv").write_text("\n".join(lines[:5]) + "\n")
    code = main(["saliency", "--teacher", "tf_efficientnet_lite0", "--weights", "offline",
                 "--data", str(data), "--out", str(root / "cache"), "--batch-size", "2",
                 "--workers", "0", "--no-progress"])
    assert code == 0
    return data, root / "cache"


def fixed_dataset(model, data, limit=None):
    return ImageDataset(data, make_transform(resolve_data_config(model), "fixed"), limit=limit)


def test_cache_holds_maps_in_unit_range_with_a_manifest(cached):
    _, cache = cached
    maps = np.load(cache / "maps.npy")
    assert maps.shape == (4, MAP_SIZE, MAP_SIZE) and maps.dtype == np.float16
    assert maps.min() >= 0 and maps.max() <= 1 and np.isclose(maps.max(axis=(1, 2)), 1).all()
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["done"] == manifest["count"] == 4
    assert manifest["layers"] == ["blocks.2.1", "blocks.4.2", "blocks.6.0"]
    assert [row[0] for row in manifest["files"]] == sorted(f.name for f in cached[0].glob("*.jpg"))


def test_dataset_serves_aligned_maps_and_accepts_a_prefix(cached, lite0):
    data, cache = cached
    ds = SaliencyDataset(fixed_dataset(lite0, data), cache)
    x, label, index, s = ds[2]
    assert x.shape == (3, 224, 224) and index == 2 and label >= 0
    assert s.shape == (MAP_SIZE, MAP_SIZE) and s.dtype == torch.float32
    assert torch.equal(s, torch.from_numpy(np.load(cache / "maps.npy")[2].astype(np.float32)))
    assert len(SaliencyDataset(fixed_dataset(lite0, data, limit=2), cache)) == 2


def test_cache_hit_and_resume_reproduce_the_maps(cached, lite0, tmp_path):
    data, cache = cached
    ds = fixed_dataset(lite0, data)
    hit = build_cache(lite0, ds, cache, "tf_efficientnet_lite0 (weights: offline)")
    assert (hit.status, hit.computed, hit.total) == ("hit", 0, 4)
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "done": 2}))  # interrupted
    with pytest.raises(ValueError, match="incomplete"):
        SaliencyDataset(ds, copy)
    again = build_cache(lite0, ds, copy, "tf_efficientnet_lite0 (weights: offline)", batch_size=2)
    assert (again.status, again.computed) == ("resumed", 2)
    assert np.array_equal(np.load(copy / "maps.npy"), np.load(cache / "maps.npy"))


def test_changed_or_reordered_files_are_detected(cached, lite0, tmp_path):
    data, cache = cached
    edited = tmp_path / "data"
    shutil.copytree(data, edited)
    ds = fixed_dataset(lite0, edited)
    SaliencyDataset(ds, cache)  # a moved copy with the same files is still valid
    name = sorted(edited.glob("*.jpg"))[1].name
    st = (edited / name).stat()
    os.utime(edited / name, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    with pytest.raises(ValueError, match=f"image 1 is .*{name}.*changed or reordered|{name}"):
        SaliencyDataset(ds, cache)
    (edited / name).unlink()  # a removed file shifts every later image
    lines = [ln for ln in (edited / "labels.csv").read_text().splitlines() if name not in ln]
    (edited / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="image 1 is"):
        SaliencyDataset(fixed_dataset(lite0, edited), cache)
    stale = tmp_path / "stale"
    shutil.copytree(cache, stale)
    rebuilt = build_cache(lite0, fixed_dataset(lite0, edited, limit=1), stale, "lite0")
    assert (rebuilt.status, rebuilt.computed, rebuilt.total) == ("computed", 1, 1)
    assert SaliencyDataset(fixed_dataset(lite0, edited, limit=1), stale)[0][3].shape == (28, 28)


def test_other_views_and_missing_caches_are_refused(cached, lite0, tmp_path):
    data, cache = cached
    eval_view = ImageDataset(data, make_transform(resolve_data_config(lite0), "eval"))
    with pytest.raises(ValueError, match="another view"):
        SaliencyDataset(eval_view, cache)
    with pytest.raises(ValueError, match="fixed view"):
        build_cache(lite0, eval_view, tmp_path / "c", "lite0")
    with pytest.raises(ValueError, match="no saliency cache"):
        SaliencyDataset(fixed_dataset(lite0, data), tmp_path / "missing")


def test_a_saliency_guided_stage_trains_on_the_cache(cached, tmp_path):
    from frankensplit.config import load_config
    from frankensplit.train import train

    data, cache = cached
    cfg = load_config(None, [
        f"data.train=[{data}]", "data.workers=0", "teacher_weights=offline", "lmbda=[2]",
        "model_id=fs-sal-l{lmbda}", f"saliency_cache={cache}",
        "stages.0.view=fixed", "stages.0.saliency=true", "stages.0.batch_size=1",
        "stages.0.steps_per_epoch=1", "stages.0.epochs=1", "threads=1",
    ])
    (summary,) = train(cfg, tmp_path, progress=False)
    assert summary["history"][0]["images"] == 1
    assert (tmp_path / "lmbda-2/best.safetensors").is_file()


def test_the_saliency_map_weighs_the_distortion(cached, tmp_path):
    """The map reaches the loss as w = 1/2 (1 + s): one step (the loss before any update) on a
    cache of all-zero maps has exactly half the head distortion of all-one maps, and the real
    maps give a value in between."""
    from frankensplit.config import load_config
    from frankensplit.train import train

    data, cache = cached
    maps = np.load(cache / "maps.npy")
    distortion = {}
    for name, fill in (("zeros", 0.0), ("ones", 1.0), ("real", None)):
        copy = tmp_path / f"cache-{name}"
        shutil.copytree(cache, copy)
        if fill is not None:
            np.save(copy / "maps.npy", np.full_like(maps, fill))
        cfg = load_config(None, [
            f"data.train=[{data}]", "data.workers=0", "teacher_weights=offline", "lmbda=[2]",
            "model_id=fs-sal-l{lmbda}", f"saliency_cache={copy}", "data.train_limit=2",
            "stages.0.view=fixed", "stages.0.saliency=true", "stages.0.batch_size=2",
            "stages.0.steps_per_epoch=1", "stages.0.epochs=1", "threads=1",
        ])
        (summary,) = train(cfg, tmp_path / name, progress=False)
        distortion[name] = summary["history"][0]["distortion_per_image"]
    assert 0 < maps[:2].mean() < 1  # the real maps are neither all 0 nor all 1
    assert distortion["zeros"] == pytest.approx(distortion["ones"] / 2, rel=1e-5)
    assert distortion["zeros"] < distortion["real"] < distortion["ones"]

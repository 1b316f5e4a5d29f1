"""tools/ship_model.py: a shipped codec's index entry rebuilds exactly the model that was trained."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from frankensplit.files import file_sha256
from frankensplit.models.architecture import Architecture
from frankensplit.models.codec_file import codec_metadata, save_codec
from frankensplit.models.image_codec import build_image_codec
from frankensplit.models.zoo import MODELS, ModelEntry, create_model
from frankensplit.threads import seeded

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ship(tmp_path, monkeypatch):
    """The tool's module with its zoo folder redirected to ``tmp_path / "zoo"``."""
    spec = importlib.util.spec_from_file_location("ship_model", REPO / "tools/ship_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "zoo").mkdir()
    monkeypatch.setattr(module, "ZOO", tmp_path / "zoo")
    return module


def _run_dir(root: Path, model, lmbda: float, best_epoch: int = 2, last=None) -> Path:
    """A training run folder as ``frankensplit train`` leaves it (weights, summary, config): two
    epochs of 250 steps of batch 16, validated after each; ``best.safetensors`` is ``model``, from
    ``best_epoch``, and ``last.safetensors`` (where given) ``last``."""
    run = root / "run" / f"lmbda-{lmbda:g}"
    run.mkdir(parents=True)
    save_codec(model, run / "best.safetensors", {"lmbda": str(lmbda)})
    if last is not None:
        save_codec(last, run / "last.safetensors", {"lmbda": str(lmbda)})
    val = {e: {"top1": 50.0 if e == best_epoch else 45.0, "teacher_top1": 80.0,
               "bpp_estimated": 1.25 if e == best_epoch else 1.5} for e in (1, 2)}
    (run / "summary.json").write_text(json.dumps({
        "best": {"score": 50.0, "stage": "rate", "epoch": best_epoch, **val[best_epoch]},
        "history": [{"stage": "rate", "epoch": e, "images": 4000, "val": val[e]} for e in (1, 2)]}))
    (root / "run" / "config.json").write_text(json.dumps({"stages": [{"name": "rate",
                                                                      "batch_size": 16}]}))
    return run


def _index(zoo: Path, *model_ids: str) -> None:
    """``zoo / "index.json"`` holding the shipped index's entries of ``model_ids``."""
    shipped = json.loads((REPO / "frankensplit/zoo/index.json").read_text())["models"]
    (zoo / "index.json").write_text(json.dumps(
        {"models": [m for m in shipped if m["model_id"] in model_ids]}))


def _metrics(zoo: Path, model_id: str) -> dict:
    models = json.loads((zoo / "index.json").read_text())["models"]
    return next(m for m in models if m["model_id"] == model_id)["metrics"]


def _es(model_id: str, tail: str | None = None):
    """An Entropic Student split model (a small one: 24 latent channels at stride 4) with a
    random teacher seeded by 0 (``with seeded(0)`` around a load builds the same one); with
    ``tail="trained"`` a tail of its own, each weight moved about 1% off the teacher's but the
    classifier's (``tail.8``, left the teacher's as ``freeze: [..., tail.8]`` leaves it)."""
    with seeded(0):
        model = Architecture("tf_efficientnet_lite0", method="entropic_student",
                             encoder="entropic_student", decoder="entropic_student",
                             latent_channels=24, split_reduction=4, tail=tail).build(
            model_id, teacher_weights=None)
    if tail is not None:
        with torch.no_grad(), seeded(0):
            for name, p in model.tail.named_parameters():
                if not name.startswith("8."):
                    p.mul_(1 + 0.01 * torch.randn_like(p))
    return model


def test_split_model_entry_rebuilds_the_trained_architecture(ship, tmp_path, monkeypatch):
    es = _es("es-lite0-l9")
    with torch.no_grad():  # weights unlike the id-seeded init: the load must really happen
        next(es.g_s.parameters()).add_(1.0)
    run = _run_dir(tmp_path, es, 9.0)
    dest = ship.ship(run / "best.safetensors", "configs/es_lite0_fair.yaml", None)
    assert dest == tmp_path / "zoo" / "es-lite0-l9.safetensors"
    assert dest.read_bytes() == (run / "best.safetensors").read_bytes()  # no own tail: copied
    (raw,) = json.loads((tmp_path / "zoo" / "index.json").read_text())["models"]
    assert raw["metrics"] == {"val_top1_256": 50.0, "val_teacher_top1_256": 80.0,
                              "val_bpp_estimated": 1.25, "train_steps_this_run": 500,
                              "train_steps_total": 500}  # from scratch, the run's last epoch
    assert raw["parent_sha256"] == {}  # es_lite0_fair.yaml starts from nothing
    entry = ModelEntry.from_dict(raw)
    arch = entry.architecture
    assert (arch.encoder, arch.decoder, arch.split_reduction, arch.latent_channels) == (
        "entropic_student", "entropic_student", 4, 24)
    monkeypatch.setattr("frankensplit.models.zoo.ZOO_DIR", tmp_path / "zoo")
    monkeypatch.setitem(MODELS._entries, entry.model_id, entry)
    loaded = create_model(entry.model_id, teacher_weights=None)
    for (name, a), b in zip(es.g_s.state_dict().items(), loaded.g_s.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # shipping again replaces the entry instead of adding a second one
    ship.ship(run / "best.safetensors", "configs/es_lite0_fair.yaml", None)
    assert len(json.loads((tmp_path / "zoo" / "index.json").read_text())["models"]) == 1


@pytest.mark.usefixtures("one_thread")
def test_an_own_tail_ships_in_float16_without_the_teachers_tensors(ship, tmp_path, monkeypatch,
                                                                    capsys):
    """Re-saved, not copied: the tail in float16 without its tensors equal to the teacher's
    (listed), every other tensor and the metadata the trained file's; the index's sha256 is the
    new file's, and the zoo model loads it with the teacher it was shipped against."""
    import json as _json

    es = _es("es-lite0-l9-s2", tail="trained")
    src = _run_dir(tmp_path, es, 9.0) / "best.safetensors"
    with seeded(0):  # ship's random teacher is the model's
        assert ship.main([str(src), "--config", "configs/es_lite0_fair.yaml",
                          "--teacher-weights", "random"]) == 0
    dest = tmp_path / "zoo" / "es-lite0-l9-s2.safetensors"
    meta = codec_metadata(dest)
    listed = _json.loads(meta.pop("tail_from_teacher"))
    assert meta.pop("tail_from_teacher_sha256")
    assert meta == {**codec_metadata(src), "tail_dtype": "float16"}
    ours, theirs = load_file(dest), load_file(src)
    omitted = {f"tail.{n}" for n in listed}
    assert {"tail.8.weight", "tail.8.bias"} <= omitted and ours.keys() == theirs.keys() - omitted
    tail = [v for k, v in theirs.items() if k.startswith("tail.")]
    values, total = sum(theirs[k].numel() for k in omitted), sum(v.numel() for v in tail)
    assert capsys.readouterr().out == (
        f"shipped {dest} ({dest.stat().st_size / 1e6:.2f} MB; tail: {len(listed)} of "
        f"{len(tail)} tensors ({values:,} of {total:,} values) left to the teacher "
        "tf_efficientnet_lite0, the rest stored in float16)\n")
    # the tail is 97% of the float32 file: 0.52 of it with the whole tail in float16, 0.38 here
    assert dest.stat().st_size < 0.4 * src.stat().st_size
    for key, tensor in ours.items():  # g_a, the CDF tables, g_s and integer buffers: unchanged
        halved = key.startswith("tail.") and theirs[key].is_floating_point()
        assert torch.equal(tensor, theirs[key].half() if halved else theirs[key]), key
    (raw,) = json.loads((tmp_path / "zoo" / "index.json").read_text())["models"]
    assert raw["sha256"] == file_sha256(dest) != file_sha256(src)
    entry = ModelEntry.from_dict(raw)
    monkeypatch.setattr("frankensplit.models.zoo.ZOO_DIR", tmp_path / "zoo")
    monkeypatch.setitem(MODELS._entries, entry.model_id, entry)
    with seeded(0):
        loaded = create_model(entry.model_id, teacher_weights=None)  # checks the sha256
    for (name, a), b in zip(es.tail.state_dict().items(), loaded.tail.state_dict().values()):
        want = a if name in listed or not a.is_floating_point() else a.half().float()
        assert b.dtype == a.dtype and torch.equal(b, want), name
    with pytest.raises(ValueError, match="teacher weights it was shipped against"):
        create_model(entry.model_id, teacher_weights=None)  # another random teacher
    # stored in float32, the tail is still above the limit: refused, the zoo file kept
    monkeypatch.setattr(ship, "MAX_BYTES", 11_000_000)
    with seeded(0), pytest.raises(SystemExit, match=r"would be 1\d\.\d\d MB, above the 11 MB"):
        ship.main([str(src), "--config", "configs/es_lite0_fair.yaml", "--tail-dtype", "float32",
                   "--teacher-weights", "random"])
    assert file_sha256(dest) == raw["sha256"]
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == [dest.name, "index.json"]


@pytest.mark.usefixtures("one_thread")
def test_a_zoo_file_above_the_size_limit_is_refused_before_anything_is_written(
        ship, tmp_path, monkeypatch):
    """Copied or re-saved (own tail), a split model's file above ``MAX_BYTES`` is refused: no
    weights, no temporary file, no index entry."""
    monkeypatch.setattr(ship, "MAX_BYTES", 500_000)
    for lmbda, model in ((9.0, _es("es-lite0-l9")), (10.0, _es("es-lite0-l10-s2", "trained"))):
        src = _run_dir(tmp_path, model, lmbda) / "best.safetensors"
        with pytest.raises(SystemExit, match=rf"{src}: the zoo file would be \d+\.\d\d MB, "
                                             "above the 0.5 MB a shipped model may take"):
            ship.ship(src, "configs/es_lite0_fair.yaml", None, teacher_weights=None)
        assert list((tmp_path / "zoo").iterdir()) == []


def test_a_resaved_file_must_leave_to_the_teacher_only_what_the_trained_file_holds(ship,
                                                                                    tmp_path):
    """`_check_resaved`: a tensor left to the teacher must equal the trained file's bit for bit."""
    from safetensors.torch import save_file

    a, b = torch.arange(6.0).reshape(2, 3), torch.full((3,), 0.1)
    src, new = tmp_path / "src.safetensors", tmp_path / "new.safetensors"
    save_file({"g_s.w": a, "tail.a": a.clone(), "tail.b": b}, src)
    save_file({"g_s.w": a, "tail.b": b.half()}, new, metadata={"tail_from_teacher": '["a"]'})
    ship._check_resaved(src, new, {"a": a.clone(), "b": b + 1})  # "b" is stored: not compared
    with pytest.raises(SystemExit, match="left tail.a to the teacher, whose tensor differs"):
        ship._check_resaved(src, new, {"a": a + 1, "b": b})
    save_file({"g_s.w": a, "tail.b": b.half()}, new, metadata={"tail_from_teacher": "[]"})
    with pytest.raises(SystemExit, match="re-saving changed its tensor names"):
        ship._check_resaved(src, new, {"a": a, "b": b})


def test_the_entry_records_the_sha256_of_the_parent_its_command_starts_from(ship, tmp_path):
    """... and the steps in the new weights: that parent's total (its index entry) + this run's."""
    base = MODELS.get("fs-lite0-l4")  # what configs/lite1_cpu.yaml starts from (init_codec)
    _index(tmp_path / "zoo", base.model_id)
    run = _run_dir(tmp_path, _es("es-lite0-l9"), 9.0)
    ship.ship(run / "best.safetensors", "configs/lite1_cpu.yaml --set lmbda=[9]", None)
    (_, raw) = json.loads((tmp_path / "zoo" / "index.json").read_text())["models"]
    assert raw["parent_sha256"] == {"init_codec": base.sha256}
    assert ModelEntry.from_dict(raw).parent_sha256 == {"init_codec": base.sha256}
    assert raw["metrics"]["train_steps_this_run"] == 500
    assert raw["metrics"]["train_steps_total"] == base.metrics["train_steps_total"] + 500


def test_a_checkpoint_before_the_end_counts_the_steps_up_to_it(ship, tmp_path):
    """The best checkpoint of epoch 1 of 2 holds 250 of the run's 500 steps; the run's last
    weights (``last.safetensors``) all 500."""
    last = _es("es-lite0-l9")
    with torch.no_grad():
        next(last.g_s.parameters()).add_(1.0)
    run = _run_dir(tmp_path, _es("es-lite0-l9"), 9.0, best_epoch=1, last=last)
    ship.ship(run / "best.safetensors", "configs/es_lite0_fair.yaml", None)
    metrics = _metrics(tmp_path / "zoo", "es-lite0-l9")
    assert metrics == {"val_top1_256": 50.0, "val_teacher_top1_256": 80.0,
                       "val_bpp_estimated": 1.25, "train_steps_this_run": 500,
                       "train_steps_to_checkpoint": 250, "train_steps_total": 250}
    ship.ship(run / "last.safetensors", "configs/es_lite0_fair.yaml", None)
    metrics = _metrics(tmp_path / "zoo", "es-lite0-l9")
    assert "train_steps_to_checkpoint" not in metrics
    assert (metrics["train_steps_this_run"], metrics["train_steps_total"]) == (500, 500)


def test_a_parent_the_index_does_not_hold_needs_its_steps_from_the_caller(ship, tmp_path):
    """An init_codec parent of no index entry (an older version): refused before anything is
    copied unless ``--parent-steps`` gives its total; one the index holds must agree with it."""
    zoo, command = tmp_path / "zoo", "configs/lite1_cpu.yaml --set lmbda=[9]"
    run = _run_dir(tmp_path, _es("es-lite0-l9"), 9.0)
    with pytest.raises(SystemExit, match="no entry of the zoo index .*--parent-steps"):
        ship.ship(run / "best.safetensors", command, None)
    assert list(zoo.iterdir()) == []
    assert ship.main([str(run / "best.safetensors"), "--config", command,
                      "--parent-steps", "1234"]) == 0
    assert _metrics(zoo, "es-lite0-l9")["train_steps_total"] == 1234 + 500
    _index(zoo, "fs-lite0-l4")  # the parent's entry: it records another total than 1234
    assert _metrics(zoo, "fs-lite0-l4")["train_steps_total"] != 1234
    with pytest.raises(SystemExit, match="--parent-steps 1234: the zoo index records"):
        ship.ship(run / "best.safetensors", command, None, parent_steps=1234)
    with pytest.raises(SystemExit, match="no init_codec parent"):
        ship.ship(run / "best.safetensors", "configs/es_lite0_fair.yaml", None, parent_steps=1)


def test_an_init_g_s_decoder_adds_the_steps_the_caller_gives(ship, tmp_path):
    """A reuse refit (``init_g_s``): the source encoder's total + the decoder's own training
    (``--g-s-steps``, required) + this run."""
    source = MODELS.get("fs-lite0-l4")  # configs/reuse_refit_cpu.yaml's init_codec
    _index(tmp_path / "zoo", source.model_id)
    command = ("configs/reuse_refit_cpu.yaml "
               "--set init_g_s=frankensplit/zoo/fs-lite0-l4.lite1.safetensors")
    run = _run_dir(tmp_path, _es("es-lite0-l9"), 9.0)
    with pytest.raises(SystemExit, match="--g-s-steps"):
        ship.ship(run / "best.safetensors", command, None)
    ship.ship(run / "best.safetensors", command, None, g_s_steps=1750)
    assert _metrics(tmp_path / "zoo", "es-lite0-l9")["train_steps_total"] == (
        source.metrics["train_steps_total"] + 1750 + 500)


def test_shipping_over_a_parent_named_by_its_plain_path_is_refused(ship, tmp_path):
    """A command naming the replaced file by path would start from the new weights: refused
    before anything is copied (a ``git:<commit>:<path>`` parent is not affected)."""
    zoo = tmp_path / "zoo"
    (zoo / "es-lite0-l9.safetensors").write_bytes(b"old weights")
    child = {"model_id": "es-lite0-l10", "teacher": "tf_efficientnet_lite0",
             "config": f"configs/es_lite0_fair.yaml --set init_codec={zoo}/es-lite0-l9.safetensors"}
    (zoo / "index.json").write_text(json.dumps({"models": [child]}))
    run = _run_dir(tmp_path, _es("es-lite0-l9"), 9.0)
    with pytest.raises(SystemExit, match="es-lite0-l10's command starts from .*es-lite0-l9"):
        ship.ship(run / "best.safetensors", "configs/es_lite0_fair.yaml", None)
    assert (zoo / "es-lite0-l9.safetensors").read_bytes() == b"old weights"
    # its own command naming the file it replaces: refused the same way
    (zoo / "index.json").write_text(json.dumps({"models": []}))
    with pytest.raises(SystemExit, match="es-lite0-l9's command starts from"):
        ship.ship(run / "best.safetensors", child["config"], None)


@pytest.mark.parametrize("parents", [{"init_decoder": "0" * 64}, {"init_codec": "abc"}])
def test_an_entry_with_a_bad_parent_sha256_is_refused(parents):
    raw = {"model_id": "fs-x", "teacher": "tf_efficientnet_lite0", "parent_sha256": parents}
    with pytest.raises(ValueError, match="parent_sha256"):
        ModelEntry.from_dict(raw)


def test_image_codec_goes_to_the_shipped_baseline_folder(ship, tmp_path):
    from frankensplit.backbones import create_backbone

    model = build_image_codec("bmshj2018-l0.5", 16, 12, create_backbone("tf_efficientnet_lite0",
                                                                        weights=None))
    dest = ship.ship(_run_dir(tmp_path, model, 0.5) / "best.safetensors", "configs/x.yaml", None)
    assert dest == tmp_path / "zoo" / "bmshj2018" / "bmshj2018-l0.5.safetensors"
    assert not (tmp_path / "zoo" / "index.json").exists()  # not a split model: no index entry


def _vr_run(root: Path) -> Path:
    """A variable-rate training run folder of ``fs-lite0-vr`` (two rates, lambda 16 and 1, random
    teacher and codec seeded by 0; one epoch of 250 steps of batch 16, validated at every rate)."""
    with seeded(0):
        model = Architecture("tf_efficientnet_lite0", entropy="gained_factorized",
                             rates=(16.0, 1.0)).build("fs-lite0-vr", teacher_weights=None)
    run = root / "run" / "variable-rate"
    run.mkdir(parents=True)
    save_codec(model, run / "best.safetensors", {})
    val = {"top1": 60.0, "teacher_top1": 80.0, "bpp_estimated": 0.9, "images": 400,
           "rates": [{"lmbda": 16.0, "top1": 55.0, "bpp_estimated": 0.4},
                     {"lmbda": 1.0, "top1": 65.0, "bpp_estimated": 1.4}]}
    (run / "summary.json").write_text(json.dumps({
        "best": {"score": 60.0, "stage": "vr", "epoch": 1, **val},
        "history": [{"stage": "vr", "epoch": 1, "images": 4000, "val": val}],
        "config": {"stages": [{"name": "vr", "batch_size": 16}]}}))
    return run


def test_a_variable_rate_model_records_every_rates_figures(ship, tmp_path):
    """No lambda in its metadata; the entry keeps each rate's validation and dev-set figures under
    the rate's setting (``@<lambda>``), counts the fs-lite0-l1 parent's steps it starts from, and
    its description spans the lowest and highest rate."""
    rates = (16.0, 1.0)
    run = _vr_run(tmp_path)
    rows = [{"setting": f"fs-lite0-vr@{v:g}", "images": 8, "top1": t, "top5": 90.0,
             "teacher_top1": 75.0, "bytes": b, "bpp_actual": b * 8 / 224**2,
             "bpp_estimated": b * 8 / 224**2} for v, t, b in ((16.0, 50.0, 2100.4), (1.0, 62.5, 9000.0))]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"rows": rows}))
    _index(tmp_path / "zoo", "fs-lite0-l1")
    ship.ship(run / "best.safetensors", "configs/lite0_vr_cpu.yaml", results)
    raw = next(m for m in json.loads((tmp_path / "zoo" / "index.json").read_text())[
        "models"] if m["model_id"] == "fs-lite0-vr")
    metrics = raw["metrics"]
    assert raw["lmbda"] is None and tuple(raw["rates"]) == rates
    assert metrics["val_top1_400@16"] == 55.0 and metrics["val_bpp_estimated@1"] == 1.4
    assert (metrics["dev8_top1@16"], metrics["dev8_bytes_per_image@16"]) == (50.0, 2100)
    assert (metrics["dev8_top1@1"], metrics["dev8_bytes_per_image@1"]) == (62.5, 9000)
    assert "dev8_top1" not in metrics and metrics["dev8_teacher_top1"] == 75.0
    assert metrics["train_steps_total"] == _metrics(REPO / "frankensplit/zoo", "fs-lite0-l1")[
        "train_steps_total"] + 250
    assert raw["description"] == (
        "lite0, variable rate (2 rates, lambda 16 to 1), CPU-scale: 50.00-62.50% top-1 (teacher "
        "75.00%) at 2.10-9.00 KB on the dev set")
    rows.pop()
    results.write_text(json.dumps({"rows": rows}))
    with pytest.raises(SystemExit, match="no row for fs-lite0-vr@1"):
        ship.ship(run / "best.safetensors", "configs/lite0_vr_cpu.yaml", results)


def test_a_variable_rate_models_default_rate_is_recorded_and_kept_on_a_reship(ship, tmp_path):
    """``--default-rate I`` goes into the entry (`ModelEntry.default_rate`); shipping the same
    rates again without it keeps it; a fixed-rate model's is refused before anything is written."""
    run = _vr_run(tmp_path)
    _index(tmp_path / "zoo", "fs-lite0-l1")

    def entry() -> dict:
        models = json.loads((tmp_path / "zoo" / "index.json").read_text())["models"]
        return next(m for m in models if m["model_id"] == "fs-lite0-vr")

    with pytest.raises(SystemExit, match=r"--default-rate: fs-lite0-vr: default_rate: .*0\.\.1"):
        ship.ship(run / "best.safetensors", "configs/lite0_vr_cpu.yaml", None, default_rate=2)
    assert not (tmp_path / "zoo" / "fs-lite0-vr.safetensors").exists()
    ship.ship(run / "best.safetensors", "configs/lite0_vr_cpu.yaml", None, default_rate=1)
    assert entry()["default_rate"] == 1 and ModelEntry.from_dict(entry()).default_rate == 1
    ship.ship(run / "best.safetensors", "configs/lite0_vr_cpu.yaml", None)
    assert entry()["default_rate"] == 1  # kept: the same rates
    es = _run_dir(tmp_path / "es", _es("es-lite0-l9"), 9.0)
    with pytest.raises(SystemExit, match="default_rate 0 for a fixed-rate model"):
        ship.ship(es / "best.safetensors", "configs/es_lite0_fair.yaml", None, default_rate=0)
    assert not (tmp_path / "zoo" / "es-lite0-l9.safetensors").exists()

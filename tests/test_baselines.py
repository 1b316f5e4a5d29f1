"""The learned baselines: Entropic Student (a split model) and Balle 2018 (an image codec).

Invariants first (split shapes derived from the teacher, coding equals the eval forward, every
byte counted), then the real pipeline on tiny data: a couple of training steps through the shared
loop, the run's weights loaded the way ``frankensplit eval`` loads them, and an evaluation of both
baselines beside FrankenSplit on two images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import to_pil_image, to_tensor

from frankensplit import bitstream
from frankensplit.backbones import create_backbone
from frankensplit.blueprints import count_parameters
from frankensplit.codecs import CodecUnavailableError, create_codec
from frankensplit.codecs.learned import LearnedImageCodec
from frankensplit.config import load_config
from frankensplit.data import crop_transform
from frankensplit.eval import load_dataset, run_eval
from frankensplit.models.architecture import Architecture
from frankensplit.models.codec_file import save_codec
from frankensplit.models.image_codec import build_image_codec
from frankensplit.models.zoo import create_model
from frankensplit.threads import torch_threads
from frankensplit.train import train
from frankensplit.train.objectives import create_objective

TINY16 = Path(__file__).resolve().parents[2] / "shared/data/fixtures/tiny16"
REPO = Path(__file__).resolve().parents[1]

ES = {"method": "entropic_student", "encoder": "entropic_student", "decoder": "entropic_student",
      "latent_channels": 24, "split_reduction": 4}


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):  # tiny tensors on a shared 2-core box: one thread is fastest
        yield


@pytest.fixture(scope="module")
def tiny16() -> Path:
    if not (TINY16 / "labels.csv").is_file():
        pytest.skip(f"fixture images not found in {TINY16} (needs the shared data folder)")
    return TINY16


# ------------------------------------------------------------------------------------------------
# Entropic Student
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("teacher", "module", "channels"),
                         [("tf_efficientnet_lite0", "blocks.1", 24), ("resnet18", "layer1", 64)])
def test_entropic_student_replaces_the_teacher_up_to_stride_4(teacher, module, channels):
    torch.manual_seed(0)
    model = Architecture(teacher, **ES).build(f"es-test-{teacher[:6]}", teacher_weights=None).eval()
    spec = model.teacher.spec
    assert (spec.module, spec.channels, spec.reduction) == (module, channels, 4)
    assert model.method == "entropic_student" and count_parameters(model.g_a) == 138_672
    x = torch.randn(2, 3, 224, 224)
    h = model.teacher.head(x)
    out = model(x)
    assert out["y_hat"].shape == (2, 24, 56, 56)
    assert out["h_hat"].shape == h.shape == (2, channels, 56, 56)
    torch.testing.assert_close(model.teacher.tail(h), model.teacher(x))  # the split is exact
    model.update(force=True)
    packets = model.edge.encode(x)
    y_hat = model.server.decode_latent(packets)
    assert torch.equal(y_hat, out["y_hat"])  # coding is exactly the eval forward
    torch.testing.assert_close(model.server.decode(packets), model.teacher.tail(out["h_hat"]))
    assert all(bitstream.unpack(p).shape == (24, 56, 56) for p in packets)


def test_entropic_student_decoder_matches_the_paper_for_resnet50():
    """24 -> 512 -> 256 -> 256 with 2x2 kernels and IGDN: 1,164,032 weights for layer1."""
    model = Architecture("resnet50", **ES).build("es-test-r50", teacher_weights=None)
    assert count_parameters(model.g_s) == 1_164_032
    assert model.g_s(torch.zeros(1, 24, 56, 56)).shape == (1, 256, 56, 56)


def test_mismatched_encoder_decoder_and_split_are_refused():
    with pytest.raises(ValueError, match=r"encoder 'frankensplit' makes latents of stride 8.*4"):
        Architecture("tf_efficientnet_lite0", decoder="entropic_student",
                     split_reduction=4).build("es-bad", teacher_weights=None)
    with pytest.raises(ValueError, match="supports split reduction"):  # blueprints reach 8
        Architecture("tf_efficientnet_lite0", split_reduction=4).build("es-bad", teacher_weights=None)
    with pytest.raises(ValueError, match="no feature stage at stride 3"):
        create_backbone("tf_efficientnet_lite0", weights=None, split_reduction=3)


def test_zoo_entry_is_the_lite0_baseline():
    model = create_model("es-lite0-untrained", teacher_weights=None)
    assert model.method == "entropic_student" and model.teacher.spec.module == "blocks.1"
    assert model.architecture.split_reduction == 4


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (["objective=images"], ValueError,
         r"unknown objective 'images' \(did you mean 'image'\?\); known: head, image, tail"),
        (["architecture.decoder=es"], ValueError,
         "unknown decoder 'es'; known: blueprint, entropic_student"),
        (["architecture.split_reduction=0"], ValueError, "split_reduction must be positive"),
        (["architecture.split_reduction=four"], TypeError, "config.architecture.split_reduction"),
        (["objective=image", "architecture.split_reduction=4"], ValueError,
         r"\['split_reduction'\] only"),
        (["objective=image", "stages.0.view=fixed", "stages.0.saliency=true"], ValueError,
         "neither saliency"),
        (["hidden_channels=0"], ValueError, "hidden_channels must be positive"),
        (["clip_grad_norm=0"], ValueError, "clip_grad_norm must be positive"),
    ],
)
def test_baseline_config_fields_are_validated(overrides, error, match):
    with pytest.raises(error, match=match):  # the config's checks, then its objective's
        create_objective(load_config(None, overrides))


def test_entropic_student_exports_and_serves_from_its_bundles(tmp_path):
    """The bundles carry ES's decoder and split: the server rebuilds ES (not FrankenSplit) and
    decodes the edge client's packets to the in-memory model's logits."""
    from frankensplit.runtime.edge.client import EdgeClient
    from frankensplit.runtime.edge.export import export_bundle
    from frankensplit.runtime.server.loading import load_server_model

    model = Architecture("tf_efficientnet_lite0", **ES).build("es-lite0-test",
                                                              teacher_weights=None).eval()
    bundles = export_bundle(model, tmp_path)
    loaded = load_server_model(str(bundles.server_dir), teacher_weights=None)
    assert loaded.latent_shape == (24, 56, 56)
    client = EdgeClient(bundles.edge_dir, threads=1)
    img = Image.new("RGB", (300, 260), (40, 120, 200))
    packet = client.encode(img)
    assert bitstream.unpack(packet).shape == (24, 56, 56)
    with torch.no_grad():
        ours = model.server.decode([packet])  # the in-memory model, same teacher weights (None)
        served = loaded.part.decode([packet])
    torch.testing.assert_close(served, ours, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# Balle 2018 factorized prior
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def balle_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random Balle codec saved the way training saves it (lambda in the metadata)."""
    teacher = create_backbone("tf_efficientnet_lite0", weights=None)
    model = build_image_codec("bmshj2018-test", hidden_channels=16, latent_channels=12,
                              teacher=teacher)
    path = tmp_path_factory.mktemp("balle") / "best.safetensors"
    save_codec(model, path, {"lmbda": "0.025"})  # type: ignore[arg-type]
    return path


def test_balle_architecture_is_compressais():
    model = build_image_codec("bmshj2018-arch")
    # compressai.zoo.bmshj2018_factorized(quality=1..5) has 2,998,147 parameters (N=128, M=192).
    assert count_parameters(model) == 2_998_147
    assert model(torch.rand(1, 3, 64, 48))["x_hat"].shape == (1, 3, 64, 48)
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.rand(1, 3, 60, 48))


def test_balle_decode_is_the_eval_forward_and_every_byte_is_counted(balle_file):
    codec = create_codec(f"bmshj2018-factorized:{balle_file}")
    assert isinstance(codec, LearnedImageCodec) and codec.qualities == (0.025,)
    model = codec.models[0.025]
    img = to_pil_image(torch.rand(3, 64, 80))
    x = to_tensor(img)[None]  # (1, 3, 64, 80)
    coded = model.compress(x)
    x_hat = model.decompress(coded["strings"], coded["shape"])["x_hat"]
    torch.testing.assert_close(x_hat, model(x)["x_hat"], rtol=0, atol=1e-6)
    data = codec.encode(img, 0.025)
    payload = 1 + len(coded["strings"][0])  # the padding byte + the rANS stream
    assert len(data) == bitstream.header_size("bmshj2018-test", payload) + payload
    assert bitstream.unpack(data).shape == (12, 4, 5)
    expected = np.asarray(to_pil_image(model(x)["x_hat"][0].clamp(0, 1)))
    assert np.abs(np.asarray(codec.decode(data), np.int16) - expected).max() <= 1  # 8-bit rounding
    assert codec.estimated_bits(img, 0.025) > 0


def test_balle_source_forms_and_the_shipped_default(balle_file, tmp_path, monkeypatch):
    folder = tmp_path / "shipped"  # a folder of codec files, the layout of frankensplit/zoo/bmshj2018
    folder.mkdir()
    (folder / "bmshj2018-l0.025.safetensors").write_bytes(balle_file.read_bytes())
    assert create_codec(f"bmshj2018-factorized:{folder}").qualities == (0.025,)
    monkeypatch.setattr("frankensplit.codecs.learned.SHIPPED_DIR", folder)
    assert create_codec("bmshj2018-factorized").qualities == (0.025,)  # no SOURCE: shipped models
    with pytest.raises(ValueError, match="neither a codec file nor a folder"):
        create_codec(f"bmshj2018-factorized:{tmp_path / 'missing'}")


def test_balle_codec_any_size_and_bad_input(balle_file):
    codec = create_codec(f"bmshj2018-factorized:{balle_file}")
    img = Image.new("RGB", (37, 50), (200, 30, 90))  # not multiples of 16: padded and cropped
    assert codec.decode(codec.encode(img, 0.025)).size == (37, 50)
    other = build_image_codec("bmshj2018-other", 16, 12).eval()
    other.update(force=True)
    two = LearnedImageCodec(codec.name, {**codec.models, 0.1: other})
    assert two.qualities == (0.025, 0.1)
    data = two.encode(img, 0.1)
    assert bitstream.unpack(data).model_id == "bmshj2018-other"  # the id names the lambda's model
    alone = LearnedImageCodec(codec.name, {0.1: other})
    assert np.array_equal(np.asarray(two.decode(data)), np.asarray(alone.decode(data)))
    with pytest.raises(ValueError, match="no model for lambda 0.05"):
        two.encode(img, 0.05)
    with pytest.raises(ValueError, match="bmshj2018-factorized decode"):
        codec.decode(codec.encode(img, 0.025)[:-3])
    # as on a checkout without the shipped models:
    with pytest.MonkeyPatch.context() as mp, pytest.raises(CodecUnavailableError,
                                                           match="needs trained weights"):
        mp.setattr("frankensplit.codecs.learned.SHIPPED_DIR", balle_file.parent / "none")
        create_codec("bmshj2018-factorized")
    with pytest.raises(ValueError, match="takes no ':SOURCE'"):
        create_codec(f"jpeg:{balle_file}")


# ------------------------------------------------------------------------------------------------
# Training through the shared loop, then evaluation like `frankensplit eval`
# ------------------------------------------------------------------------------------------------

# One tiny stage in place of the configs' stages (ES's base config has two, like lite0_cpu.yaml).
TINY_STAGE = ("stages=[{name: tiny, epochs: 2, batch_size: 2, lr: 1.0e-4, gamma: 0.9, view: patch, "
              "patch_size: 64, steps_per_epoch: 2}]")
TINY_RUN = ["data.train_limit=4", "data.workers=0", "data.val=null", "teacher_weights=offline",
            TINY_STAGE, "threads=1"]


#: Run folder -> the codec parameters its training started from (captured from the loop itself).
STARTS: dict[Path, dict[str, torch.Tensor]] = {}


def _train(config: str, tmp: Path, *overrides: str) -> tuple[dict, Path]:
    from frankensplit.train import loop

    cfg = load_config(REPO / "configs" / config,
                      [f"data.train=[{TINY16}]", *TINY_RUN, *overrides])
    start, started = loop._start, []

    def capture(*args, **kwargs):
        run = start(*args, **kwargs)
        started.append({n: p.detach().clone() for n, p in run.model.named_parameters()
                        if n.split(".", 1)[0] in ("g_a", "g_s", "entropy")})
        return run

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "_start", capture)
        (summary,) = train(cfg, tmp, progress=False)
    (run,) = tmp.glob("lmbda-*")
    (STARTS[run],) = started
    return summary, run


@pytest.fixture(scope="module")
def es_run(tiny16, tmp_path_factory) -> tuple[dict, Path]:
    return _train("es_lite0_fair.yaml", tmp_path_factory.mktemp("es"), "lmbda=[1]")


@pytest.fixture(scope="module")
def balle_run(tiny16, tmp_path_factory) -> tuple[dict, Path]:
    return _train("balle_cpu.yaml", tmp_path_factory.mktemp("balle_run"), "lmbda=[0.025]",
                  "hidden_channels=16", "architecture.latent_channels=12")


@pytest.mark.parametrize("which", ["es_run", "balle_run"])
def test_two_epochs_of_training_change_the_loss(which, request):
    summary, run = request.getfixturevalue(which)
    first, second = summary["history"]
    assert first["loss"] != second["loss"] and np.isfinite([first["loss"], second["loss"]]).all()
    assert first["images"] == second["images"] == 4 and first["bpp_train"] > 0
    assert (run / "best.safetensors").is_file() and (run / "last.pt").is_file()


@pytest.mark.parametrize("which", ["es_run", "balle_run"])
def test_training_moves_every_trained_part(which, request):
    """The losses above differ even without a step (each epoch draws other patches and noise);
    here the optimizers must have stepped: against the parameters the run started from, every
    part has moved, and the entropy model's quantiles (the aux step) too."""
    from safetensors.torch import load_file

    _, run = request.getfixturevalue(which)
    start = STARTS[run]
    trained = load_file(run / "last.safetensors")
    assert start and set(start) <= set(trained)
    for part in ("g_a", "g_s", "entropy"):
        moved = [k for k in start if k.startswith(part + ".") and not torch.equal(start[k], trained[k])]
        assert moved, f"{which}: no {part} parameter moved"
    quantiles = [k for k in start if k.endswith("quantiles")]
    assert quantiles and all(not torch.equal(start[k], trained[k]) for k in quantiles)


def test_eval_both_baselines_beside_frankensplit(es_run, balle_run, tiny16, tmp_path):
    es = create_model(str(es_run[1] / "best.safetensors"))  # what `eval --model PATH` does
    assert es.model_id == "es-lite0-wide-l1" and es.method == "entropic_student"
    fs = create_model("fs-lite0-untrained")
    files, labels = load_dataset(tiny16, limit=2)
    balle = f"bmshj2018-factorized:{balle_run[1].parent}"  # the run folder: one lambda here
    result = run_eval([fs, es], files, labels, tmp_path, {"jpeg": (50,), balle: None}, plot=False)
    rows = {r["method"]: r for r in result.rows}
    assert list(rows) == ["teacher", "frankensplit", "entropic_student", "jpeg",
                          "bmshj2018-factorized"]
    for method in ("entropic_student", "bmshj2018-factorized"):
        assert rows[method]["bytes"] > 0 and 0 < rows[method]["bpp_estimated"]
    assert rows["bmshj2018-factorized"]["setting"] == "0.025"
    assert set(result.summary[0]["savings"]) == {"entropic_student", "jpeg",
                                                 "bmshj2018-factorized"}
    codec = create_codec(balle)  # the recorded bytes are the real packet of each crop
    crop = crop_transform(fs.data_config)(Image.open(files[1]).convert("RGB"))
    (record,) = [r for r in _records(tmp_path)
                 if r["method"] == "bmshj2018-factorized" and r["index"] == 1]
    assert record["bytes"] == len(codec.encode(crop, 0.025))


def _records(folder: Path) -> list[dict]:
    from frankensplit.eval import read_records

    return list(read_records(folder / "records.jsonl"))


def test_eval_command_takes_run_weights_and_a_learned_codec(es_run, balle_run, tiny16, tmp_path,
                                                            capsys):
    from frankensplit.cli import main

    argv = ["eval", "--model", str(es_run[1] / "best.safetensors"), "--data", str(tiny16),
            "--limit", "1", "--codecs", f"bmshj2018-factorized:{balle_run[1] / 'best.safetensors'}",
            "--qualities", "bmshj2018-factorized=0.025", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| Entropic Student | es-lite0-wide-l1 |" in out
    assert "| Balle 2018 (MSE; ours, CPU-trained) | 0.025 |" in out
    assert main([*argv[:-3], "--qualities", "bmshj2018-factorized=0.5", "--out",
                 str(tmp_path / "bad"), "--no-progress"]) == 2  # no model for that lambda

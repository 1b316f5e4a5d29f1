"""A variable-rate zoo model's default rate (`ModelEntry.default_rate`): validated with the entry,
carried by the model it builds, used by its edge, recorded in its edge bundle for the torch-free
client, and by the command line where ``--rate`` is left out; a codec file has none and still
needs ``--rate``. Fixed-rate models and the packets are unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from frankensplit import bitstream
from frankensplit.cli import main as cli_main
from frankensplit.models.architecture import Architecture
from frankensplit.models.zoo import MODELS, ModelEntry, create_model
from frankensplit.models.zoo_index import entry_dict
from frankensplit.runtime.edge.bundle import EdgeManifest, read_manifest
from frankensplit.runtime.edge.client import EdgeClient
from frankensplit.runtime.edge.export import export_bundle
from frankensplit.threads import seeded
from tests.test_variable_rate_runtime import RATES, spread_gains

REPO = Path(__file__).resolve().parents[1]
TINY16 = REPO.parent / "shared/data/fixtures/tiny16"
VR = Architecture("tf_efficientnet_lite0", entropy="gained_factorized", rates=RATES)
MODEL_ID = "fs-test-vr-default"
DEFAULT = 1

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def registered():
    """The zoo entry (random codec weights, default rate 1), registered for this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MODELS._entries, MODEL_ID, ModelEntry(MODEL_ID, VR, default_rate=DEFAULT))
        yield MODEL_ID


@pytest.fixture(scope="module")
def model(registered):
    """The entry's model on the real (offline) teacher, gains spread so that the rates differ."""
    return spread_gains(create_model(registered, teacher_weights="offline"))


@pytest.fixture(scope="module")
def bundle(model, tmp_path_factory):
    return export_bundle(model, tmp_path_factory.mktemp("vr-default"))


def _image() -> Path:
    images = sorted(TINY16.glob("*.jpg"))
    if not images:
        pytest.skip(f"fixture images not found in {TINY16}")
    return images[0]


def test_an_entry_validates_its_default_rate_and_the_index_round_trips_it():
    entry = ModelEntry("fs-vr", VR, "w.safetensors", default_rate=2)
    raw = entry_dict(entry)
    assert raw["default_rate"] == 2 and ModelEntry.from_dict(raw) == entry
    del raw["default_rate"]  # an index entry written before the field: no default
    assert ModelEntry.from_dict(raw).default_rate is None
    fixed = ModelEntry("fs-l4", Architecture("tf_efficientnet_lite0"), "w.safetensors", lmbda=4.0)
    assert "default_rate" not in entry_dict(fixed)  # fixed-rate entries stay key for key
    for bad in (3, -1, True, 1.0):
        with pytest.raises(ValueError, match=r"fs-vr: default_rate: .*rate index in 0\.\.2"):
            ModelEntry("fs-vr", VR, default_rate=bad)
    with pytest.raises(ValueError, match="fs-l4: default_rate 0 for a fixed-rate model"):
        ModelEntry("fs-l4", Architecture("tf_efficientnet_lite0"), default_rate=0)
    with pytest.raises(TypeError, match="default_rate"):  # the index is read strictly
        ModelEntry.from_dict({**entry_dict(entry), "default_rate": "1"})


def test_the_edge_codes_at_the_default_rate_where_none_is_named(model):
    assert model.default_rate == DEFAULT and model.edge.default_rate == DEFAULT
    with seeded(1):
        x = torch.randn(1, 3, 224, 224)
    (packet,) = model.edge.encode(x)
    assert bitstream.unpack(packet).rate == DEFAULT
    assert [packet] == model.edge.encode(x, DEFAULT) != model.edge.encode(x, 0)
    with torch.no_grad():
        y = model.g_a(x)
    assert model.edge.pack(y) == [packet]
    assert bitstream.unpack(model.edge.encode(x, 2)[0]).rate == 2  # a named rate wins
    with pytest.raises(ValueError, match="rate index in 0..2"):
        model.edge.encode(x, 3)


def test_only_a_variable_rate_model_takes_a_default_rate_and_a_built_one_has_none():
    from frankensplit.models.parts import EdgePart

    built = VR.build(MODEL_ID, teacher_weights=None)  # what a codec file loads into
    assert built.default_rate is None and built.edge.default_rate is None
    with pytest.raises(ValueError, match="rate index in 0..2"):
        built.edge.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=f"{MODEL_ID}: default_rate: .*0..2, got 3"):
        built.default_rate = 3
    fixed = Architecture("tf_efficientnet_lite0").build("fs-fixed", teacher_weights=None)
    with pytest.raises(ValueError, match="one fixed rate"):
        fixed.default_rate = 0
    with pytest.raises(ValueError, match="one fixed rate"):
        EdgePart(fixed.model_id, fixed.g_a, fixed.entropy, default_rate=0)


def test_the_edge_bundle_records_it_and_the_client_codes_at_it(model, bundle, tmp_path):
    manifest = read_manifest(bundle.edge_dir)
    assert manifest.default_rate == DEFAULT
    assert json.loads((bundle.edge_dir / "manifest.json").read_text())["default_rate"] == DEFAULT
    client = EdgeClient(bundle.edge_dir, threads=1)
    image = _image()
    packet = client.encode(image)
    assert bitstream.unpack(packet).rate == DEFAULT and packet == client.encode(image, DEFAULT)
    assert client.encode_batch([image]) == [packet]
    assert bitstream.unpack(client.encode(image, 0)).rate == 0
    # a bundle of a model without a default: no key, and the client needs the rate as before
    built = VR.build(MODEL_ID, teacher_weights=None).eval()
    built.update(force=True)
    other = export_bundle(built, tmp_path)
    assert "default_rate" not in json.loads((other.edge_dir / "manifest.json").read_text())
    bare = EdgeClient(other.edge_dir, threads=1)
    assert bare.default_rate is None
    with pytest.raises(ValueError, match=r"give a rate index, one of 0 \(lambda 16\)"):
        bare.encode(image)


def test_a_manifest_default_rate_must_fit_its_rates(bundle):
    manifest = read_manifest(bundle.edge_dir, verify=False)
    fields = {k: getattr(manifest, k) for k in ("model_id", "bitstream_version", "preprocess",
                                                 "latent_channels", "reduction", "encoder_file",
                                                 "opset", "rates", "bundle_version")}
    with pytest.raises(ValueError, match="default_rate 3 does not fit the bundle's rates"):
        EdgeManifest(**fields, default_rate=3)
    fixed = {**fields, "rates": None, "bundle_version": 1, "bitstream_version": 1}
    with pytest.raises(ValueError, match="one fixed rate"):
        EdgeManifest(**fixed, default_rate=0)


def test_the_server_bundle_records_it_and_the_server_lists_it(model, bundle, tmp_path):
    from frankensplit.runtime.edge.bundle import ServerManifest
    from frankensplit.runtime.server.loading import load_server_model

    manifest = read_manifest(bundle.server_dir)
    assert isinstance(manifest, ServerManifest) and manifest.default_rate == DEFAULT
    loaded = load_server_model(str(bundle.server_dir), teacher_weights="offline", images=False)
    assert loaded.default_rate == DEFAULT  # what /v1/models lists, as for the zoo id
    fields = {k: getattr(manifest, k) for k in ("model_id", "bitstream_version", "architecture",
                                                 "latent_shape", "codec_file", "preprocess")}
    with pytest.raises(ValueError, match="default_rate 3 does not fit the model's rates"):
        ServerManifest(**fields, default_rate=3)
    # a model without a default (and a fixed-rate model): no key, as in older bundles
    built = VR.build(MODEL_ID, teacher_weights=None).eval()
    built.update(force=True)
    other = export_bundle(built, tmp_path)
    assert "default_rate" not in json.loads((other.server_dir / "manifest.json").read_text())
    assert read_manifest(other.server_dir).default_rate is None


def test_the_client_command_takes_the_bundles_default_rate(bundle, tmp_path, capsys):
    image = _image()
    argv = ["client", "--bundle", str(bundle.edge_dir), "--save", str(tmp_path), "--json"]
    assert cli_main([*argv, str(image)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["rate"] == {"model_id": MODEL_ID, "rate_index": DEFAULT, "lambda": RATES[DEFAULT]}
    assert bitstream.unpack((tmp_path / f"{image.stem}.fsb").read_bytes()).rate == DEFAULT
    assert cli_main([*argv, "--rate", "3", str(image)]) == 2
    assert "--rate 3: " in (err := capsys.readouterr().err) and "has rates 0..2" in err


def test_encode_without_rate_uses_the_zoo_default_and_a_codec_file_still_needs_it(
        registered, model, tmp_path, capsys):
    from frankensplit.models.codec_file import save_codec

    image = _image()
    weights = ["--teacher-weights", "offline"]
    assert cli_main(["encode", "--model", registered, *weights, "--out", str(tmp_path),
                     str(image)]) == 0
    capsys.readouterr()  # the note on random codec weights goes to stderr
    packet = (tmp_path / f"{image.stem}.fsb").read_bytes()
    assert bitstream.unpack(packet).rate == DEFAULT
    assert cli_main(["encode", "--model", registered, *weights, "--rate", "3", "--out",
                     str(tmp_path), str(image)]) == 2
    assert (f"--rate 3: {MODEL_ID} is a variable-rate model: pass --rate I, one of 0 (lambda 16)"
            in capsys.readouterr().err)
    save_codec(model, tmp_path / "best.safetensors")  # its training run's file: no default
    assert cli_main(["encode", "--model", str(tmp_path / "best.safetensors"), *weights,
                     "--out", str(tmp_path), str(image)]) == 2
    assert (f"{MODEL_ID} is a variable-rate model: pass --rate I, one of 0 (lambda 16), "
            "1 (lambda 4), 2 (lambda 1)" in capsys.readouterr().err)


def test_listings_show_the_default_rate_beside_the_rates(registered, model, capsys):
    from frankensplit.commands.info import describe
    from frankensplit.runtime.server.loading import load_server_model, served_model

    assert describe(model)["default_rate"] == DEFAULT
    assert cli_main(["info", registered, "--teacher-weights", "offline"]) == 0
    text = capsys.readouterr().out
    assert "rate 1                 lambda 4: no recorded dev figures (default)" in text
    assert "rate 0                 lambda 16: no recorded dev figures\n" in text
    assert cli_main(["models", "--json"]) == 0
    listed = {m["model_id"]: m for m in map(json.loads, capsys.readouterr().out.splitlines())}
    assert listed[MODEL_ID]["default_rate"] == DEFAULT
    assert "default_rate" not in listed["fs-lite0-untrained"]  # as "rates": only where set
    assert served_model(model).default_rate == DEFAULT
    served = load_server_model(registered, teacher_weights=None, images=False)
    assert (served.rates, served.default_rate) == (RATES, DEFAULT)


def test_profile_without_rate_times_the_default_rate(registered, monkeypatch, capsys):
    from frankensplit.sim import measure

    rates = []

    def measure_profile(model, images, *args, rate=None, **kwargs):
        rates.append(rate)  # the timing itself: tests/test_variable_rate_runtime.py
        raise ValueError("stop here")

    monkeypatch.setattr(measure, "measure_profile", measure_profile)
    assert cli_main(["profile", "--model", registered, "--teacher-weights", "offline",
                     "--images", str(TINY16), "--limit", "1", "--codecs", "none"]) == 2
    assert rates == [DEFAULT] and "stop here" in capsys.readouterr().err


def test_a_profile_of_the_model_without_a_rate_is_of_its_default_rate(model, bundle,
                                                                       monkeypatch):
    from frankensplit.sim import measure

    monkeypatch.setattr(measure, "measure_local", lambda *a, **k: {})  # the teacher: not here
    profile = measure.measure_profile(model, [_image()], threads=(1,), repeat=1, warmup=0,
                                      codecs={}, bundle=bundle.edge_dir)
    assert profile["rate"] == {"index": DEFAULT, "lambda": RATES[DEFAULT]}

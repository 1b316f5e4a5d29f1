"""Encoder reuse, served: one packet of the shipped ``fs-lite0-l4`` edge, classified by the lite0,
lite1 and lite2 decoders of one real server (uvicorn on loopback), each answer equal to decoding
it in-process with that model.

The lite1/lite2 decoders are reuse models written to codec files here: fs-lite0-l4's g_a and
entropy model, a random (seeded) blueprint for the other teacher, the real offline teacher
weights, the source's 224 px preprocessing. Untrained decoders answer badly but differently,
which is all a routing test needs: a packet sent to the wrong decoder gives another vector.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("uvicorn")

from frankensplit import bitstream
from frankensplit.cli import main as cli_main
from frankensplit.data import crop_transform, load_image, make_transform
from frankensplit.models.architecture import Architecture
from frankensplit.models.codec_file import codec_metadata, codec_state, load_codec_state, save_codec
from frankensplit.models.zoo import load_model_file
from frankensplit.runtime.edge.bundle import read_manifest
from frankensplit.runtime.edge.client import EdgeClient, ServerError, classify_url, post_packet
from frankensplit.runtime.edge.export import export_bundle
from frankensplit.runtime.server import create_app, run_in_thread
from frankensplit.runtime.server.loading import load_server_model, served_model
from frankensplit.runtime.server.routing import (
    AmbiguousBackboneError,
    Encoder,
    UnknownBackboneError,
    choose_teacher,
    group_by_encoder,
)

SOURCE = "fs-lite0-l4"
TEACHERS = {"lite1": "tf_efficientnet_lite1", "lite2": "tf_efficientnet_lite2"}
TINY16 = Path(__file__).resolve().parents[2] / "shared/data/fixtures/tiny16"


def _image() -> Path:
    images = sorted(TINY16.glob("*.jpg"))
    if not images:
        pytest.skip(f"fixture images not found in {TINY16} (needs the shared data folder)")
    return images[0]


@pytest.fixture(scope="module")
def source(fixed_model):
    """The shipped source model: the session's fixed-rate reference (conftest's `fixed_model`)."""
    assert fixed_model.model_id == SOURCE, "conftest's fixed-rate reference is the reuse source"
    return fixed_model


def _write_reuse_file(source, short: str, folder: Path) -> Path:
    """A reuse model's codec file: the source's g_a and entropy model, a fresh g_s."""
    model = Architecture(TEACHERS[short], input_size=224, crop_pct=0.875,
                         reuses=SOURCE).build(f"{SOURCE}.{short}")
    load_codec_state(model, codec_state(source), parts=("g_a", "entropy"))
    path = folder / f"{model.model_id}.safetensors"
    save_codec(model, path)
    return path


@pytest.fixture(scope="module")
def reuse_files(source, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("reuse")
    return {short: _write_reuse_file(source, short, folder) for short in TEACHERS}


@pytest.fixture(scope="module")
def reuse(reuse_files):
    """short name -> the reuse model loaded back from its file (as `frankensplit eval` would)."""
    return {short: load_model_file(path) for short, path in reuse_files.items()}


@pytest.fixture(scope="module")
def server(source, reuse):
    app = create_app({m.model_id: served_model(m) for m in (source, *reuse.values())})
    with run_in_thread(app) as url:
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield url


@pytest.fixture(scope="module")
def packet(source, fixed_bundle) -> bytes:
    """One packet of the source's torch-free edge bundle (conftest's `fixed_bundle`)."""
    assert read_manifest(fixed_bundle.edge_dir).model_id == SOURCE
    return EdgeClient(fixed_bundle.edge_dir, threads=1).encode(_image())


def _vector(answer: dict) -> np.ndarray:
    probs = np.full(len(answer["predictions"]), np.nan)
    for p in answer["predictions"]:
        probs[p["index"]] = p["probability"]
    return probs


def test_a_reuse_codec_file_records_its_source(source, reuse, reuse_files, tmp_path):
    for short, model in reuse.items():
        arch = json.loads(codec_metadata(reuse_files[short])["architecture"])
        assert arch["reuses"] == SOURCE and arch["teacher"] == TEACHERS[short]
        assert (model.model_id, model.encoder_id) == (f"{SOURCE}.{short}", SOURCE)
        assert model.data_config["input_size"] == (3, 224, 224)
        assert model.teacher.data_config["input_size"] != (3, 224, 224)  # the teacher's own
    # a model of its own encoder records nothing new: its files and packets are today's
    assert source.architecture.reuses is None and source.encoder_id == SOURCE
    # a file that says it reuses the source but holds another g_a is refused at load
    lite1 = reuse["lite1"].teacher
    other = Architecture(lite1.name, input_size=224, crop_pct=0.875,
                         reuses=SOURCE).build(f"{SOURCE}.other", backbone=lite1)
    save_codec(other, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match=f"reuses '{SOURCE}'.*differ"):
        load_model_file(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="cannot reuse itself"):
        Architecture(lite1.name, reuses=SOURCE).build(SOURCE, backbone=lite1)
    with pytest.raises(ValueError, match="model_id"):
        Architecture(lite1.name, reuses="fs-lite0-l4@lite1").build(f"{SOURCE}.x", backbone=lite1)


def test_a_reuse_model_writes_the_source_packet_bytes(source, reuse):
    image = load_image(_image())
    x = make_transform(source.data_config)(image)[None]  # (1, 3, 224, 224)
    (expected,) = source.edge.encode(x)
    assert bitstream.unpack(expected).model_id == SOURCE
    for model in reuse.values():
        x_own = make_transform(model.data_config)(image)[None]  # its own preprocessing
        torch.testing.assert_close(x_own, x, rtol=0, atol=0)
        assert model.edge.encode(x_own) == [expected]
        # and its server half decodes the source's packets into its own teacher's classes
        logits = model.server.decode([expected])
        assert logits.shape == (1, 1000)
        assert (logits - source.server.decode([expected])).abs().max() > 1e-3


def test_a_reuse_model_exports_the_source_edge_and_its_own_server(source, reuse, packet,
                                                                  fixed_bundle, tmp_path):
    model = reuse["lite1"]
    bundle = export_bundle(model, tmp_path)
    edge, server = read_manifest(bundle.edge_dir), read_manifest(bundle.server_dir)
    assert edge.model_id == SOURCE and edge.latent_shape == (48, 28, 28)
    assert edge.preprocess == read_manifest(fixed_bundle.edge_dir).preprocess
    assert EdgeClient(bundle.edge_dir, threads=1).encode(_image()) == packet
    arch = server.architecture
    assert (server.model_id, arch.reuses, arch.teacher) == (model.model_id, SOURCE,
                                                            TEACHERS["lite1"])
    assert (arch.input_size, arch.crop_pct, server.latent_shape) == (224, 0.875, (48, 28, 28))
    loaded = load_server_model(str(bundle.server_dir))
    assert (loaded.model_id, loaded.encoder_id, loaded.teacher) == (model.model_id, SOURCE,
                                                                    TEACHERS["lite1"])
    assert loaded.latent_shape == (48, 28, 28) and loaded.data_config == model.data_config
    torch.testing.assert_close(loaded.part.decode([packet]), model.server.decode([packet]))


def test_one_packet_is_classified_by_three_backbones(server, source, reuse, packet):
    cases = [(None, source), ("tf_efficientnet_lite1", reuse["lite1"]),
             (f"{SOURCE}.lite2", reuse["lite2"]), (SOURCE, source),
             ("tf_efficientnet_lite2", reuse["lite2"])]
    vectors = {}
    for backbone, model in cases:
        answer = post_packet(server, packet, topk=1000, backbone=backbone)
        assert (answer["model_id"], answer["encoder_id"], answer["backbone"]) == (
            model.model_id, SOURCE, model.teacher.name), backbone
        expected = model.server.decode([packet]).softmax(1)[0].numpy()
        np.testing.assert_allclose(_vector(answer), expected, rtol=1e-4, atol=1e-6)
        vectors[model.model_id] = expected
    # each check can fail: the three decoders read this one packet into three vectors
    ids = sorted(vectors)
    for i, a in enumerate(ids):
        for b in ids[:i]:
            assert np.abs(vectors[a] - vectors[b]).max() > 1e-3, (a, b)


def test_the_edge_client_and_cli_choose_the_backbone(server, reuse, fixed_bundle, capsys):
    client = EdgeClient(fixed_bundle.edge_dir, threads=1)
    answer = client.classify(server, _image(), topk=3, backbone="tf_efficientnet_lite1")
    assert answer["model_id"] == reuse["lite1"].model_id and len(answer["predictions"]) == 3
    rc = cli_main(["client", str(_image()), "--bundle", str(fixed_bundle.edge_dir),
                   "--url", server, "--backbone", f"{SOURCE}.lite2", "--json"])
    assert rc == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["answer"]["model_id"] == reuse["lite2"].model_id
    assert classify_url("http://h:1", 5, "tf_efficientnet_lite1") == (
        "http://h:1/v1/classify?topk=5&backbone=tf_efficientnet_lite1")


def test_unknown_encoder_and_unknown_backbone(server, packet):
    def post(body: bytes, query: str) -> httpx.Response:
        return httpx.post(f"{server}/v1/classify{query}", content=body, timeout=60,
                          headers={"Content-Type": "application/octet-stream"})

    foreign = bitstream.pack(dataclasses.replace(bitstream.unpack(packet),
                                                 model_id="no-such-model"))
    response = post(foreign, "?backbone=tf_efficientnet_lite1")
    assert response.status_code == 404
    assert "no-such-model" in response.json()["detail"] and SOURCE in response.json()["detail"]
    for backbone in ("resnet50", "fs-lite0-l1"):  # a timm name, a model id: neither served here
        response = post(packet, f"?backbone={backbone}")
        assert response.status_code == 404, response.text
        detail = response.json()["detail"]
        assert backbone in detail
        for available in (SOURCE, f"{SOURCE}.lite1", f"{SOURCE}.lite2", "tf_efficientnet_lite2"):
            assert available in detail  # the error lists what is served for this encoder
    assert post(packet, "?backbone=Bad%20Name!").status_code == 400
    with pytest.raises(ServerError, match="404.*resnet50"):
        post_packet(server, packet, backbone="resnet50")


def test_models_lists_the_backbones_per_encoder(server):
    body = httpx.get(f"{server}/v1/models").json()
    assert body["encoders"] == {SOURCE: {
        "latent_shape": [48, 28, 28], "default": SOURCE,
        "backbones": [{"model_id": SOURCE, "teacher": "tf_efficientnet_lite0"},
                      {"model_id": f"{SOURCE}.lite1", "teacher": "tf_efficientnet_lite1"},
                      {"model_id": f"{SOURCE}.lite2", "teacher": "tf_efficientnet_lite2"}],
    }}
    assert {m["model_id"]: m["encoder_id"] for m in body["models"]} == {
        SOURCE: SOURCE, f"{SOURCE}.lite1": SOURCE, f"{SOURCE}.lite2": SOURCE}


def test_routing_defaults_ambiguity_and_refused_sets(source, reuse):
    lite1, lite2 = served_model(reuse["lite1"]), served_model(reuse["lite2"])
    assert Encoder(SOURCE, (lite1,)).choose() is lite1  # the only decoder needs no parameter
    with pytest.raises(AmbiguousBackboneError, match="choose one with"):
        Encoder(SOURCE, (lite1, lite2)).choose()
    twin = dataclasses.replace(lite2, model_id=f"{SOURCE}.lite1b", teacher=lite1.teacher)
    with pytest.raises(AmbiguousBackboneError, match="name one by model id"):
        Encoder(SOURCE, (lite1, twin)).choose("tf_efficientnet_lite1")
    assert Encoder(SOURCE, (lite1, twin)).choose(f"{SOURCE}.lite1b") is twin
    with pytest.raises(UnknownBackboneError):
        Encoder(SOURCE, (lite1,)).choose("resnet50")
    # decoders of one encoder must decode its packets alike: same entropy model, same latent
    teacher = reuse["lite1"].teacher  # a random entropy model below, not the source's
    stranger = Architecture(teacher.name, input_size=224, crop_pct=0.875,
                            reuses=SOURCE).build(f"{SOURCE}.stranger", backbone=teacher)
    stranger.eval()
    with pytest.raises(ValueError, match="different entropy models"):
        group_by_encoder([served_model(source), served_model(stranger)])
    with pytest.raises(ValueError, match="different latent shapes"):
        group_by_encoder([served_model(source),
                          dataclasses.replace(lite1, latent_shape=(48, 30, 30))])
    assert list(group_by_encoder([served_model(source), lite1, lite2])) == [SOURCE]
    # images (/v1/classify-image) name no encoder: the backbone picks a whole teacher
    assert choose_teacher([lite1]) is lite1
    assert choose_teacher([lite2, lite1], f"{SOURCE}.lite2") is lite2
    assert choose_teacher([lite2, lite1], "tf_efficientnet_lite1") is lite1
    assert choose_teacher([twin, lite1], "tf_efficientnet_lite1") is lite1  # one teacher: first id
    with pytest.raises(AmbiguousBackboneError, match="choose one with"):
        choose_teacher([lite1, lite2])
    with pytest.raises(UnknownBackboneError, match="resnet50"):
        choose_teacher([lite1, lite2], "resnet50")


def test_an_image_is_classified_by_the_teacher_asked_for(server, reuse):
    """``/v1/classify-image`` with three teachers served: the backbone picks one (none: 400)."""
    teacher, config = reuse["lite1"].teacher, reuse["lite1"].data_config
    crop = crop_transform(config)(load_image(_image()))  # 224 px: the reuse input
    buffer = io.BytesIO()
    crop.save(buffer, "PNG")
    url = f"{server}/v1/classify-image"
    assert httpx.post(url, content=buffer.getvalue(), timeout=60).status_code == 400
    answer = httpx.post(f"{url}?topk=1000&backbone=tf_efficientnet_lite1",
                        content=buffer.getvalue(), timeout=60).json()
    assert (answer["model_id"], answer["backbone"]) == (reuse["lite1"].model_id, teacher.name)
    x = make_transform(config)(load_image(_image()))[None]
    np.testing.assert_allclose(_vector(answer), teacher(x).softmax(1)[0].numpy(), rtol=1e-4,
                               atol=1e-6)

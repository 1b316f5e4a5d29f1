"""Deploying a variable-rate model: one edge bundle for every rate, the torch-free client coding
at any of them byte for byte as the torch edge, one server id decoding every rate (sandboxed, as
served) exactly as in process, rate choice within one bundle, and fixed-rate (version 1) packets
and bundles unchanged beside it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from frankensplit import bitstream
from frankensplit.cli import main as cli_main
from frankensplit.models.architecture import Architecture
from frankensplit.runtime.edge.bundle import BUNDLE_VERSION, RATES_BUNDLE_VERSION, read_manifest
from frankensplit.runtime.edge.client import EdgeClient, post_packet
from frankensplit.runtime.edge.export import export_bundle, export_model
from frankensplit.runtime.server import create_app, run_in_thread
from frankensplit.runtime.server.loading import load_server_model
from frankensplit.threads import seeded

REPO = Path(__file__).resolve().parents[1]
TINY16 = REPO.parent / "shared/data/fixtures/tiny16"
RATES = (16.0, 4.0, 1.0)
MODEL_ID = "fs-test-vr"


pytestmark = pytest.mark.usefixtures("one_thread")


def spread_gains(m):
    """A variable-rate model ``m`` with its gains spread so that the rates differ, tables built."""
    with torch.no_grad():
        m.entropy.log_gain.copy_(torch.linspace(-1.0, 1.0, len(m.rates))[:, None].expand(-1, 48))
        m.entropy.log_inverse_gain.copy_(-m.entropy.log_gain)
    m.update(force=True)
    return m


@pytest.fixture(scope="module")
def model():
    """A seeded variable-rate lite0 model on the real (offline) teacher, gains spread so that
    the rates differ."""
    arch = Architecture(teacher="tf_efficientnet_lite0", entropy="gained_factorized", rates=RATES)
    return spread_gains(arch.build(MODEL_ID, teacher_weights="offline").eval())


@pytest.fixture(scope="module")
def bundle(model, tmp_path_factory):
    return export_bundle(model, tmp_path_factory.mktemp("vr"))


@pytest.fixture(scope="module")
def client(bundle):
    return EdgeClient(bundle.edge_dir, threads=1)


@pytest.fixture(scope="module")
def fixed_client(fixed_bundle):
    """The edge client of the fixed-rate reference model (conftest's `fixed_bundle`)."""
    return EdgeClient(fixed_bundle.edge_dir, threads=1)


@pytest.fixture(scope="module")
def server(bundle, fixed_model):
    """A real server of the variable-rate bundle (sandboxed decoding, as served by default) and
    of the fixed-rate reference model (conftest's `fixed_model`)."""
    from frankensplit.runtime.server.loading import served_model

    vr = load_server_model(str(bundle.server_dir), teacher_weights="offline", images=False)
    app = create_app({MODEL_ID: vr, fixed_model.model_id: served_model(fixed_model)})
    with run_in_thread(app) as url:
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        yield url


@pytest.fixture(scope="module")
def codec_file(model, tmp_path_factory):
    """The model as a training run writes it (`save_codec`): what ``--model PATH`` takes."""
    from frankensplit.models.codec_file import save_codec

    path = tmp_path_factory.mktemp("codec") / "best.safetensors"
    save_codec(model, path)
    return path


def _images(n: int = 2) -> list[Path]:
    images = sorted(TINY16.glob("*.jpg"))[:n]
    if len(images) < n:
        pytest.skip(f"fixture images not found in {TINY16}")
    return images


def test_one_edge_bundle_holds_every_rate_and_fixed_bundles_are_unchanged(bundle, fixed_bundle):
    manifest = read_manifest(bundle.edge_dir)
    assert manifest.rates == RATES and manifest.bundle_version == RATES_BUNDLE_VERSION
    assert manifest.bitstream_version == bitstream.RATE_VERSION
    assert manifest.encoder_file == "encoder.onnx" and len(list(bundle.edge_dir.glob("*.onnx"))) == 1
    for rate in range(len(RATES)):
        assert {f"gain_r{rate}.npy", f"quantized_cdf_r{rate}.npy"} <= set(manifest.files)
    fixed = json.loads((fixed_bundle.edge_dir / "manifest.json").read_text())
    assert fixed["bundle_version"] == BUNDLE_VERSION == 1 and "rates" not in fixed
    assert fixed["bitstream_version"] == bitstream.FORMAT_VERSION
    server = read_manifest(bundle.server_dir)
    assert server.architecture.rates == RATES and server.bitstream_version == bitstream.RATE_VERSION


def test_client_bytes_equal_torch_bytes_at_every_rate_for_the_same_latent(model, client):
    with seeded(1):
        x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        y = model.g_a(x)  # (2, 48, 28, 28)
    for rate in range(len(RATES)):
        torch_packets = model.edge.encode(x, rate=rate)
        assert [client.pack(yi.numpy(), rate) for yi in y] == torch_packets
        assert {bitstream.unpack(p).rate for p in torch_packets} == {rate}
    with pytest.raises(ValueError, match="rate index"):
        client.pack(y[0].numpy())
    with pytest.raises(ValueError, match=r"0 \(lambda 16\)"):
        client.pack(y[0].numpy(), len(RATES))


def test_every_served_rate_equals_in_process_decoding(model, client, server):
    image = _images(1)[0]
    sizes = []
    for rate in range(len(RATES)):
        packet = client.encode(image, rate)
        answer = post_packet(server, packet, topk=5)
        assert answer["model_id"] == MODEL_ID
        probs = model.server.decode([packet]).softmax(1)[0]
        top = [p["index"] for p in answer["predictions"]]
        assert top == probs.topk(5).indices.tolist()
        np.testing.assert_allclose([p["probability"] for p in answer["predictions"]],
                                   probs[top].numpy(), rtol=1e-5, atol=1e-6)
        sizes.append(len(packet))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # one bundle, several rates


def test_models_lists_the_rates_under_one_id(server):
    models = {m["model_id"]: m for m in httpx.get(f"{server}/v1/models").json()["models"]}
    assert [(r["index"], r["lambda"]) for r in models[MODEL_ID]["rates"]] == list(enumerate(RATES))
    assert all(m["rates"] is None for i, m in models.items() if i != MODEL_ID)
    # this seeded model has no default rate (tests/test_default_rate.py: one that has), a
    # fixed-rate model none
    assert all(m["default_rate"] is None for m in models.values())


def test_an_unknown_or_missing_rate_is_a_clear_400_and_old_packets_still_work(
        client, server, fixed_client):
    image = _images(1)[0]
    packet = bitstream.unpack(client.encode(image, 0))
    for forged, says in ((bitstream.Packet(MODEL_ID, packet.shape, packet.payload, rate=3),
                          "rate 3"),
                         (bitstream.Packet(MODEL_ID, packet.shape, packet.payload), "rate None")):
        answer = httpx.post(f"{server}/v1/classify", content=bitstream.pack(forged))
        assert answer.status_code == 400 and says in answer.json()["detail"]
        assert "0..2" in answer.json()["detail"]
    old = fixed_client.encode(image)  # a fixed-rate model's version-1 packet, same server
    assert old[3] == bitstream.FORMAT_VERSION
    assert post_packet(server, old)["predictions"]


def test_rate_choice_within_one_bundle(bundle, server, capsys):
    images = [str(p) for p in _images(2)]
    argv = ["client", "--bundle", str(bundle.edge_dir), "--url", server, "--json"]
    assert cli_main([*argv, "--deadline-ms", "5000", *images]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and lines[0]["rate"]["reason"] == "no estimate"
    assert lines[0]["rate"]["rate_index"] == 0 and lines[0]["rate"]["lambda"] == RATES[0]
    assert lines[0]["rate"]["predicted_ms"] == {}  # nothing known of the link yet
    assert set(lines[1]["rate"]["predicted_ms"]) <= {f"{MODEL_ID}@{v:g}" for v in RATES}
    assert all(line["answer"]["model_id"] == MODEL_ID for line in lines)
    assert cli_main([*argv, "--rate", "2", images[0]]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["answer"]["predictions"]
    assert line["rate"] == {"model_id": MODEL_ID, "rate_index": 2, "lambda": RATES[2]}
    assert cli_main([*argv, images[0]]) == 2
    assert "--rate I, one of 0 (lambda 16)" in capsys.readouterr().err
    assert cli_main([*argv, "--rate", "3", images[0]]) == 2
    assert "rates 0..2" in capsys.readouterr().err


def test_export_of_a_codec_file_writes_one_bundle_for_every_rate(model, tmp_path, capsys):
    from frankensplit.models.codec_file import save_codec

    save_codec(model, tmp_path / "vr.safetensors")
    result = export_model(str(tmp_path / "vr.safetensors"), tmp_path / "out",
                          teacher_weights=None)
    assert read_manifest(result.edge_dir).rates == RATES
    assert cli_main(["export", "--model", str(tmp_path / "vr.safetensors"), "--out",
                     str(tmp_path / "cli"), "--teacher-weights", "offline"]) == 0
    assert "rates 0: lambda 16, 1: lambda 4, 2: lambda 1" in capsys.readouterr().out


def test_per_rate_figures_are_read_where_recorded_and_info_lists_the_rates(model, fixed_model):
    from frankensplit.commands.info import describe
    from frankensplit.models.zoo_index import rate_figures

    metrics = {"dev1286_top1@4": 78.5, "dev1286_bytes_per_image@4": 4000.0, "dev1286_top1": 1.0}
    figures = rate_figures(metrics, RATES)
    assert figures[0] == figures[2] == {}
    assert (figures[1]["top1"], figures[1]["bytes_per_image"]) == (78.5, 4000.0)
    described = describe(model)
    assert [(r["index"], r["lambda"]) for r in described["rates"]] == list(enumerate(RATES))
    # the same g_a as the fixed-rate lite0 model, plus the gain: one multiply per latent element
    assert described["edge_macs"] == describe(fixed_model)["edge_macs"] + 48 * 28 * 28


def test_vr_edge_cost_benchmark_counts_the_gain_and_times_every_rate(
        model, bundle, fixed_model, fixed_bundle, monkeypatch):
    """A smoke run of ``benchmarks/vr_edge_cost.py``'s parts on this module's bundles."""
    import importlib.util
    import sys

    monkeypatch.setattr(sys, "path", [*sys.path])  # the script puts benchmarks/ on it
    spec = importlib.util.spec_from_file_location("vr_edge_cost",
                                                  REPO / "benchmarks/vr_edge_cost.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    fixed, vr = bench.edge_macs(fixed_model), bench.edge_macs(model)
    assert fixed["gain"] == 0 and vr["gain"] == 48 * 28 * 28  # one multiply per latent element
    assert vr["total"] == vr["g_a"] + vr["gain"] and vr["g_a"] == fixed["g_a"] > 0
    rates = bench.default_rates(len(RATES))
    timed = bench.time_edge({"fixed": fixed_bundle.edge_dir, "vr": bundle.edge_dir}, rates,
                            _images(1)[0], threads=1, runs=2, warmup=0)
    assert list(timed) == ["fixed", "vr@0", "vr@1", "vr@2"]
    assert all(v["g_a"] > 0 and v["entropy"] > 0 and v["total"] > 0 for v in timed.values())
    sizes = [timed[f"vr@{r}"]["bytes"] for r in rates]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def _packet_sizes(model, image: Path) -> list[int]:
    from frankensplit.data import load_image, make_transform

    x = make_transform(model.data_config, "eval")(load_image(image)).unsqueeze(0)
    return [len(model.edge.encode(x, rate)[0]) for rate in range(len(RATES))]


def test_encode_and_decode_name_each_packets_rate(codec_file, tmp_path, capsys):
    image = _images(1)[0]
    model = ["--model", str(codec_file), "--teacher-weights", "offline"]
    assert cli_main(["encode", *model, "--rate", "1", "--out", str(tmp_path), str(image)]) == 0
    capsys.readouterr()
    assert cli_main(["decode", *model, "--topk", "1", str(tmp_path / f"{image.stem}.fsb")]) == 0
    line = json.loads(capsys.readouterr().out)
    assert (line["model_id"], line["rate"], line["lambda"]) == (MODEL_ID, 1, RATES[1])
    assert cli_main(["encode", *model, "--rate", "3", "--out", str(tmp_path), str(image)]) == 2
    assert "--rate 3: fs-test-vr is a variable-rate model: pass --rate I, one of 0 (lambda 16)" \
        in capsys.readouterr().err


def test_demo_shows_every_rate_or_the_one_asked(model, codec_file, tmp_path, capsys,
                                               monkeypatch):
    import re
    import shutil

    from frankensplit.eval import shipped

    monkeypatch.setattr(shipped, "plot_results", lambda path, *a, **k: path)  # tests/test_demo.py
    image = _images(1)[0]
    shutil.copy(image, tmp_path / image.name)
    argv = ["demo", "--model", str(codec_file), "--teacher-weights", "offline", "--images",
            str(tmp_path), "--out", str(tmp_path / "out")]
    sizes = _packet_sizes(model, image)
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    rows = re.findall(r"^ +(\d+) \( *([\d.]+)\) +([\d,]+) ", text, re.MULTILINE)
    assert [(int(r), float(v), int(b.replace(",", ""))) for r, v, b in rows] == \
        [(r, RATES[r], sizes[r]) for r in range(len(RATES))]
    assert "rate 2 (lambda 1): mean" in text
    assert cli_main([*argv, "--rate", "1"]) == 0
    text = capsys.readouterr().out
    assert f"FrankenSplit {MODEL_ID}@4, from the packet" in text
    assert f"{image.name}: {sizes[1]:,} bytes on the wire" in text


def test_profile_times_one_rate_and_records_it(model, bundle, monkeypatch):
    from frankensplit.sim import measure
    from frankensplit.sim.profile import format_profile, profiled_setting

    monkeypatch.setattr(measure, "measure_local", lambda *a, **k: {})  # the teacher: not here
    image = _images(1)[0]
    kwargs = {"threads": (1,), "repeat": 1, "warmup": 0, "codecs": {}, "bundle": bundle.edge_dir}
    profile = measure.measure_profile(model, [image], rate=2, **kwargs)
    assert profile["rate"] == {"index": 2, "lambda": RATES[2]}
    assert profile["frankensplit"]["packet_bytes"] == _packet_sizes(model, image)[2]
    assert profiled_setting(profile) == f"{MODEL_ID}@1"
    assert format_profile(profile).startswith(f"device profile: {MODEL_ID}@1 ")
    for rate in (None, 3):
        with pytest.raises(ValueError, match="rate index in 0..2"):
            measure.measure_profile(model, [image], rate=rate, **kwargs)


def test_a_what_if_teacher_runs_on_the_profiled_models_latent_at_every_rate(model, monkeypatch):
    """``profile --teachers``: a larger teacher's architecture-only entry (the cheap
    ``fs-lite1-untrained`` here) built with the profiled variable-rate model's edge (entropy model,
    rates) passes `check_same_edge`, which refuses the fixed-rate entry as it stands, and its g_s
    and tail run on the latent the profiled model decodes at each rate."""
    from types import SimpleNamespace

    from frankensplit.data import crop_transform, load_image, normalize_transform
    from frankensplit.models.zoo import MODELS
    from frankensplit.sim import measure_teachers
    from frankensplit.sim.measure_teachers import check_same_edge, measure_what_if, what_if_model

    entry = MODELS.get("fs-lite1-untrained").architecture
    assert entry.rates is None and entry.entropy != model.architecture.entropy  # can fail below
    with pytest.raises(ValueError, match="another edge than fs-test-vr .*rates"):
        check_same_edge(model, SimpleNamespace(model_id="fs-lite1-untrained", architecture=entry))
    what_if = what_if_model("fs-lite1-untrained", model)  # random weights, teacher's too
    arch = what_if.architecture
    assert (what_if.model_id, arch.teacher) == ("fs-lite1-untrained", "tf_efficientnet_lite1")
    assert (arch.entropy, arch.rates) == (model.architecture.entropy, RATES)
    check_same_edge(model, what_if)
    crop = crop_transform(model.data_config)(load_image(_images(1)[0]))
    x = normalize_transform(model.data_config)(crop).unsqueeze(0)  # (1, 3, 224, 224)
    packets = [model.edge.encode(x, rate)[0] for rate in range(len(RATES))]
    assert [bitstream.unpack(p).rate for p in packets] == list(range(len(RATES)))
    with torch.no_grad():
        for packet in packets:
            y_hat = model.server.decode_latent([packet])  # (1, 48, 28, 28), at the packet's rate
            logits = what_if.serving_tail(what_if.g_s(y_hat))
            assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    monkeypatch.setattr(measure_teachers, "measure_local", lambda *a, **k: {})  # ONNX: test_sim
    timed = measure_what_if(model, what_if, [x], [crop] * len(RATES), packets, threads=(1,),
                            repeat=1, warmup=0, server_threads=1)
    assert (timed["model_id"], timed["edge_from"]) == ("fs-lite1-untrained", MODEL_ID)
    assert timed["server"]["g_s"]["n"] == timed["server"]["tail"]["n"] == len(RATES)


def test_serve_takes_a_codec_file(model, codec_file, tmp_path):
    from safetensors.numpy import save_file

    from frankensplit.commands.serve import check_weights

    check_weights(str(codec_file))
    served = load_server_model(str(codec_file), teacher_weights="offline", images=False)
    assert (served.model_id, served.rates) == (MODEL_ID, RATES)
    with seeded(2):
        x = torch.randn(1, 3, 224, 224)
    packet = model.edge.encode(x, rate=1)[0]
    torch.testing.assert_close(served.part.decode([packet]), model.server.decode([packet]))
    save_file({"a": np.zeros(1, dtype=np.float32)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match="records no model id and architecture"):
        check_weights(str(tmp_path / "bare.safetensors"))


def test_int8_latent_error_is_measured_in_each_rates_symbol_steps(model, tmp_path, monkeypatch):
    """A step of rate r is 1 / gain[r] in y: the same int8 error is more symbols at a larger
    gain, and the refusal names the worst rate and those within the limit."""
    from frankensplit.runtime.edge import quantize
    from frankensplit.runtime.edge.export import Int8Calibration, export_edge

    y = np.zeros((1, 48, 2, 2), np.float32)
    outputs = iter([y, y + 0.2])  # fp32, then int8: off by 0.2 everywhere

    class Session:
        def run(self, names, feeds):
            return [next(outputs)]

    monkeypatch.setattr(quantize, "_session", lambda path, threads: Session())
    gains = [np.full(48, g, np.float32) for g in (0.5, 1.0, 4.0)]
    errors = quantize.latent_error("f", "q", np.zeros((1, 3, 8, 8)), gains)
    assert errors == pytest.approx([0.1, 0.2, 0.8])
    if not TINY16.is_dir():
        pytest.skip(f"fixture images not found in {TINY16}")
    monkeypatch.setattr(quantize, "quantize_encoder", lambda *a, **k: None)
    monkeypatch.setattr(quantize, "latent_error", lambda *a: [0.1, 0.3, 0.9])
    with pytest.raises(RuntimeError, match=r"0.9 symbol steps .* at rate 2 \(lambda 1; rates "
                                           r"within the limit: 0, 1\)"):
        export_edge(model, tmp_path / "edge", int8=Int8Calibration(TINY16, 2))

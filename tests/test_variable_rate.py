"""The variable-rate model: the rate in the packet, exact decoding at every rate, its warm start
from a fixed-rate codec, its codec file, and training a tiny variable-rate config on CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from frankensplit import bitstream
from frankensplit.config import load_config
from frankensplit.files import read_safetensors
from frankensplit.models.architecture import Architecture
from frankensplit.models.codec_file import load_codec, save_codec
from frankensplit.models.entropy import GainedFactorizedPrior, scaled_bottleneck_state
from frankensplit.models.zoo import load_model_file
from frankensplit.threads import seeded, torch_threads
from frankensplit.train import train
from frankensplit.train.variable_rate import initial_gain, warm_start_variable_rate

REPO = Path(__file__).resolve().parents[1]
TINY16 = REPO.parent / "shared/data/fixtures/tiny16"
RATES = (16.0, 4.0, 1.0)
ARCH = Architecture(teacher="tf_efficientnet_lite0", entropy="gained_factorized", rates=RATES)


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):  # small tensors on a shared 2-core box
        yield


@pytest.fixture(scope="module")
def model():
    """A seeded variable-rate lite0 model (random teacher: the coding does not depend on it),
    its gains spread so that the rates differ."""
    m = ARCH.build("fs-test-vr", teacher_weights=None).eval()
    with torch.no_grad():
        m.entropy.log_gain.copy_(torch.linspace(-1.0, 1.0, len(RATES))[:, None].expand(-1, 48))
        m.entropy.log_inverse_gain.copy_(-m.entropy.log_gain)
    m.update(force=True)
    return m


def _images(n: int = 2) -> torch.Tensor:
    with seeded(0):
        return torch.randn(n, 3, 224, 224)


def test_packet_carries_its_rate_in_one_more_header_byte() -> None:
    fixed = bitstream.Packet("fs-lite0-vr", (48, 28, 28), b"\x01\x02")
    rated = bitstream.Packet("fs-lite0-vr", (48, 28, 28), b"\x01\x02", rate=7)
    assert bitstream.unpack(bitstream.pack(rated)) == rated
    assert bitstream.unpack(bitstream.pack(fixed)) == fixed
    assert bitstream.pack(fixed)[3] == bitstream.FORMAT_VERSION == 1  # old packets unchanged
    assert bitstream.pack(rated)[3] == bitstream.RATE_VERSION
    assert len(bitstream.pack(rated)) == len(bitstream.pack(fixed)) + 1
    assert bitstream.header_size("fs-lite0-vr", 2, rate=7) == len(bitstream.pack(rated)) - 2
    for bad in (-1, bitstream.MAX_RATES, 1.0, True):
        with pytest.raises(ValueError, match="rate"):
            bitstream.Packet("fs-lite0-vr", (48, 28, 28), b"", rate=bad)


def test_a_flipped_rate_byte_is_corruption() -> None:
    data = bytearray(bitstream.pack(bitstream.Packet("m", (48, 28, 28), b"\x00" * 9, rate=2)))
    data[3 + 1 + 1 + 1 + 6] ^= 1  # the rate byte after W
    with pytest.raises(bitstream.CorruptError, match="CRC"):
        bitstream.unpack(bytes(data))


def test_every_rate_decodes_exactly_what_the_edge_quantized(model) -> None:
    x = _images()
    y = model.g_a(x)
    sizes = []
    for rate in range(len(RATES)):
        packets = model.edge.encode(x, rate=rate)
        assert {bitstream.unpack(p).rate for p in packets} == {rate}
        torch.testing.assert_close(model.server.decode_latent(packets),
                                   model.entropy.quantize(y, rate), rtol=0, atol=0)
        sizes.append(sum(map(len, packets)))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # a larger gain: more bytes


def test_a_batch_of_several_rates_decodes_each_at_its_own(model) -> None:
    x = _images()
    mixed = [model.edge.encode(x[:1], rate=0)[0], model.edge.encode(x[1:], rate=2)[0]]
    alone = torch.cat([model.server.decode_latent([mixed[0]]),
                       model.server.decode_latent([mixed[1]])])
    torch.testing.assert_close(model.server.decode_latent(mixed), alone, rtol=0, atol=0)
    assert model.server.decode(mixed).shape == (2, 1000)


def test_a_rate_outside_the_grid_or_missing_is_refused(model) -> None:
    x = _images(1)
    with pytest.raises(ValueError, match="rate index in 0..2"):
        model.edge.encode(x)
    with pytest.raises(ValueError, match="rate index in 0..2"):
        model.edge.encode(x, rate=3)
    (packet,) = model.edge.encode(x, rate=1)
    forged = bitstream.pack(bitstream.Packet(model.model_id, (48, 28, 28),
                                             bitstream.unpack(packet).payload, rate=3))
    with pytest.raises(bitstream.CorruptError, match="rate"):
        model.server.decode([forged])
    v1 = bitstream.pack(bitstream.Packet(model.model_id, (48, 28, 28), b"\x00" * 8))
    with pytest.raises(bitstream.CorruptError, match="rate"):
        model.server.decode([v1])


def test_a_fixed_rate_model_refuses_a_rated_packet() -> None:
    fixed = Architecture(teacher="tf_efficientnet_lite0").build("fs-test-l1", teacher_weights=None)
    fixed.eval().update(force=True)
    rated = bitstream.pack(bitstream.Packet("fs-test-l1", (48, 28, 28), b"\x00" * 8, rate=0))
    with pytest.raises(bitstream.CorruptError, match="one fixed rate"):
        fixed.server.decode([rated])
    with pytest.raises(ValueError, match="one fixed rate"):
        fixed.edge.encode(_images(1), rate=0)


def test_the_codec_file_rebuilds_every_rate(model, tmp_path) -> None:
    save_codec(model, tmp_path / "vr.safetensors")
    loaded = load_model_file(tmp_path / "vr.safetensors", teacher_weights=None)
    assert loaded.architecture.rates == RATES
    x = _images(1)
    for rate in range(len(RATES)):
        assert loaded.edge.encode(x, rate=rate) == model.edge.encode(x, rate=rate)


def test_an_entropy_model_of_eleven_rates_loads_its_own_state() -> None:
    """Index 10 and up: compressai's key renaming matched ``bottlenecks.1`` to
    ``bottlenecks.10.*`` and failed; every rate's tables must come back exactly."""
    source = GainedFactorizedPrior(4, rates=12)
    with torch.no_grad():
        for i, bottleneck in enumerate(source.bottlenecks):
            bottleneck.quantiles.add_(i)
    source.update(force=True)
    loaded = GainedFactorizedPrior(4, rates=12)
    loaded.load_state_dict(source.state_dict())
    for a, b in zip(source.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert a[0] == b[0] and torch.equal(a[1], b[1])


def test_a_rescaled_prior_is_the_density_of_the_scaled_latent() -> None:
    """p_gain(gain * v) has the cumulative of p(v): each rate's prior starts where its gain puts y."""
    prior = GainedFactorizedPrior(4, 2).bottlenecks[0]
    with seeded(1), torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    scaled = GainedFactorizedPrior(4, 2).bottlenecks[0]
    scaled.load_state_dict(scaled_bottleneck_state(prior.state_dict(), 2.5), strict=False)
    v = torch.linspace(-6, 6, 50).view(1, 1, -1).expand(4, 1, -1)  # (C, 1, points)
    with torch.no_grad():  # compressai's cumulative logits, the density's one definition
        torch.testing.assert_close(scaled._logits_cumulative(2.5 * v, stop_gradient=True),
                                   prior._logits_cumulative(v, stop_gradient=True))
    torch.testing.assert_close(scaled.quantiles, 2.5 * prior.quantiles)


def test_warm_start_from_a_fixed_rate_codec_keeps_its_rate_at_gain_one(tmp_path) -> None:
    fixed = Architecture(teacher="tf_efficientnet_lite0").build("fs-test-l4", teacher_weights=None)
    save_codec(fixed, tmp_path / "l4.safetensors", {"lmbda": "4.0"})
    vr = ARCH.build("fs-test-vr", teacher_weights=None)
    state, meta = read_safetensors(tmp_path / "l4.safetensors")
    warm_start_variable_rate(vr, state, meta, source="l4")
    gains = vr.entropy.log_gain.exp()
    for r, lmbda in enumerate(RATES):
        assert torch.allclose(gains[r], torch.full((48,), initial_gain(4.0, lmbda)))
    assert math.isclose(initial_gain(4.0, 4.0), 1.0)
    with torch.no_grad():
        y = fixed.g_a(_images(1))
        torch.testing.assert_close(vr.g_a(_images(1)), y)
        _, fixed_likelihoods = fixed.eval().entropy(y)
        _, rated = vr.eval().entropy_forward(y, RATES.index(4.0))
    torch.testing.assert_close(rated, fixed_likelihoods, rtol=1e-4, atol=1e-6)
    del meta["lmbda"]
    with pytest.raises(ValueError, match="without its lambda"):
        warm_start_variable_rate(vr, state, meta, source="l4")


def test_a_tiny_variable_rate_config_trains_and_validates_every_rate(tmp_path) -> None:
    if not TINY16.is_dir():
        pytest.skip(f"fixture images not found in {TINY16}")
    cfg = load_config(REPO / "configs/lite0_vr_cpu.yaml", [
        f"data.train=[{TINY16}]", "data.train_limit=4", "data.workers=0", f"data.val={TINY16}",
        "data.val_limit=2", "teacher_weights=offline", "init_codec=null", "val_every=1",
        "stages.0.batch_size=4", "stages.0.patch_size=64", "stages.0.steps_per_epoch=2",
        "stages.0.epochs=1", "model_id=fs-test-vr", f"architecture.rates={list(RATES)}",
    ])
    (summary,) = train(cfg, tmp_path, progress=False)
    assert summary["lmbda"] is None
    per_rate = summary["history"][0]["val"]["rates"]
    assert [r["lmbda"] for r in per_rate] == list(RATES)
    trained = ARCH.build("fs-test-vr", teacher_weights="offline")
    load_codec(trained, tmp_path / "variable-rate" / "best.safetensors")
    trained.eval().update(force=True)
    assert bitstream.unpack(trained.edge.encode(_images(1), rate=2)[0]).rate == 2
    with pytest.raises(ValueError, match="no '{lmbda}'"):
        load_config(REPO / "configs/lite0_vr_cpu.yaml", ["model_id=fs-vr-l{lmbda}"])


def test_an_evaluation_measures_every_rate_as_its_own_point(model, tmp_path) -> None:
    if not TINY16.is_dir():
        pytest.skip(f"fixture images not found in {TINY16}")
    from frankensplit.data import find_images
    from frankensplit.eval.pipeline import run_eval

    files = find_images(TINY16)[:2]
    result = run_eval([model], files, [-1, -1], tmp_path, {}, plot=False)
    rows = [r for r in result.rows if r["method"] == "frankensplit_vr"]
    assert [r["setting"] for r in rows] == [f"fs-test-vr@{v:g}" for v in RATES]
    x = torch.stack([_transform(model)(p) for p in files])
    for rate, row in enumerate(rows):  # real bytes: the packets of every image at that rate
        packets = [model.edge.encode(x[i:i + 1], rate=rate)[0] for i in range(len(files))]
        assert row["bytes"] == pytest.approx(sum(map(len, packets)) / len(files))
        assert row["bpp_estimated"] * 50176 / 8 <= row["bytes"]  # estimate <= coded bytes
    assert result.summary[0]["savings"] == {}  # no fixed-rate model to compare: no empty table
    assert "rate saving" not in result.paths["markdown"].read_text()


def test_the_results_report_a_variable_rate_model_as_a_curve_of_its_own(model, tmp_path) -> None:
    if not TINY16.is_dir():
        pytest.skip(f"fixture images not found in {TINY16}")
    from frankensplit.data import find_images
    from frankensplit.eval.pipeline import run_eval
    from frankensplit.eval.report import summary_markdown
    from frankensplit.eval.shipped import equal_top1, results_document

    result = run_eval([model], find_images(TINY16)[:2], [-1, -1], tmp_path, {"jpeg": (10, 90)},
                      plot=False)
    (summary,) = result.summary
    assert set(summary["within"]) == {"frankensplit_vr", "jpeg"}
    savings = summary["variable_rate"]["frankensplit_vr"]["savings"]
    assert [p["setting"] for p in savings["jpeg"]] == [f"fs-test-vr@{v:g}" for v in RATES]
    text = summary_markdown(result.rows, result.summary, result.meta)
    for rate, lmbda in enumerate(RATES):
        assert f"| fs-test-vr, rate {rate} (lambda {lmbda:g}) |" in text
    doc = results_document(result.rows, result.meta, data_name="tiny16", command="c",
                           commit="0" * 40, source="s")
    assert doc["methods"]["frankensplit_vr"]["variable_rate_of"] == "frankensplit"
    rates = equal_top1(doc, result.rows[0]["teacher"], "frankensplit_vr")
    assert len(rates) == len(RATES) and all(set(r["baselines"]) == {"jpeg"} for r in rates)


def _transform(model):
    from frankensplit.data import load_image, make_transform

    transform = make_transform(model.data_config, "eval")
    return lambda path: transform(load_image(path))


def test_frozen_norm_keeps_the_decoders_batch_statistics(tmp_path) -> None:
    if not TINY16.is_dir():
        pytest.skip(f"fixture images not found in {TINY16}")
    source = ARCH.build("fs-test-vr", teacher_weights=None)
    save_codec(source, tmp_path / "src.safetensors")
    cfg = load_config(REPO / "configs/lite0_vr_cpu.yaml", [
        f"data.train=[{TINY16}]", "data.train_limit=4", "data.workers=0", "data.val=null",
        "teacher_weights=offline", f"init_codec={tmp_path / 'src.safetensors'}",
        "stages.0.batch_size=4", "stages.0.patch_size=64", "stages.0.steps_per_epoch=2",
        "stages.0.epochs=1", "model_id=fs-test-vr", f"architecture.rates={list(RATES)}", "frozen_norm=true",
    ])
    train(cfg, tmp_path / "run", progress=False)
    trained, _ = read_safetensors(tmp_path / "run" / "variable-rate" / "last.safetensors")
    start = source.state_dict()
    stats = [k for k in trained if k.startswith("g_s.") and k.endswith(("running_mean",
                                                                        "running_var"))]
    assert stats and all(torch.equal(trained[k], start[k]) for k in stats)
    weights = [k for k in trained if k.startswith("g_s.") and k.endswith(".weight")]
    assert any(not torch.equal(trained[k], start[k]) for k in weights)  # the rest trains

"""Encoder, entropy model, split model and zoo: the codec contract and its invariants."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch

from frankensplit import bitstream
from frankensplit.backbones import SplitBackbone
from frankensplit.blueprints import BLUEPRINTS, DECODERS
from frankensplit.files import file_sha256
from frankensplit.models import ENCODERS, Architecture, FactorizedPrior, NotUpdatedError
from frankensplit.models.codec_file import codec_fingerprint, codec_metadata, load_codec, save_codec
from frankensplit.models.split import count_parameters
from frankensplit.models.zoo import MODELS, ZOO_DIR, create_model, load_model_file, load_server_part
from frankensplit.threads import seeded
from tests.conftest import TINY_TEACHERS


def test_frankensplit_encoder_matches_the_paper() -> None:
    g_a = ENCODERS.get("frankensplit")()
    assert count_parameters(g_a) == 141_696
    assert g_a(torch.zeros(1, 3, 224, 224)).shape == (1, 48, 28, 28)


@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_encoder_declares_its_latent(name: str) -> None:
    g_a = ENCODERS.get(name)()
    y = g_a(torch.zeros(1, 3, 224, 224))
    assert y.shape[1] == g_a.latent_channels
    assert y.shape[2] == 224 // g_a.reduction


def test_entropic_student_encoder_size() -> None:
    """138,672 weights: the GDN encoder of Matsubara et al. (about 138k in the paper)."""
    assert count_parameters(ENCODERS.get("entropic_student")()) == 138_672


class TestFactorizedPrior:
    @pytest.fixture
    def em(self) -> FactorizedPrior:
        torch.manual_seed(0)
        return FactorizedPrior(8)

    def test_training_noise_is_within_half(self, em: FactorizedPrior) -> None:
        y = torch.randn(2, 8, 16, 16) * 4
        y_hat, likelihoods = em.train()(y)
        assert ((y_hat - y).abs() <= 0.5).all()
        assert (y_hat != y).any()  # noise, not identity
        assert ((likelihoods > 0) & (likelihoods <= 1)).all()

    def test_eval_rounds_around_the_median(self, em: FactorizedPrior) -> None:
        y = torch.randn(2, 8, 16, 16) * 4
        y_hat, _ = em.eval()(y)
        m = em.medians().view(1, -1, 1, 1)
        torch.testing.assert_close(y_hat - m, torch.round(y - m), rtol=0, atol=0)
        assert torch.equal(em.quantize(y), y_hat)

    def test_coding_needs_update(self, em: FactorizedPrior) -> None:
        with pytest.raises(NotUpdatedError, match="update"):
            em.compress(torch.zeros(1, 8, 4, 4))
        assert not em.ready
        em.update()
        assert em.ready

    @pytest.mark.parametrize("batch", [1, 3])
    def test_decode_is_bit_exact(self, em: FactorizedPrior, batch: int) -> None:
        em.eval().update()
        y = torch.randn(batch, 8, 16, 16) * 3
        strings = em.compress(y)
        assert len(strings) == batch
        assert torch.equal(em.decompress(strings, (16, 16)), em(y)[0])

    def test_coded_bits_against_the_estimate(self) -> None:
        """Coded size >= the information content, and within 1% of it (+ the header) on a large
        latent: the rANS coder is close to the model's own rate."""
        torch.manual_seed(0)
        em = FactorizedPrior(48).eval()
        with torch.no_grad():  # give the prior a realistic spread so the latent is compressible
            em.entropy_bottleneck.quantiles.mul_(4)
        em.update(force=True)
        y = torch.randn(1, 48, 64, 64) * 3
        with torch.no_grad():
            _, likelihoods = em(y)
        estimated = float(-torch.log2(likelihoods).sum())
        (payload,) = em.compress(y)
        packet = bitstream.pack(bitstream.Packet("fs-test", (48, 64, 64), payload))
        header_bits = 8 * (len(packet) - len(payload))
        actual = 8 * len(packet)
        assert actual >= estimated
        assert actual <= 1.01 * estimated + header_bits

    def test_tables_round_trip_through_state_dict(self, em: FactorizedPrior) -> None:
        em.eval().update()
        other = FactorizedPrior(8).eval()
        other.load_state_dict(em.state_dict())
        y = torch.randn(1, 8, 8, 8) * 3
        assert other.compress(y) == em.compress(y)

    def test_bad_latent_is_refused(self, em: FactorizedPrior) -> None:
        em.eval().update()
        with pytest.raises(ValueError, match="latent"):
            em.compress(torch.zeros(1, 5, 4, 4))


def tiny_model(family: str):
    """A FrankenSplit model over a tiny random teacher of ``family`` (64x64 inputs for CNNs)."""
    name, kwargs = TINY_TEACHERS[family]
    torch.manual_seed(0)
    teacher = SplitBackbone(name, timm.create_model(name, pretrained=False, **kwargs))
    return Architecture(name).build(f"fs-test-{family}", backbone=teacher)


def test_every_blueprint_family_has_a_tiny_teacher() -> None:
    assert sorted(BLUEPRINTS.names()) == sorted(TINY_TEACHERS)


@pytest.mark.parametrize("family", BLUEPRINTS.names())
def test_split_model_contract(family: str) -> None:
    """forward/backward in training, then exact compress -> decompress -> logits per family."""
    model = tiny_model(family).train()
    x = torch.randn(2, 3, 224, 224)
    out = model(x)
    assert out["h_hat"].shape == (2, *model.teacher.spec.feature_shape)
    loss = out["h_hat"].square().mean() - torch.log2(out["likelihoods"]["y"]).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.g_s.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())
    model.eval().update()
    packets = model.edge.encode(x)
    y_hat = model.server.decode_latent(packets)
    with torch.no_grad():
        expected = model(x)
    assert torch.equal(y_hat, expected["y_hat"])
    logits = model.server.decode(packets)
    torch.testing.assert_close(logits, model.teacher.tail(expected["h_hat"]))


def test_bytes_do_not_depend_on_the_batch() -> None:
    model = tiny_model("efficientnet").eval()
    model.update()
    x = torch.randn(3, 3, 224, 224)
    together = model.edge.encode(x)
    alone = [model.edge.encode(x[i : i + 1])[0] for i in range(3)]
    assert together == alone


def test_server_refuses_bad_packets() -> None:
    model = tiny_model("efficientnet").eval()
    model.update()
    (packet,) = model.edge.encode(torch.randn(1, 3, 224, 224))
    with pytest.raises(bitstream.TruncatedError):
        model.server.decode([packet[:-10]])
    flipped = bytearray(packet)
    flipped[len(packet) // 2] ^= 0x10
    with pytest.raises(bitstream.CorruptError):
        model.server.decode([bytes(flipped)])
    foreign = bitstream.pack(dataclasses.replace(bitstream.unpack(packet), model_id="fs-other"))
    with pytest.raises(bitstream.BitstreamError, match="fs-other"):
        model.server.decode([foreign])
    with pytest.raises(bitstream.ForeignFormatError):
        model.server.decode([b"\x89PNG\r\n\x1a\n" + packet])
    wrong_c = bitstream.pack(dataclasses.replace(bitstream.unpack(packet), shape=(47, 28, 28)))
    with pytest.raises(bitstream.BitstreamError, match="channels"):
        model.server.decode([wrong_c])


def test_forged_short_payload_is_an_error_not_a_crash() -> None:
    """compressai's decoder over-reads short payloads; the padding makes them decode (to garbage
    values, since there is no redundancy) instead of crashing the process."""
    model = tiny_model("efficientnet").eval()
    model.update()
    for payload in (b"", b"\x01", b"\xff" * 7):
        packet = bitstream.pack(bitstream.Packet(model.model_id, (48, 28, 28), payload))
        assert model.server.decode_latent([packet]).shape == (1, 48, 28, 28)


def test_codec_weights_round_trip_and_checksum(tmp_path) -> None:
    model = tiny_model("efficientnet").eval()
    path = tmp_path / "codec.safetensors"
    digest = save_codec(model, path)
    assert digest == file_sha256(path)
    other = tiny_model("efficientnet")
    with torch.no_grad():
        for p in other.g_a.parameters():
            p.add_(1.0)
    load_codec(other, path, sha256=digest)
    other.eval()
    x = torch.randn(1, 3, 224, 224)
    assert other.edge.encode(x) == model.edge.encode(x)
    with pytest.raises(ValueError, match="checksum"):
        load_codec(other, path, sha256="0" * 64)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot read"):
        load_codec(other, path)


def test_zoo_errors() -> None:
    with pytest.raises(ValueError, match="unknown model id"):
        create_model("fs-does-not-exist")


ES = Architecture("tf_efficientnet_lite0", method="entropic_student", encoder="entropic_student",
                  decoder="entropic_student", latent_channels=24, split_reduction=4)


#: Entropic Student's second stage: a fine-tuned copy of the teacher's tail of its own.
ES_TAIL = dataclasses.replace(ES, tail="trained")

#: Largest |logits change| from storing an own tail in float16, as a fraction of the largest
#: |logit|: each weight moves by at most 2^-11 of itself (float16's unit roundoff, 4.9e-4); a
#: layer's output sums many weights rounded independently, so it moves by less, and lite0's tail
#: (about 40 convolutions in sequence) adds those in quadrature: of the order of 1e-3. Measured:
#: 1.1e-3 on this random teacher's perturbed tail, 1.2e-3 on the real lite0 tail (logits' std
#: 2.8: a change of 0.03 at most). The bound leaves 4x that.
FP16_TAIL_RTOL = 5e-3


def _es_tail(model_id: str = "es-test-l2-s2"):
    """An Entropic Student with an own tail whose weights differ from the teacher's by a
    per-weight 1% (as fine-tuning leaves them; BN statistics unchanged), so that loading it
    must really read the tail. Per weight, not one scale: a shared factor would round every
    BN weight of 1.0 the same way, which no trained tail does."""
    model = ES_TAIL.build(model_id, teacher_weights=None).eval()
    with torch.no_grad(), seeded(0):
        for p in model.tail.parameters():
            p.mul_(1 + 0.01 * torch.randn_like(p))
    return model


def _tail_floats(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state.items() if k.startswith("tail.") and v.is_floating_point()]


@pytest.mark.usefixtures("one_thread")
def test_an_own_tail_is_stored_in_float16_and_read_back_into_float32(tmp_path) -> None:
    """Only the tail's floating tensors are halved (g_a, the entropy model's CDF tables, g_s and
    integer buffers stay as they are, packets bit-identical); the file records it, halves the
    tail's bytes, and loads into a float32 tail whose logits stay within `FP16_TAIL_RTOL`."""
    from safetensors.torch import load_file

    model = _es_tail()
    full, half = tmp_path / "fp32.safetensors", tmp_path / "fp16.safetensors"
    save_codec(model, full)  # training's float32
    save_codec(model, half, tail_dtype="float16")
    assert (codec_metadata(full)["tail_dtype"], codec_metadata(half)["tail_dtype"]) == (
        "float32", "float16")
    stage1 = tmp_path / "stage1.safetensors"  # no own tail: nothing to record, even when asked
    save_codec(ES.build("es-test-l2", teacher_weights=None), stage1, tail_dtype="float16")
    assert "tail_dtype" not in codec_metadata(stage1)
    assert all(t.dtype != torch.float16 for t in load_file(stage1).values())
    ours, theirs = load_file(half), load_file(full)
    floats = _tail_floats(theirs)
    assert ours.keys() == theirs.keys() and any("num_batches_tracked" in k for k in ours)
    for key, tensor in ours.items():
        want = theirs[key].half() if key in floats else theirs[key]
        assert tensor.dtype == want.dtype and torch.equal(tensor, want), key
    halved = sum(theirs[k].numel() * 2 for k in floats)
    assert abs(full.stat().st_size - half.stat().st_size - halved) < 1000  # header: names, offsets
    loaded = load_model_file(half, teacher_weights=None)
    for key, tensor in loaded.tail.state_dict().items():
        assert tensor.dtype == model.tail.state_dict()[key].dtype, key  # float32 in memory
    with seeded(0):
        x = torch.randn(2, 3, 224, 224)  # the input size the server half accepts
    packets = model.edge.encode(x)
    assert loaded.edge.encode(x) == packets
    logits, got = model.server.decode(packets), loaded.server.decode(packets)
    assert (got - logits).abs().max() <= FP16_TAIL_RTOL * logits.abs().max()
    assert not torch.equal(got, logits)  # the rounding is real, and within the bound
    exact = load_model_file(full, teacher_weights=None).server.decode(packets)
    torch.testing.assert_close(exact, logits, rtol=0, atol=0)  # float32 stays exact
    # the server half reads the float16 tail the same way (no g_a tensor read)
    part, _ = load_server_part(ES_TAIL, model.model_id, half, file_sha256(half),
                               teacher_weights=None)
    assert all(t.dtype == torch.float32 for t in part.tail.state_dict().values()
               if t.is_floating_point())
    torch.testing.assert_close(part.decode(packets), got, rtol=0, atol=0)


@pytest.mark.usefixtures("one_thread")
def test_a_tail_dtype_other_than_float16_or_float32_is_refused(tmp_path) -> None:
    """On saving; on loading, a recorded dtype not supported, or tensors the record contradicts
    (which ``load_state_dict`` would cast without a word), each named with the file."""
    import re

    from safetensors.torch import load_file, save_file

    model = _es_tail()
    with pytest.raises(ValueError, match="tail_dtype must be one of .*got 'int8'"):
        save_codec(model, tmp_path / "x.safetensors", tail_dtype="int8")
    half = tmp_path / "fp16.safetensors"
    save_codec(model, half, tail_dtype="float16")
    state, meta = load_file(half), codec_metadata(half)
    floats = _tail_floats(state)
    bf16, lie = tmp_path / "bf16.safetensors", tmp_path / "lie.safetensors"
    save_file({k: v.bfloat16() if k in floats else v for k, v in state.items()}, bf16,
              metadata={**meta, "tail_dtype": "bfloat16"})
    save_file({k: v.float() if k in floats else v for k, v in state.items()}, lie, metadata=meta)
    with pytest.raises(ValueError, match=re.escape(f"{bf16}: unsupported tail_dtype 'bfloat16'")):
        load_model_file(bf16, teacher_weights=None)
    with pytest.raises(ValueError, match=re.escape(str(lie)) + ".* is torch.float32, but the "
                                         "file records tail_dtype 'float16'"):
        load_server_part(ES_TAIL, model.model_id, lie, teacher_weights=None)


def _es_tail_frozen_classifier(seed: int = 0):
    """`_es_tail`'s model with its classifier Linear (``tail.8``) left the teacher's, as a stage 2
    with ``freeze: [..., tail.8]`` leaves it; its random teacher seeded by ``seed``, so that a
    rebuild under the same seed has the same teacher."""
    with seeded(seed):
        model = ES_TAIL.build("es-test-l2-s2", teacher_weights=None).eval()
    with torch.no_grad(), seeded(0):
        for name, p in model.tail.named_parameters():
            if not name.startswith("8."):
                p.mul_(1 + 0.01 * torch.randn_like(p))
    return model


@pytest.mark.usefixtures("one_thread")
def test_a_shipped_tail_leaves_the_teachers_tensors_to_the_teacher(tmp_path) -> None:
    """``omit_teacher_tail``: every tail tensor equal to the teacher's (the classifier, BN
    statistics) is left out of the file and listed; loading takes them from the teacher, bit for
    bit, the split model's and the server part's alike, and the rest within `FP16_TAIL_RTOL`."""
    import json

    from safetensors.torch import load_file

    model = _es_tail_frozen_classifier()
    half, shipped = tmp_path / "fp16.safetensors", tmp_path / "shipped.safetensors"
    save_codec(model, half, tail_dtype="float16")
    save_codec(model, shipped, tail_dtype="float16", omit_teacher_tail=True)
    teacher = model.teacher.tail.state_dict()
    listed = json.loads(codec_metadata(shipped)["tail_from_teacher"])
    # the classifier, and what the perturbation left as it was (BN statistics, zero biases);
    # every other weight (convolutions', BN scales') moved and is stored
    assert {"8.weight", "8.bias"} <= set(listed) and any("running_var" in n for n in listed)
    assert not [n for n in listed if n.endswith(".weight") and not n.startswith("8.")]
    assert "tail_from_teacher" not in codec_metadata(half)  # only when asked for
    stored = load_file(shipped)
    assert stored.keys() == load_file(half).keys() - {f"tail.{n}" for n in listed}
    assert shipped.stat().st_size < half.stat().st_size - 2 * 1280 * 1000  # the classifier's
    with seeded(0):  # the same random teacher as the model's
        loaded = load_model_file(shipped, teacher_weights=None)
    with seeded(0):
        part, _ = load_server_part(ES_TAIL, model.model_id, shipped, file_sha256(shipped),
                                   teacher_weights=None)
    for name in listed:
        assert torch.equal(loaded.tail.state_dict()[name], teacher[name]), name
        assert torch.equal(part.tail.state_dict()[name], teacher[name]), name
    with seeded(0):
        x = torch.randn(2, 3, 224, 224)
    packets = model.edge.encode(x)
    logits, got = model.server.decode(packets), loaded.server.decode(packets)
    assert (got - logits).abs().max() <= FP16_TAIL_RTOL * logits.abs().max()
    torch.testing.assert_close(part.decode(packets), got, rtol=0, atol=0)
    # loading into a built model takes the listed tensors from its teacher again, bit for bit
    load_codec(loaded, half)
    load_codec(loaded, shipped)
    for name in listed:
        assert torch.equal(loaded.tail.state_dict()[name], teacher[name]), name


@pytest.mark.usefixtures("one_thread")
def test_a_tail_left_to_the_teacher_loads_only_as_recorded(tmp_path) -> None:
    """A listed name the tail does not have, a tail tensor neither stored nor listed, one both
    stored and listed, a record that is no list, and another teacher than the one shipped
    against: each refused, naming the file."""
    import json
    import re

    from safetensors.torch import load_file, save_file

    model = _es_tail_frozen_classifier()
    shipped = tmp_path / "shipped.safetensors"
    save_codec(model, shipped, tail_dtype="float16", omit_teacher_tail=True)
    state, meta = load_file(shipped), codec_metadata(shipped)
    listed = json.loads(meta["tail_from_teacher"])

    def refused(name: str, match: str, tensors=state, **record: str) -> None:
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, path, metadata={**meta, **record})
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + match):
            load_codec(model, path)

    refused("unknown", "lists tail tensor '9.weight', which the tail of es-test-l2-s2 does not",
            tail_from_teacher=json.dumps([*listed, "9.weight"]))
    refused("missing", r"tail tensor 8.bias \(and 0 more\) is neither stored nor listed",
            tail_from_teacher=json.dumps([n for n in listed if n != "8.bias"]))
    refused("both", "tail tensor 8.weight is stored and also listed", tensors={
        **state, "tail.8.weight": model.tail[8].weight.detach().half()})
    refused("no-list", "tail_from_teacher is not a JSON list", tail_from_teacher='"8.weight"')
    with seeded(1):  # another random teacher: its classifier differs from the one shipped against
        other = ES_TAIL.build(model.model_id, teacher_weights=None)
    with pytest.raises(ValueError, match=re.escape(str(shipped)) + f": its tail leaves "
                       f"{len(listed)} tensors to teacher tf_efficientnet_lite0 as shipped .* "
                       "load it with the teacher weights it was shipped against"):
        load_codec(other, shipped)
    with pytest.raises(ValueError, match="teacher weights it was shipped against"):
        load_server_part(ES_TAIL, model.model_id, shipped, teacher_weights=None)  # unseeded


def test_architecture_round_trips_and_reads_the_records_written_before_it() -> None:
    assert Architecture.from_json(ES.to_json()) == Architecture.from_dict(ES.to_dict()) == ES
    # codec files and index.json entries written before the method was a field: their encoder
    legacy = ('{"decoder": "entropic_student", "encoder": "entropic_student", "entropy": '
              '"factorized", "kind": "split", "latent_channels": 24, "split_reduction": 4, '
              '"teacher": "tf_efficientnet_lite0"}')
    assert Architecture.from_json(legacy) == ES
    for name in MODELS.names():  # each shipped file records the architecture its entry builds
        if (entry := MODELS.get(name)).trained:
            meta = codec_metadata(ZOO_DIR / entry.weights)
            assert Architecture.from_json(meta["architecture"]) == entry.architecture, name
    with pytest.raises(ValueError, match="not a split model"):
        Architecture.from_json('{"kind": "image_codec", "name": "bmshj2018-factorized"}')
    with pytest.raises(ValueError, match=r"unknown keys \['encoder_id'\]"):
        Architecture.from_dict({"teacher": "resnet18", "encoder_id": "x"})
    with pytest.raises(ValueError, match="input_size and crop_pct go together"):
        Architecture("resnet18", input_size=224)


def test_a_model_derives_its_input_and_never_changes_the_teachers() -> None:
    # encoder reuse: a Lite1 decoder of a Lite0 encoder's packets takes 224 px (Lite1's own: 240)
    arch = Architecture("tf_efficientnet_lite1", input_size=224, crop_pct=0.875,
                        reuses="fs-lite0-l4")
    own = {"input_size": (3, 240, 240), "crop_pct": 0.882, "interpolation": "bicubic"}
    assert arch.data_config(own) == {"input_size": (3, 224, 224), "crop_pct": 0.875,
                                     "interpolation": "bicubic"}
    assert own["input_size"] == (3, 240, 240)  # a new dict: the argument is not changed
    assert Architecture("tf_efficientnet_lite1").data_config(own) == own
    model = arch.build("fs-test-reuse", teacher_weights=None)
    teacher_config = dict(model.teacher.data_config)
    assert teacher_config["input_size"] == (3, 240, 240)
    assert model.data_config == arch.data_config(teacher_config)
    assert model.latent_shape == (48, 28, 28)
    # the teacher, passed on to another model, is still the teacher with its own input
    plain = Architecture("tf_efficientnet_lite1").build("fs-test-own", backbone=model.teacher)
    assert model.teacher.data_config == plain.data_config == teacher_config
    assert plain.latent_shape == (48, 30, 30)
    part, teacher = arch.build_server("fs-test-reuse", teacher_weights=None, whole_teacher=True)
    assert part.latent_shape == (48, 28, 28) and teacher.data_config == teacher_config


class _ToyEncoder(torch.nn.Module):
    """A stride-8 encoder in two layers: 8 x 8 average pooling, then a 1 x 1 convolution."""

    reduction = 8

    def __init__(self, in_channels: int = 3, latent_channels: int = 8) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.net = torch.nn.Sequential(torch.nn.AvgPool2d(8),
                                       torch.nn.Conv2d(in_channels, latent_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (N, C, H/8, W/8)


class _ToyDecoder(torch.nn.Conv2d):
    """A 1 x 1 convolution from y_hat to the teacher's features (a CNN split at stride 8)."""

    def __init__(self, spec, latent_channels: int) -> None:
        super().__init__(latent_channels, spec.channels, 1)


@pytest.mark.parametrize(("part", "registry", "factory"), [
    ("encoder", ENCODERS, _ToyEncoder), ("decoder", DECODERS, _ToyDecoder)])
def test_a_new_method_or_decoder_is_one_registered_function_plus_one_architecture(
    part, registry, factory, tmp_path, monkeypatch
) -> None:
    monkeypatch.setitem(registry._entries, "toy", factory)
    arch = Architecture("resnet18", method="toy", latent_channels=8, **{part: "toy"})
    torch.manual_seed(0)  # the random teacher; the codec is seeded from the model id
    model = arch.build("toy-r18", teacher_weights=None)
    assert isinstance(getattr(model, {"encoder": "g_a", "decoder": "g_s"}[part]), factory)
    save_codec(model, tmp_path / "toy.safetensors")
    torch.manual_seed(0)
    loaded = load_model_file(tmp_path / "toy.safetensors", teacher_weights=None)
    assert loaded.architecture == model.architecture == arch and loaded.method == "toy"
    x = torch.randn(2, 3, 64, 64)
    packets = model.eval().edge.encode(x)
    assert loaded.edge.encode(x) == packets
    torch.testing.assert_close(loaded.server.decode(packets), model.server.decode(packets))


_ENCODE_IN_A_FRESH_PROCESS = """
import sys, torch
torch.manual_seed(int(sys.argv[1]))
torch.rand(int(sys.argv[1]))  # each process its own RNG history before the model is built
from frankensplit.models.codec_file import codec_fingerprint
from frankensplit.models.zoo import create_model
print(codec_fingerprint(create_model("fs-lite0-untrained", teacher_weights=None)))
"""


def test_untrained_zoo_models_are_identical_across_processes() -> None:
    """Seeded from the id: an edge and a server started separately agree before training.

    A fresh interpreter, with another RNG history, builds the same codec tensors as this process
    (compared as weights: packets of one input could still differ at a rounding tie between the
    two processes' thread counts), and two models of one process write identical packets."""
    import subprocess
    import sys

    from tests.conftest import REPO

    a = create_model("fs-lite0-untrained", teacher_weights=None)
    b = create_model("fs-lite0-untrained", teacher_weights=None)
    x = torch.randn(1, 3, 224, 224)
    assert a.edge.encode(x) == b.edge.encode(x)
    other = subprocess.run([sys.executable, "-c", _ENCODE_IN_A_FRESH_PROCESS, "7"], cwd=REPO,
                           capture_output=True, text=True, timeout=180, check=False)
    assert other.returncode == 0, other.stderr[-2000:]
    assert other.stdout.strip().splitlines()[-1] == codec_fingerprint(a)


def test_bytes_repeat_and_differ_across_threads_only_at_rounding_ties(tiny16) -> None:
    # The shipped default codec on real photos: at one thread count the edge writes the same
    # packets every time (a replayed request or a server-side cache agrees). Across thread counts
    # the float reduction order differs, so a latent value on a rounding boundary may round the
    # other way: then only such symbols may differ, by 1, and rarely (the golden packets' rule).
    from PIL import Image

    from frankensplit.data import find_images, make_transform
    from frankensplit.models.zoo import create_model, default_model_id
    from frankensplit.threads import torch_threads
    from tests.conftest import GOLDEN_TOOL

    model = create_model(default_model_id()).eval()
    transform = make_transform(model.data_config, "eval")
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in find_images(tiny16)[:4]])
    runs, latents = [], {}
    for n in (1, 2, 1):
        with torch_threads(n), torch.no_grad():
            runs.append(model.edge.encode(x))
            latents[n] = model.g_a(x).numpy()  # (4, C, h, w)
    assert runs[0] == runs[2]
    flips, problems = 0, []
    for i, (one, two) in enumerate(zip(runs[0], runs[1])):
        n, found = GOLDEN_TOOL.symbol_flips(model, one, two, latents[2][i])
        flips, problems = flips + n, problems + found
    assert not problems + GOLDEN_TOOL.too_many_flips(flips, latents[2].size)


def test_latent_bits_of_the_decoded_latent_equal_the_estimate(tiny16, fixed_model):
    # The evaluation reads a fixed-rate model's bits_estimated off the server's decoded y_hat
    # instead of running g_a a second time; that is only right if the two agree (eval-mode
    # rounding is idempotent). A variable-rate model's decoded latent is scaled back by its
    # inverse gain, so the evaluation takes its bits from y (`eval.runner._frankensplit`): this is
    # the fixed-rate path's guarantee, tested on the fixed-rate reference (the zoo default may be
    # variable-rate).
    from PIL import Image

    from frankensplit.data import find_images, make_transform

    model = fixed_model
    assert model.rates is None and not model.training
    transform = make_transform(model.data_config, "eval")
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in find_images(tiny16)[:3]])
    y_hat = model.server.decode_latent(model.edge.encode(x))  # (3, C, h, w)
    torch.testing.assert_close(model.latent_bits(y_hat), model.estimated_bits(x), rtol=1e-5, atol=0)

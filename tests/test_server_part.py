"""The server half owns the server's path: the latent shape it accepts comes from its
architecture, it loads without g_a (and without the teacher's head unless images are served),
checks each packet once and decodes through a pluggable coder, in process or in the sandbox."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from frankensplit import bitstream
from frankensplit.models.architecture import Architecture
from frankensplit.models.parts import InProcessCoder
from frankensplit.runtime.server.loading import load_server_model, served_model
from frankensplit.runtime.server.sandbox import DecoderCrashedError, SandboxCoder, SandboxedDecoder
from frankensplit.threads import seeded

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int = 2) -> torch.Tensor:
    with seeded(0):
        return torch.randn(n, 3, 224, 224)


@pytest.mark.parametrize(("arch", "shape"), [
    (Architecture("tf_efficientnet_lite0"), (48, 28, 28)),
    (Architecture("tf_efficientnet_lite1"), (48, 30, 30)),  # the teacher's 240 px input
    (Architecture("tf_efficientnet_lite1", input_size=224, crop_pct=0.875), (48, 28, 28)),
    (Architecture("tf_efficientnet_lite0", method="entropic_student", encoder="entropic_student",
                  decoder="entropic_student", latent_channels=24, split_reduction=4),
     (24, 56, 56)),
])
def test_the_accepted_latent_shape_is_derived_and_is_what_g_a_makes(arch, shape) -> None:
    model = arch.build("fs-test-shape", teacher_weights=None)
    assert model.latent_shape == shape
    side = int(model.data_config["input_size"][-1])
    with torch.no_grad():
        assert tuple(model.g_a(torch.zeros(1, 3, side, side)).shape[1:]) == shape
    part, teacher = arch.build_server("fs-test-shape", teacher_weights=None)
    assert part.latent_shape == shape and teacher is None
    assert not hasattr(part, "g_a")


def test_the_server_half_is_the_models_without_g_a_or_head(default_model) -> None:
    loaded = load_server_model(default_model.model_id, images=False)
    assert loaded.teacher_model is None and loaded.latent_shape == default_model.latent_shape
    ours = loaded.part.state_dict()
    theirs = default_model.server.state_dict()
    assert ours.keys() == theirs.keys()  # entropy, g_s, tail: nothing of g_a or the head
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    packets = default_model.edge.encode(_images())
    torch.testing.assert_close(loaded.part.decode(packets), default_model.server.decode(packets),
                               rtol=0, atol=0)
    with_images = load_server_model(default_model.model_id)
    assert with_images.teacher_model is not None  # the whole teacher, for /v1/classify-image


def test_a_served_part_refuses_another_latent_shape_once_in_check(default_model) -> None:
    part = served_model(default_model).part
    (packet,) = default_model.edge.encode(torch.zeros(1, 3, 64, 64))  # an (48, 8, 8) latent
    with pytest.raises(bitstream.CorruptError, match="does not match"):
        part.check(bitstream.unpack(packet))
    assert default_model.server.decode_latent([packet]).shape == (1, 48, 8, 8)  # in process: any


def test_sandboxed_and_in_process_coders_decode_alike(default_model) -> None:
    part = served_model(default_model).part
    packets = [part.parse(p) for p in default_model.edge.encode(_images())]
    forged = dataclasses.replace(packets[0], payload=b"\xff" * 5000)
    sandbox = SandboxedDecoder({part.encoder_id: part.coding_tables()}, timeout_s=10)
    try:
        sandboxed = part.with_coder(SandboxCoder(sandbox, part.encoder_id))
        results = sandboxed.decode_each([packets[0], forged, packets[1]])
    finally:
        sandbox.close()
    expected = InProcessCoder(part.entropy).decode(packets)
    for got, want in zip([results[0], results[2]], expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert isinstance(results[1], (DecoderCrashedError, torch.Tensor))  # fails alone, if at all


def test_a_server_without_whole_teachers_says_why_it_refuses_images(default_model) -> None:
    from frankensplit.runtime.server.routing import UnknownBackboneError, choose_teacher

    packets_only = dataclasses.replace(served_model(default_model), teacher_model=None,
                                       data_config=None)
    with pytest.raises(UnknownBackboneError, match="packets only"):
        choose_teacher([packets_only])

"""Blueprint decoders g_s: output matches the split spec, gradients flow, errors are clear.

Parametrized over ``BLUEPRINTS.names()``: a newly registered family is tested as soon as it has
an entry in ``SPLITS`` (and fails, asking for one, until it does).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from frankensplit.backbones import SplitSpec
from frankensplit.blueprints import (
    BLUEPRINTS,
    ResBlock,
    count_parameters,
    create_blueprint,
)

LATENT_CHANNELS = 48

# Real split points: swin_s3_base_224 layers.2.downsample, convnext_tiny stages.1,
# resnet50 layer2, efficientnet_lite0 blocks.2.
SPLITS = {
    "swin": SplitSpec("swin", "layers.2.downsample", 384, 16, "NHWC", (3, 224, 224)),
    "convnext": SplitSpec("convnext", "stages.1", 192, 8, "NCHW", (3, 224, 224)),
    "resnet": SplitSpec("resnet", "layer2", 512, 8, "NCHW", (3, 224, 224)),
    "efficientnet": SplitSpec("efficientnet", "blocks.2", 40, 8, "NCHW", (3, 224, 224)),
}

SWIN_S3_BASE_PARAMETERS = 2_058_974  # FRANKENSPLIT.md, "Blueprint decoders g_s"


def make_spec(family: str, size: int = 224) -> SplitSpec:
    if family not in SPLITS:
        pytest.fail(f"blueprint {family!r} is registered but has no test split in SPLITS")
    return dataclasses.replace(SPLITS[family], input_size=(3, size, size))


def latent(spec: SplitSpec, batch: int = 2) -> torch.Tensor:
    _, height, width = spec.input_size
    return torch.randn(batch, LATENT_CHANNELS, -(-height // 8), -(-width // 8))  # (N, 48, H/8, W/8)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_registry_holds_the_four_families() -> None:
    assert BLUEPRINTS.names() == ["convnext", "efficientnet", "resnet", "swin"]


@pytest.mark.parametrize("size", [224, 160])
@pytest.mark.parametrize("family", BLUEPRINTS.names())
def test_output_matches_spec(family: str, size: int) -> None:
    spec = make_spec(family, size)
    g_s = create_blueprint(spec, LATENT_CHANNELS)
    h_hat = g_s(latent(spec))
    assert tuple(h_hat.shape) == (2, *spec.feature_shape)
    g_s.eval()
    with torch.no_grad():
        assert tuple(g_s(latent(spec, batch=1)).shape) == (1, *spec.feature_shape)


@pytest.mark.parametrize("family", BLUEPRINTS.names())
def test_backward_reaches_every_parameter(family: str) -> None:
    spec = make_spec(family)
    g_s = create_blueprint(spec, LATENT_CHANNELS)
    g_s(latent(spec)).square().mean().backward()
    for name, p in g_s.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in g_s.parameters())


@pytest.mark.parametrize("family", BLUEPRINTS.names())
def test_parameter_budget(family: str) -> None:
    """Blueprints stay small next to their teachers (0.1-2.5M at the real split widths)."""
    assert 0.1e6 <= count_parameters(create_blueprint(make_spec(family))) <= 2.5e6


def test_swin_parameter_count_matches_paper() -> None:
    g_s = create_blueprint(make_spec("swin"), LATENT_CHANNELS)
    assert count_parameters(g_s) == SWIN_S3_BASE_PARAMETERS


def test_swin_widths_and_heads_follow_the_spec() -> None:
    """swin_base_patch4_window7_224 splits at 512 channels: widths 128/256, heads that divide."""
    spec = dataclasses.replace(make_spec("swin"), channels=512)
    h_hat = create_blueprint(spec)(latent(spec, batch=1))
    assert tuple(h_hat.shape) == (1, 14, 14, 512)


@pytest.mark.parametrize("family", BLUEPRINTS.names())
def test_weights_transfer_across_input_sizes(family: str) -> None:
    """The input size shapes masks and outputs, never parameters."""
    state = create_blueprint(make_spec(family, 224)).state_dict()
    create_blueprint(make_spec(family, 160)).load_state_dict(state)


def test_unknown_family_raises() -> None:
    spec = SplitSpec("vit", "blocks.3", 768, 16, "NHWC", (3, 224, 224))
    with pytest.raises(ValueError, match="unknown blueprint 'vit'"):
        create_blueprint(spec)


@pytest.mark.parametrize("family", BLUEPRINTS.names())
def test_unsupported_reduction_raises(family: str) -> None:
    spec = dataclasses.replace(make_spec(family), reduction=32)
    with pytest.raises(ValueError, match="reduction.*32"):
        create_blueprint(spec)


@pytest.mark.parametrize("family", BLUEPRINTS.names())
def test_wrong_layout_raises(family: str) -> None:
    spec = make_spec(family)
    other = "NCHW" if spec.layout == "NHWC" else "NHWC"
    with pytest.raises(ValueError, match="layout"):
        create_blueprint(dataclasses.replace(spec, layout=other))


@pytest.mark.parametrize("family", BLUEPRINTS.names())
def test_input_size_not_divisible_by_reduction(family: str) -> None:
    """Fixed-size (Swin) blueprints refuse it; convolutional ones round up like the encoder and
    the teacher (EfficientNet-Lite2's 260x260 input gives 33x33 features on both sides)."""
    spec = make_spec(family, size=232 if family == "swin" else 228)
    if family == "swin":
        with pytest.raises(ValueError, match="divisible"):
            create_blueprint(spec)
    else:
        g_s = create_blueprint(spec)
        assert g_s(latent(spec, batch=1)).shape == (1, *spec.feature_shape)


@pytest.mark.parametrize("family", BLUEPRINTS.names())
def test_mismatched_latent(family: str) -> None:
    """A fixed-size blueprint refuses another latent size, naming both shapes; a convolutional one
    decodes it to features of the matching size. Wrong channels are always refused."""
    g_s = create_blueprint(make_spec(family, 224))
    small = make_spec(family, 160)
    if g_s.fixed_size:
        with pytest.raises(ValueError, match=r"expects y_hat of shape .* got \(1, 48, 20, 20\)"):
            g_s(latent(small, batch=1))
    else:
        assert g_s(latent(small, batch=1)).shape == (1, *small.feature_shape)
    with pytest.raises(ValueError, match="expects y_hat"):
        g_s(torch.randn(1, LATENT_CHANNELS + 1, 28, 28))


def test_resblock_matches_compressai_residual_block() -> None:
    """Same parameters, same function as ``compressai.layers.ResidualBlock`` (the paper's block)."""
    layers = pytest.importorskip("compressai.layers")
    ours = ResBlock(48, 96)
    theirs = layers.ResidualBlock(48, 96)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 48, 8, 8)  # (N, C, H, W)
    torch.testing.assert_close(ours(x), theirs(x))

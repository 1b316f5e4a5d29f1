"""Losses: sum reductions, the saliency weight 1/2 (1 + s), both layouts, clear shape errors."""

from __future__ import annotations

import math

import pytest
import torch

from frankensplit.losses import head_distortion, rate_bits, rd_loss


def pair(shape=(2, 4, 3, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_plain_distortion_is_the_summed_squared_error():
    h_hat, h = pair()
    assert torch.allclose(head_distortion(h_hat, h), ((h_hat - h) ** 2).sum())


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_saliency_zero_halves_and_one_keeps_the_distortion(layout):
    shape = (2, 4, 3, 5) if layout == "NCHW" else (2, 3, 5, 4)
    h_hat, h = pair(shape)
    full = head_distortion(h_hat, h)
    zeros, ones = torch.zeros(2, 3, 5), torch.ones(2, 3, 5)
    assert torch.allclose(head_distortion(h_hat, h, zeros, layout), 0.5 * full)
    assert torch.allclose(head_distortion(h_hat, h, ones, layout), full)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_saliency_weighs_each_position_over_all_channels(layout):
    h = torch.zeros(1, 4, 3, 5) if layout == "NCHW" else torch.zeros(1, 3, 5, 4)
    h_hat = torch.ones_like(h)  # every element contributes 1
    s = torch.zeros(1, 3, 5)
    s[0, 1, 2] = 1.0  # one salient position, weight 1 instead of 1/2, on all 4 channels
    expected = 0.5 * (4 * 15) + 0.5 * 4
    assert math.isclose(float(head_distortion(h_hat, h, s, layout)), expected)


def test_shape_and_layout_errors():
    h_hat, h = pair()
    with pytest.raises(ValueError, match="differ"):
        head_distortion(h_hat, h[:1])
    with pytest.raises(ValueError, match="saliency must be"):
        head_distortion(h_hat, h, torch.zeros(2, 5, 3))  # NCHW spatial is 3x5
    with pytest.raises(ValueError, match="saliency must be"):
        head_distortion(h_hat, h, torch.zeros(2, 3, 5), "NHWC")  # NHWC spatial is 4x3
    with pytest.raises(ValueError, match="layout"):
        head_distortion(h_hat, h, None, "HWC")


def test_rate_is_total_bits_and_rd_loss_combines_them():
    likelihoods = {"y": torch.full((2, 3, 4, 4), 0.5)}
    assert float(rate_bits(likelihoods)) == 96.0
    h_hat, h = pair()
    out = rd_loss(h_hat, h, likelihoods, lmbda=0.25)
    assert torch.allclose(out["loss"], out["distortion"] + 0.25 * 96.0)

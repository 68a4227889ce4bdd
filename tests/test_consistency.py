"""Shift consistency: 1 for a model that is shift-invariant by construction, below 1 for one that is not."""

from __future__ import annotations

import torch
from torch import nn

from downsample_lab.consistency import shift_agreement
from downsample_lab.data.augment import random_circular_shift


def _images(n: int = 256) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_a_shift_invariant_model_is_always_consistent():
    # 1x1 convs and global average pooling commute with circular shifts: invariant by construction
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)
    )
    agree = shift_agreement(model, _images(), 4, torch.Generator().manual_seed(1))
    assert agree.dtype == torch.bool and agree.shape == (256,)
    assert agree.all()


def test_a_position_dependent_model_is_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))  # every pixel has its own weight
    agree = shift_agreement(model, _images(), 4, torch.Generator().manual_seed(1))
    assert 0.0 < agree.float().mean() < 0.5  # ~0.1 for ten classes drawn at random


def test_no_shift_means_full_agreement_for_any_model():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))
    assert shift_agreement(model, _images(), 0, torch.Generator().manual_seed(1)).all()


def test_circular_shift_moves_pixels_and_keeps_them():
    images = _images(8)
    shifted = random_circular_shift(images, 3, torch.Generator().manual_seed(5))
    assert shifted.shape == images.shape
    for a, b in zip(images, shifted, strict=True):
        assert torch.allclose(a.sum(), b.sum(), atol=1e-4)  # a permutation of the pixels
        found = any(
            torch.equal(torch.roll(a, (dy, dx), dims=(1, 2)), b) for dy in range(-3, 4) for dx in range(-3, 4)
        )
        assert found

"""Shift consistency (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again").

How often a classifier predicts the same class for two random shifts of the same image. Max-pooling and
strided convolutions both alias, so their predictions flip under small shifts; blur-pooling is meant to help.
Logged as ``test/consistency`` for every run (shifts of up to ``eval.max_shift`` pixels, circular).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from downsample_lab.data.augment import random_circular_shift


@torch.no_grad()
def shift_agreement(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    max_shift: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Per image, whether ``model`` predicts the same class under two independent random shifts (bool ``(N,)``)."""
    first = model(random_circular_shift(images, max_shift, generator)).argmax(dim=1)
    second = model(random_circular_shift(images, max_shift, generator)).argmax(dim=1)
    return first == second

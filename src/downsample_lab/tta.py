"""Test-time augmentation (airbench94's): average the logits of mirrored and 1-pixel-translated views."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

TTA_LEVELS = (0, 1, 2)


def tta_logits(
    net: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    level: int,
    logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits of ``net`` for normalised ``images`` under test-time augmentation ``level``.

    0: the images as they are. 1: the mean over the image and its mirror. 2: half of level 1, plus half of the
    mean of level 1 over two translations by one pixel, up-left and down-right (reflect padding): six views,
    weighted as in airbench94. ``logits``: ``net(images)`` when the caller has it already (one forward fewer).
    """
    if level not in TTA_LEVELS:
        raise ValueError(f"unknown TTA level {level}; valid: 0, 1, 2")
    plain = net(images) if logits is None else logits
    if level == 0:
        return plain

    def mirror(x: torch.Tensor, x_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * x_logits + 0.5 * net(x.flip(-1))

    mean = mirror(images, plain)
    if level == 1:
        return mean
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    views = (padded[:, :, :h, :w], padded[:, :, 2 : h + 2, 2 : w + 2])
    return 0.5 * mean + 0.5 * torch.stack([mirror(v, net(v)) for v in views]).mean(0)

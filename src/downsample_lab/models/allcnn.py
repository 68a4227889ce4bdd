"""The All-CNN family of Springenberg et al. 2014, "Striving for Simplicity: The All Convolutional Net".

Model C and its three variants, following the paper's Tables 1 and 2 (``widths=[96, 192]`` is the paper's):

=================  =============================================================================
model_c            conv3 96, conv3 96, maxpool3/2, conv3 192, conv3 192, maxpool3/2, head
strided_cnn_c      conv3 96, conv3 96 stride 2, conv3 192, conv3 192 stride 2, head (pools removed)
convpool_cnn_c     conv3 96 ×3, maxpool3/2, conv3 192 ×3, maxpool3/2, head (an extra conv per stage)
all_cnn_c          conv3 96 ×2, conv3 96 stride 2, conv3 192 ×2, conv3 192 stride 2, head (pool → conv)
=================  =============================================================================

head: conv3 192 (no padding, 8×8 → 6×6), conv1 192, conv1 10, global average over 6×6.
Every conv but the last is followed by ReLU (and BatchNorm when ``batch_norm``: the paper had none; it lets
the short CPU recipe train). Dropout (the paper's 0.5) follows each downsampling step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from downsample_lab.models.names import ALLCNN_VARIANTS


def _conv(c_in: int, c_out: int, kernel: int, stride: int, padding: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return layers


class AllCNNC(nn.Module):
    """Model C of Springenberg et al. 2014 or one of its variants (``variant`` in :data:`ALLCNN_VARIANTS`).

    >>> AllCNNC("all_cnn_c", widths=[8, 16])(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        variant: str,
        widths: Sequence[int] = (96, 192),
        dropout: float = 0.5,
        batch_norm: bool = True,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if variant not in ALLCNN_VARIANTS:
            raise ValueError(f"unknown All-CNN variant {variant!r}; valid: {', '.join(ALLCNN_VARIANTS)}")
        layers: list[nn.Module] = []
        c_in = 3
        for width in widths:
            convs = 3 if variant == "convpool_cnn_c" else 2
            for i in range(convs):
                stride = 2 if variant == "strided_cnn_c" and i == convs - 1 else 1
                layers += _conv(c_in, width, 3, stride, 1, batch_norm)
                c_in = width
            if variant in ("model_c", "convpool_cnn_c"):
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
            elif variant == "all_cnn_c":
                layers += _conv(width, width, 3, 2, 1, batch_norm)
            layers.append(nn.Dropout(dropout))
        layers += _conv(c_in, c_in, 3, 1, 0, batch_norm)
        layers += _conv(c_in, c_in, 1, 1, 0, batch_norm)
        layers += [nn.Conv2d(c_in, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for images ``(N, 3, 32, 32)``."""
        return self.layers(x)

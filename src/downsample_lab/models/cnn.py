"""The small CNN of the study: stem, S stages of conv blocks each closed by a downsampling layer, head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from downsample_lab.models.downsample import conv_bn_relu, conv_stride, create_downsample


class DownsampleCNN(nn.Module):
    """A plain CNN whose only varying part is how each stage downsamples.

    Layout for ``widths=[64, 128, 256]``, ``blocks=2``::

        stem:    conv k×k 3→64
        stage 1: 2 × conv k×k (64→64), then downsample(64)        32×32 → 16×16
        stage 2: 2 × conv k×k (64→128, 128→128), downsample(128)  16×16 → 8×8
        stage 3: 2 × conv k×k (128→256, 256→256), downsample(256)  8×8 → 4×4
        head:    global average pool → dropout → linear 256→10

    Every conv is followed by BatchNorm and ReLU and uses padding ``k // 2`` (``padding_mode``: zeros,
    circular or reflect), so only the downsampling layers change H and W. With ``downsample="stride"`` the
    stage's last conv runs with stride 2 and no layer follows it.

    >>> net = DownsampleCNN(widths=[8, 16], blocks=1, kernel_size=3, downsample="conv")
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        widths: Sequence[int],
        blocks: int,
        kernel_size: int,
        downsample: str,
        dropout: float = 0.0,
        padding_mode: str = "zeros",
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.stem = conv_bn_relu(in_channels, widths[0], kernel_size, padding=pad, padding_mode=padding_mode)
        stages = []
        c_in = widths[0]
        for width in widths:
            layers = []
            for i in range(blocks):
                stride = conv_stride(downsample) if i == blocks - 1 else 1
                layers.append(conv_bn_relu(c_in, width, kernel_size, stride, pad, padding_mode))
                c_in = width
            layers.append(create_downsample(downsample, width, padding_mode))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c_in, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch of normalised images ``(N, 3, H, W)`` to class logits ``(N, num_classes)``."""
        return self.head(self.stages(self.stem(x)))

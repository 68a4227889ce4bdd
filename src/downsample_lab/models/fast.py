"""An airbench-class network (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU") whose three
downsampling sites take any strategy of :mod:`downsample_lab.models.downsample`.

Layout for ``widths=[64, 256, 256]`` (airbench94's)::

    stem:    conv 2x2 3→24, no padding (patch whitening, frozen weights)    32×32 → 31×31, GELU
    group 1: conv 3x3 24→64 → downsample(64) → BN → GELU → conv 3x3 → BN → GELU    31×31 → 15×15
    group 2: conv 3x3 64→256 → downsample(256) → BN → GELU → conv 3x3 → BN → GELU   15×15 → 7×7
    group 3: conv 3x3 256→256 → downsample(256) → BN → GELU → conv 3x3 → BN → GELU   7×7 → 3×3
    head:    global max pool → flatten → dropout → linear 256→10 (no bias) × 1/9

What makes it fast to train, all from airbench94:

- the stem's 24 filters are the 12 eigenvectors of the training images' 2×2-patch covariance, scaled by
  ``1/sqrt(eigenvalue + 5e-4)``, and their negatives (:meth:`FastNet.init_whitening`); its output is white;
- BatchNorm with a trainable bias only (weight fixed at 1), momentum 0.6 in airbench's convention (PyTorch's
  0.4) and eps 1e-12 — every BatchNorm of the net, the one inside the ``conv`` strategies' layer included;
- each 3x3 conv starts as the identity on its first ``in_channels`` filters (Dirac init);
- the logits are scaled by 1/9.

airbench ends with ``MaxPool2d(3)`` on its 3×3 map; a global max pool is the same there and also fits the 4×4
map that ``conv3`` and ``stride`` (3x3 convs with stride 2 and padding 1: 31 → 16 → 8 → 4) leave.

``padding_mode`` other than ``zeros`` pads every 3x3 conv that way, and pads the stem's input by one row and
column (bottom, right) the same way, so the stem keeps 32×32 and the network commutes with circular shifts
under ``circular``; ``zeros`` keeps airbench's unpadded stem (32 → 31).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from downsample_lab.models.downsample import conv_stride, create_downsample

WHITEN_KERNEL = 2
WHITEN_EPS = 5e-4
WHITEN_IMAGES = 5000  # airbench estimates the patch covariance on the first 5,000 training images
BN_MOMENTUM = 0.4  # PyTorch's convention: airbench's batchnorm_momentum 0.6 is 1 - 0.4
BN_EPS = 1e-12
LOGIT_SCALE = 1 / 9


def _conv3x3(c_in: int, c_out: int, padding_mode: str, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False, padding_mode=padding_mode)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:c_in])  # starts as the identity on the first c_in output channels
    return conv


class ConvGroup(nn.Module):
    """conv 3x3 → downsample → BN → GELU → conv 3x3 → BN → GELU (airbench's group, any downsampling; with
    ``stride`` the first conv has stride 2 and nothing sits at the site)."""

    def __init__(self, c_in: int, c_out: int, downsample: str, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, padding_mode, stride=conv_stride(downsample))
        self.down = create_downsample(downsample, c_out, padding_mode)
        self.norm1 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3x3(c_out, c_out, padding_mode)
        self.norm2 = nn.BatchNorm2d(c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Halve H and W, map ``c_in`` to ``c_out`` channels."""
        x = self.act(self.norm1(self.down(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    """airbench94's network with ``downsample`` (a :data:`~downsample_lab.models.DOWNSAMPLE_NAMES` entry) at its
    three downsampling sites.

    >>> net = FastNet(widths=[8, 16, 16], downsample="conv")
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        widths: Sequence[int],
        downsample: str,
        dropout: float = 0.0,
        padding_mode: str = "zeros",
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"FastNet has three groups; got widths={list(widths)}")
        # F.pad's name for each mode; None: the stem is unpadded (airbench's)
        self.stem_pad = {"zeros": None, "circular": "circular", "reflect": "reflect"}[padding_mode]
        whiten_width = 2 * 3 * WHITEN_KERNEL**2
        self.whiten = nn.Conv2d(3, whiten_width, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # set from the data by init_whitening, never trained
        nn.init.zeros_(self.whiten.bias)
        self.act = nn.GELU()
        groups, c_in = [], whiten_width
        for width in widths:
            groups.append(ConvGroup(c_in, width, downsample, padding_mode))
            c_in = width
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_classes, bias=False)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):  # airbench's BatchNorm: bias only
                module.eps, module.momentum = BN_EPS, BN_MOMENTUM
                module.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for normalised images ``(N, 3, 32, 32)``."""
        if self.stem_pad is not None:
            x = F.pad(x, (0, WHITEN_KERNEL - 1, 0, WHITEN_KERNEL - 1), mode=self.stem_pad)
        x = self.groups(self.act(self.whiten(x)))
        return self.head(self.dropout(self.flatten(self.pool(x)))) * LOGIT_SCALE

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = WHITEN_EPS) -> None:
        """Set the stem's filters from normalised training images ``(N, 3, H, W)``: the eigenvectors ``v`` of the
        2×2-patch second-moment matrix scaled by ``1/sqrt(eigenvalue + eps)``, then their negatives, so the
        first half of the stem's outputs has (nearly) identity covariance on training patches."""
        weight = self.whiten.weight
        c, h, w = weight.shape[1:]
        patches = images.float().unfold(2, h, 1).unfold(3, w, 1)  # (N, C, H', W', h, w)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * h * w)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)  # largest first, rows
        filters = (eigenvectors / torch.sqrt(eigenvalues + eps)[:, None]).reshape(-1, c, h, w)
        weight.copy_(torch.cat((filters, -filters)).to(weight.dtype))

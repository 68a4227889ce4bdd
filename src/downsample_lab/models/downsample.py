"""Downsampling strategies chosen by name, timm-style: ``create_downsample("maxpool", channels)``.

Every strategy halves H and W of an even-sized input (of an odd size, the unpadded layers drop the last row and
column, as ``MaxPool2d(2)`` does: 31 → 15; ``conv3``, ``stride`` and ``blurpool`` pad and round up: 31 → 16)
and keeps the channel count, so the strategies are drop-in replacements for each other
and the rest of the network is identical across arms. Most strategies are a layer at the downsampling site;
``stride`` is not: it gives the conv right before the site a stride of 2 (ResNet's way, Springenberg et al.'s
Strided-CNN-C) and puts nothing at the site. A network asks :func:`conv_stride` for the stride of that conv and
:func:`create_downsample` for the layer at the site (``nn.Identity`` for ``stride``), so a strategy is one entry
of the registry below, whatever it changes.

``padding_mode`` (``model.padding_mode``: zeros, circular, reflect) is passed to every layer that pads; with
``circular`` every conv of the network commutes with circular shifts, which makes ``aps`` exactly
shift-invariant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from downsample_lab.models.names import DOWNSAMPLE_NAMES


def conv_bn_relu(
    c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int = 0, padding_mode: str = "zeros"
) -> nn.Sequential:
    """Conv (no bias: the BatchNorm after it has one) → BatchNorm → ReLU."""
    return nn.Sequential(
        nn.Conv2d(
            c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False, padding_mode=padding_mode
        ),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class MaxAvgPool2d(nn.Module):
    """The mean of 2×2 max- and average-pooling, stride 2 (Mishkin et al. 2017's "max + avg" mix)."""

    stride, padding = 2, 0  # as the pooling layers have them, for the shapes table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Halve H and W."""
        return 0.5 * (F.max_pool2d(x, 2) + F.avg_pool2d(x, 2))


class AdaptivePolyphase2d(nn.Module):
    """Adaptive polyphase sampling (Chaman & Dokmanić, CVPR 2021), stride 2.

    Of the four 2×2 polyphase components of each image (rows and columns starting at 0 or 1), keep the one with
    the largest L2 norm over all channels. A circular shift of the input permutes and circularly shifts the
    components, so the same component is kept, shifted: in a network whose convs pad circularly the output does
    not depend on a circular shift of the input. Chosen on the device (argmax, gather): no host sync.
    """

    stride, padding = 2, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Halve H and W; an odd size first loses its last row or column, as ``MaxPool2d(2)`` does."""
        h, w = x.shape[-2:]
        x = x[..., : h - h % 2, : w - w % 2]
        phases = torch.stack(
            [x[..., i::2, j::2] for i in (0, 1) for j in (0, 1)], dim=1
        )  # (N, 4, C, H/2, W/2)
        norms = phases.float().square().sum(dim=(2, 3, 4))
        keep = norms.argmax(dim=1)
        return phases[torch.arange(len(x), device=x.device), keep]


def _maxpool(channels: int, padding_mode: str) -> nn.Module:
    return nn.MaxPool2d(kernel_size=2, stride=2)


def _avgpool(channels: int, padding_mode: str) -> nn.Module:
    return nn.AvgPool2d(kernel_size=2, stride=2)


def _maxavg(channels: int, padding_mode: str) -> nn.Module:
    return MaxAvgPool2d()


def _conv(channels: int, padding_mode: str) -> nn.Module:
    # The learned counterpart of max-pooling: same 2x2 window, same stride.
    return conv_bn_relu(channels, channels, kernel_size=2, stride=2, padding_mode=padding_mode)


def _conv3(channels: int, padding_mode: str) -> nn.Module:
    # As in ResNet's strided 3x3 convs.
    return conv_bn_relu(channels, channels, kernel_size=3, stride=2, padding=1, padding_mode=padding_mode)


def _conv_avg(channels: int, padding_mode: str) -> nn.Module:
    # The clean control for "does learning the 2x2 window help?": at step 0 the network is the avgpool arm.
    # Built with the RNG state restored, so that every other layer of a network gets the same initial weights
    # as in the avgpool arm of the same seed.
    with torch.random.fork_rng(devices=[]):
        conv = nn.Conv2d(channels, channels, 2, stride=2, bias=False, padding_mode=padding_mode)
    with torch.no_grad():
        eye = torch.eye(channels, device=conv.weight.device, dtype=conv.weight.dtype)
        conv.weight.copy_(eye[:, :, None, None].expand(-1, -1, 2, 2) / 4)
    return conv


def _blurpool(channels: int, padding_mode: str) -> nn.Module:
    from kornia.filters import (
        MaxBlurPool2D,  # here: importing kornia takes a second that other arms need not pay
    )

    return MaxBlurPool2D(kernel_size=3, stride=2, max_pool_size=2)


def _aps(channels: int, padding_mode: str) -> nn.Module:
    return AdaptivePolyphase2d()


def _stride(channels: int, padding_mode: str) -> nn.Module:
    return nn.Identity()


@dataclass(frozen=True)
class Strategy:
    """A downsampling strategy: the layer at the site, and the stride of the conv right before it."""

    build: Callable[[int, str], nn.Module]  # (channels, padding_mode) → the layer at the site
    conv_stride: int = 1  # 2: the preceding conv downsamples (the layer at the site is then nn.Identity)


_REGISTRY: dict[str, Strategy] = {
    "maxpool": Strategy(_maxpool),
    "conv": Strategy(_conv),
    "conv3": Strategy(_conv3),
    "avgpool": Strategy(_avgpool),
    "blurpool": Strategy(_blurpool),
    "stride": Strategy(_stride, conv_stride=2),
    "conv_avg": Strategy(_conv_avg),
    "aps": Strategy(_aps),
    "maxavg": Strategy(_maxavg),
}

if tuple(_REGISTRY) != DOWNSAMPLE_NAMES:  # our bug: a strategy added in one place only
    raise RuntimeError(f"models/names.py lists {DOWNSAMPLE_NAMES}, the registry {tuple(_REGISTRY)}")


def _strategy(name: str) -> Strategy:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown downsampling strategy {name!r}; valid names are {', '.join(DOWNSAMPLE_NAMES)}"
        ) from None


def conv_stride(name: str) -> int:
    """The stride of the conv right before a downsampling site under strategy ``name`` (2 for ``stride``)."""
    return _strategy(name).conv_stride


def create_downsample(name: str, channels: int, padding_mode: str = "zeros") -> nn.Module:
    """Build the layer at a downsampling site for strategy ``name`` and a map with ``channels`` channels.

    >>> create_downsample("maxpool", 64)
    MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
    >>> create_downsample("stride", 64)  # the preceding conv downsamples: see conv_stride()
    Identity()
    """
    return _strategy(name).build(channels, padding_mode)

"""Downsampling layers chosen by name, timm-style: ``create_downsample("maxpool", channels)``.

Every strategy halves H and W of an even-sized input and keeps the channel count, so the strategies are
drop-in replacements for each other and the rest of the network is identical across arms.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def conv_bn_relu(c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Sequential:
    """Conv (no bias: the BatchNorm after it has one) → BatchNorm → ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _maxpool(channels: int) -> nn.Module:
    """MaxPool2d(2, stride 2): no parameters"""
    return nn.MaxPool2d(kernel_size=2, stride=2)


def _avgpool(channels: int) -> nn.Module:
    """AvgPool2d(2, stride 2): no parameters"""
    return nn.AvgPool2d(kernel_size=2, stride=2)


def _conv(channels: int) -> nn.Module:
    """Conv2d(C, C, 2, stride 2) → BatchNorm → ReLU: learned, 4·C·C + 2·C parameters"""
    # The learned counterpart of max-pooling: same 2x2 window, same stride.
    return conv_bn_relu(channels, channels, kernel_size=2, stride=2)


def _conv3(channels: int) -> nn.Module:
    """Conv2d(C, C, 3, stride 2, padding 1) → BatchNorm → ReLU: overlapping windows, 9·C·C + 2·C"""
    # As in ResNet's strided 3x3 convs.
    return conv_bn_relu(channels, channels, kernel_size=3, stride=2, padding=1)


def _blurpool(channels: int) -> nn.Module:
    """anti-aliased max-pool (Zhang 2019): MaxPool2d(2, stride 1), 3x3 blur with stride 2"""
    from kornia.filters import (
        MaxBlurPool2D,  # here: importing kornia takes a second that other arms need not pay
    )

    return MaxBlurPool2D(kernel_size=3, stride=2, max_pool_size=2)


_REGISTRY: dict[str, Callable[[int], nn.Module]] = {
    "maxpool": _maxpool,
    "conv": _conv,
    "conv3": _conv3,
    "avgpool": _avgpool,
    "blurpool": _blurpool,
}

DOWNSAMPLE_NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""Valid values of ``model.downsample``."""


def describe_strategies() -> dict[str, str]:
    """What each strategy builds, in a line (its factory's docstring): for ``--help``."""
    return {name: (factory.__doc__ or "").strip() for name, factory in _REGISTRY.items()}


def create_downsample(name: str, channels: int) -> nn.Module:
    """Build the downsampling layer ``name`` for a feature map with ``channels`` channels.

    >>> create_downsample("maxpool", 64)
    MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown downsampling strategy {name!r}; valid names are {', '.join(DOWNSAMPLE_NAMES)}"
        ) from None
    return factory(channels)

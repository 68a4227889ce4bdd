"""CIFAR-10 as in-memory uint8 tensors: sources, on-disk cache, batch iteration and batched augmentation.

The names below are light; the data module (Lightning, torchvision) is imported when first used, so that the
config schema and ``shapes`` can read ``SOURCES`` without importing Lightning.
"""

from typing import Any

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
SOURCES = ("torchvision", "folder", "synthetic")

__all__ = ["CIFAR10_CLASSES", "SOURCES", "CIFAR10DataModule", "load_split"]


def __getattr__(name: str) -> Any:
    if name == "CIFAR10DataModule":
        from downsample_lab.data.cifar10 import CIFAR10DataModule

        return CIFAR10DataModule
    if name == "load_split":
        from downsample_lab.data.sources import load_split

        return load_split
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

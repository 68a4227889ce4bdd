"""CIFAR-10 as in-memory uint8 tensors: sources, on-disk cache, batch iteration and batched augmentation.

- :mod:`.config`: the ``data`` config group's schema and value rules, torch-free;
- :mod:`.sources`: the three sources (torchvision's download, a folder of images, generated images) and the
  on-disk cache; :mod:`.cifar10`: the DataModule and the batches; :mod:`.augment`: batched crop, flip and
  normalisation.

The data module (Lightning, torchvision) is imported when first used, so that the names here stay light.
"""

from typing import Any

from downsample_lab.data.config import CIFAR10_CLASSES, SOURCES

__all__ = ["CIFAR10_CLASSES", "SOURCES", "CIFAR10DataModule", "load_split"]


def __getattr__(name: str) -> Any:
    if name == "CIFAR10DataModule":
        from downsample_lab.data.cifar10 import CIFAR10DataModule

        return CIFAR10DataModule
    if name == "load_split":
        from downsample_lab.data.sources import load_split

        return load_split
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

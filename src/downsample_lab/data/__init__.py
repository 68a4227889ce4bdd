"""CIFAR-10 as in-memory uint8 tensors: sources, on-disk cache, batch iteration and batched augmentation."""

from downsample_lab.data.cifar10 import CIFAR10_CLASSES, SOURCES, CIFAR10DataModule, load_split

__all__ = ["CIFAR10_CLASSES", "SOURCES", "CIFAR10DataModule", "load_split"]

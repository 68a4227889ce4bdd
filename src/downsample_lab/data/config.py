"""The ``data`` config group: its schema (``configs/data/cifar10.yaml`` gives the values) and value rules."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING, DictConfig

from downsample_lab.choice import choices
from downsample_lab.errors import ConfigError, check_value

SOURCES = ("torchvision", "folder", "synthetic")
"""Valid values of ``data.source``."""

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
"""The class names, in CIFAR-10's label order: the class folders a ``data.source=folder`` copy holds."""

Source = choices("Source", SOURCES, __name__)
Flip = choices("Flip", ("random", "alternating"), __name__)
TranslateMode = choices("TranslateMode", ("zeros", "reflect"), __name__)


@dataclass
class DataConfig:
    source: Source = MISSING
    root: str = MISSING
    cache_dir: str | None = MISSING
    download: bool = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    val_size: int = MISSING
    split_seed: int = MISSING
    train_subset: int | None = MISSING
    augment: bool = MISSING
    flip: Flip = MISSING
    translate: int = MISSING
    translate_mode: TranslateMode = MISSING
    on_device: bool | None = MISSING
    synthetic_train_size: int = MISSING
    synthetic_test_size: int = MISSING


def check_data(d: DictConfig) -> None:
    """The value rules of the ``data`` group (merged into :class:`DataConfig`); raise ConfigError."""
    for key in ("batch_size", "eval_batch_size", "synthetic_train_size", "synthetic_test_size"):
        check_value(d[key] > 0, f"data.{key}", d[key], "use a positive number")
    check_value(
        d.val_size >= 0, "data.val_size", d.val_size, "use 0 (validate on the test set) or a positive count"
    )
    check_value(0 <= d.translate <= 8, "data.translate", d.translate, "use a shift in pixels from 0 to 8")
    check_value(d.train_subset is None or d.train_subset > 0, "data.train_subset", d.train_subset,
                "use null (all training images) or a positive count")  # fmt: skip
    if d.source == "folder" and not Path(os.path.expanduser(d.root)).is_dir():
        raise ConfigError(
            f"data.root={d.root!r} is not a folder; with data.source=folder it must hold train/ and test/ "
            "class folders (see docs/guide.md, 'Use a local copy of CIFAR-10')"
        )

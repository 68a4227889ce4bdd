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
    """`torchvision` (official files, downloaded when absent), `folder`, `synthetic`"""
    root: str = MISSING
    """where the torchvision files are or go, or the image folder"""
    cache_dir: str | None = MISSING
    """decoded-tensor cache; `null` = `$XDG_CACHE_HOME/downsample_lab` or `~/.cache/downsample_lab`"""
    download: bool = MISSING
    """torchvision source: download when absent"""
    batch_size: int = MISSING
    """global training batch, split evenly over all processes; its default follows the device the run trains on
    (`configs/data/cifar10.yaml`)
    """
    eval_batch_size: int = MISSING
    """per-process batch for validation and test"""
    val_size: int = MISSING
    """training images held out for validation (seeded); `0` validates on the test set"""
    split_seed: int = MISSING
    """seeds the train/validation split, fixed across run seeds"""
    train_subset: int | None = MISSING
    """train on the first N class-balanced images of the training split"""
    augment: bool = MISSING
    """random translation and horizontal flip, as the next three keys say"""
    flip: Flip = MISSING
    """`random` (each image, each epoch, p=0.5) or `alternating` (a fixed random half flipped, all images
    flipped in odd epochs; airbench)
    """
    translate: int = MISSING
    """random shift of up to this many pixels in x and y (a padded random crop); `0` = none"""
    translate_mode: TranslateMode = MISSING
    """what a shift brings in at the border: `zeros` or `reflect`"""
    on_device: bool | None = MISSING
    """keep the whole data set in accelerator memory; `null` = on GPU yes, on CPU no"""
    synthetic_train_size: int = MISSING
    """`data.source=synthetic`: images in the train split"""
    synthetic_test_size: int = MISSING
    """`data.source=synthetic`: images in the test split"""


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


TORCHVISION_FOLDER = "cifar-10-batches-py"
"""The folder torchvision's CIFAR10 reads under its root (``CIFAR10.base_folder``)."""


def missing_torchvision_files(root: object) -> str:
    """The message for a ``data.source=torchvision`` root without CIFAR-10's files and ``data.download=false``."""
    return (
        f"data.root={str(root)!r} holds no {TORCHVISION_FOLDER} and data.download=false; set data.download=true "
        f"to fetch CIFAR-10 there, point data.root at the folder that holds {TORCHVISION_FOLDER}, or use "
        "data.source=folder data.root=<folder with train/ and test/ class folders>"
    )


def folder_split_problem(root: Path, split: str) -> str | None:
    """What keeps ``root/split`` from being a ``data.source=folder`` split (one class folder per CIFAR-10 class),
    as a sentence; None when nothing does. Cheap: it lists two folders, and reads no image."""
    split_dir = root / split
    if not split_dir.is_dir():
        return (
            f"{split_dir} does not exist; data.source=folder expects data.root to hold train/ and test/ "
            "folders with one sub-folder per CIFAR-10 class"
        )
    present = {p.name for p in split_dir.iterdir() if p.is_dir()}
    missing = [c for c in CIFAR10_CLASSES if c not in present]
    if missing:
        return f"{split_dir} lacks the class folder(s) {', '.join(missing)}; CIFAR-10 needs all ten"
    return None


def check_training_split(d: DictConfig) -> None:
    """For the tools that train (``train``, ``bench``): ``data.val_size`` leaves training images, checked here
    where the train split's size is known before any data is made (``data.source=synthetic``)."""
    if d.source == "synthetic":
        check_value(d.val_size < d.synthetic_train_size, "data.val_size", d.val_size,
                    f"it leaves none of the data.synthetic_train_size={d.synthetic_train_size} training images: "
                    "lower data.val_size (0 validates on the test set) or raise data.synthetic_train_size")  # fmt: skip


def check_data_files(d: DictConfig, splits: tuple[str, ...] = ("train", "test")) -> None:
    """That the data ``d`` names is there, as the data module loads it (its ``splits``: eval tests only); raise
    ConfigError. Cheap: it lists a few folders and reads no image, so a run is refused before its imports.

    Not a rule of :func:`~downsample_lab.config.validate`: the files are those of the machine that runs the job
    (a sweep submitted to SLURM checks them on its nodes), and eval's data keys are its checkpoint's, known once it
    is read. Called where :func:`~downsample_lab.device.check_accelerator` is.
    """
    root = Path(os.path.expanduser(d.root))
    if d.source == "folder":
        if not root.is_dir():
            raise ConfigError(
                f"data.root={d.root!r} is not a folder; with data.source=folder it must hold train/ and test/ "
                "class folders (see docs/guide.md, 'Use a local copy of CIFAR-10')"
            )
        for split in splits:
            problem = folder_split_problem(root, split)
            if problem is not None:
                raise ConfigError(problem)
    if d.source == "torchvision" and not (root / TORCHVISION_FOLDER).is_dir():
        if all((root / split).is_dir() for split in splits):  # else torchvision downloads into it
            raise ConfigError(
                f"data.root={d.root!r} holds {' and '.join(f'{s}/' for s in splits)} folders, not torchvision's "
                f"{TORCHVISION_FOLDER}; add data.source=folder to read them"
            )
        if not d.download:
            raise ConfigError(missing_torchvision_files(d.root))

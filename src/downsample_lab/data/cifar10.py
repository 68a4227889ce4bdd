"""CIFAR-10 from three sources, decoded once into uint8 tensors, cached on disk, served as in-memory batches.

Sources (``data.source``):

- ``torchvision``: the official python-pickle files under ``data.root``, downloaded by torchvision when absent.
- ``folder``: an image-folder copy, ``<root>/{train,test}/<class>/*.{png,jpg}``, class folders named as in
  CIFAR-10 (their sorted order is the official label order).
- ``synthetic``: generated 32x32 images of ten class patterns under random shifts and noise; learnable in a few
  hundred steps, for smoke tests and benchmarks.

Whatever the source, a split becomes one ``(N, 3, 32, 32)`` uint8 tensor and one int64 label tensor, written to
``data.cache_dir`` together with a fingerprint of the source files, so a second run skips decoding and a changed
source is decoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchvision.datasets.folder import make_dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from tqdm.auto import tqdm

from downsample_lab.data import CIFAR10_CLASSES, SOURCES
from downsample_lab.data.augment import normalize, random_crop_flip
from downsample_lab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")
# Bump when the cached tensors would differ for the same source files (decoder, layout, synthetic recipe).
CACHE_VERSION = 1


@dataclass
class Split:
    """One split of the data set in memory."""

    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


# ---------------------------------------------------------------------------------------------------------------
# Sources: each returns (fingerprint of what it reads, a function that decodes it).
# ---------------------------------------------------------------------------------------------------------------


def _torchvision_source(root: Path, split: str, download: bool) -> tuple[dict, Callable[[], Split]]:
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(root), train=split == "train", download=download)
    except Exception as err:  # URLError, OSError, RuntimeError("Dataset not found or corrupted") ...
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(
            f"CIFAR-10 is not under data.root={root} and could not be downloaded ({reason}); "
            "point data.root at the folder that holds cifar-10-batches-py, "
            "or use data.source=folder data.root=<folder with train/ and test/ class folders>"
        ) from None
    base = root / dataset.base_folder
    names = [name for name, _ in (dataset.train_list if split == "train" else dataset.test_list)]
    fingerprint = {"files": [[n, (base / n).stat().st_size, (base / n).stat().st_mtime_ns] for n in names]}

    def decode() -> Split:
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return Split(images, torch.tensor(dataset.targets, dtype=torch.int64))

    return fingerprint, decode


def _folder_source(root: Path, split: str) -> tuple[dict, Callable[[], Split]]:
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(
            f"{split_dir} does not exist; data.source=folder expects data.root to hold train/ and test/ "
            "folders with one sub-folder per CIFAR-10 class"
        )
    present = {p.name for p in split_dir.iterdir() if p.is_dir()}
    missing = [c for c in CIFAR10_CLASSES if c not in present]
    if missing:
        raise DataError(f"{split_dir} lacks the class folder(s) {', '.join(missing)}; CIFAR-10 needs all ten")
    class_to_idx = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    try:
        samples = make_dataset(str(split_dir), class_to_idx, extensions=IMAGE_EXTENSIONS)
    except FileNotFoundError as err:
        raise DataError(f"{split_dir}: {err}".rstrip(".")) from None
    digest = hashlib.sha256()
    for path, label in samples:
        st = os.stat(path)
        digest.update(
            f"{os.path.relpath(path, split_dir)}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
        )
    fingerprint = {"n": len(samples), "files_sha256": digest.hexdigest()}

    def decode() -> Split:
        images = _decode_files([path for path, _ in samples], desc=f"decoding {split_dir}")
        return Split(images, torch.tensor([label for _, label in samples], dtype=torch.int64))

    return fingerprint, decode


def _decode_files(paths: list[str], desc: str, chunk: int = 2048) -> torch.Tensor:
    """Decode image files into one (N, 3, 32, 32) uint8 tensor, naming any file that is corrupt or mis-sized."""
    out = torch.empty(len(paths), 3, 32, 32, dtype=torch.uint8)
    for start in tqdm(range(0, len(paths), chunk), desc=desc, unit="chunk", leave=False):
        part = paths[start : start + chunk]
        decoded = None
        if all(p.lower().endswith((".jpg", ".jpeg")) for p in part):
            try:  # torchvision decodes a list of JPEGs in one call, several times faster than one by one
                decoded = decode_jpeg([read_file(p) for p in part], mode=ImageReadMode.RGB)
            except RuntimeError:
                decoded = None  # some file is bad: decode one by one below to name it
        if decoded is None:
            decoded = []
            for p in part:
                try:
                    decoded.append(decode_image(p, mode=ImageReadMode.RGB))
                except (RuntimeError, ValueError) as err:
                    raise DataError(
                        f"cannot decode image {p} ({str(err).splitlines()[0]}); replace or delete it"
                    ) from None
        for i, (p, img) in enumerate(zip(part, decoded, strict=True)):
            if tuple(img.shape) != (3, 32, 32):
                raise DataError(
                    f"image {p} is {img.shape[2]}x{img.shape[1]} pixels; CIFAR-10 images are 32x32"
                )
            out[start + i] = img
    return out


def _synthetic_source(split: str, size: int) -> tuple[dict, Callable[[], Split]]:
    def decode() -> Split:
        # Ten fixed low-frequency colour patterns (the same for both splits), each image one of them shifted by
        # up to 4 pixels with per-pixel noise: a CNN separates them, but not from a single pixel.
        templates = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        templates = F.interpolate(templates, size=(32, 32), mode="bilinear", align_corners=False) * 200 + 28
        gen = torch.Generator().manual_seed(1 if split == "train" else 2)
        labels = torch.arange(size) % 10
        images = templates[labels]
        shifts = torch.randint(-4, 5, (size, 2), generator=gen)
        for i in range(size):
            images[i] = torch.roll(images[i], shifts=(int(shifts[i, 0]), int(shifts[i, 1])), dims=(1, 2))
        images = images + torch.randn(images.shape, generator=gen) * 40
        return Split(images.clamp(0, 255).to(torch.uint8), labels.to(torch.int64))

    return {"size": size}, decode


# ---------------------------------------------------------------------------------------------------------------
# The on-disk cache
# ---------------------------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/downsample_lab``, or ``~/.cache/downsample_lab``."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "downsample_lab"


def _read_cache(path: Path, key: dict) -> Split | None:
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        images, labels = blob["images"], blob["labels"]
        ok = images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32) and len(images) == len(labels)
        if not ok:
            raise ValueError("unexpected tensor shapes")
    except Exception as err:
        log.warning("Cache file %s is unreadable (%s); decoding the source again.", path, err)
        return None
    if blob.get("key") != json.dumps(key, sort_keys=True):
        log.info("Cache file %s is stale (the source changed); decoding the source again.", path)
        return None
    return Split(images, labels)


def _write_cache(path: Path, key: dict, split: Split) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file and rename: a killed run never leaves a half-written cache behind.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(
            {"key": json.dumps(key, sort_keys=True), "images": split.images, "labels": split.labels}, tmp
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_split(
    source: str,
    root: str | os.PathLike,
    split: str,
    cache_dir: str | os.PathLike | None = None,
    synthetic_size: int = 10_000,
    download: bool = True,
) -> Split:
    """Load one split (``"train"`` or ``"test"``) of CIFAR-10 as uint8 tensors, through the on-disk cache."""
    root = Path(root).expanduser().resolve()
    if source == "torchvision":
        fingerprint, decode = _torchvision_source(root, split, download)
    elif source == "folder":
        fingerprint, decode = _folder_source(root, split)
    elif source == "synthetic":
        fingerprint, decode = _synthetic_source(split, synthetic_size)
    else:
        raise ConfigError(f"data.source={source!r} is not valid; choose one of {', '.join(SOURCES)}")
    where = "synthetic" if source == "synthetic" else str(root)
    key = {"version": CACHE_VERSION, "source": source, "root": where, "split": split, **fingerprint}
    name = hashlib.sha256(f"{source}\0{where}".encode()).hexdigest()[:12]
    cache_file = Path(cache_dir or default_cache_dir()).expanduser() / f"{source}-{split}-{name}.pt"
    cached = _read_cache(cache_file, key)
    if cached is not None:
        log.info("Loaded %s %s split (%d images) from cache %s", source, split, len(cached), cache_file)
        return cached
    data = decode()
    _write_cache(cache_file, key, data)
    log.info("Decoded %s %s split (%d images); cached in %s", source, split, len(data), cache_file)
    return data


# ---------------------------------------------------------------------------------------------------------------
# Batches cut from the in-memory tensors
# ---------------------------------------------------------------------------------------------------------------


def class_balanced_subset(indices: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` of ``indices`` taken class by class in turn, so every class gets ``n // 10`` or one more."""
    classes = labels[indices].unique()
    per_class = [indices[labels[indices] == c] for c in classes]
    # Position of each index within its own class; sorting by it interleaves the classes.
    rank = torch.cat([torch.arange(len(idx)) for idx in per_class])
    cls = torch.cat([torch.full((len(idx),), i) for i, idx in enumerate(per_class)])
    order = torch.argsort(rank * len(classes) + cls)
    return torch.cat(per_class)[order[:n]].sort().values


def epoch_batches(
    n: int, batch_size: int, seed: int, device: torch.device | str = "cpu"
) -> list[torch.Tensor]:
    """One epoch's global batches of indices into ``n`` images: a permutation drawn from ``seed`` on ``device``,
    cut into ``batch_size`` slices, the last partial one dropped unless it is the only one.

    Drawn where the images are, so a GPU run neither copies indices from the host nor waits for it; the same
    seed gives the same order on the same kind of device (a CPU and a GPU draw different permutations).
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    perm = torch.randperm(n, generator=gen, device=device)
    batches = list(torch.split(perm, batch_size))
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


class TensorBatches:
    """Batches of ``(images, labels)`` sliced from in-memory tensors: no workers, no per-image work.

    For training, each epoch draws a fresh permutation from ``seed + epoch`` (the same on every process), cuts it
    into global batches of ``batch_size`` and gives process ``rank`` its ``batch_size // world_size`` share, so
    the global batch is what the config says on any number of devices. The last partial batch is dropped, as is
    usual for training, unless the data is smaller than one batch. For evaluation (``shuffle=False``), process
    ``rank`` takes a contiguous shard of the whole set and nothing is dropped or repeated.

    Stateful for exact resumption: Lightning's fit loop saves :meth:`state_dict` (the epoch and how many batches
    of it were handed out) in every checkpoint and gives it back through :meth:`load_state_dict` before the
    first iteration after a restart, which then skips the batches the interrupted run already trained on.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        epoch_fn: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.epoch_fn = batch_size, shuffle, seed, epoch_fn
        self.rank, self.world_size = rank, world_size
        self._epoch = 0  # the epoch being iterated and how many of its batches were handed out
        self._position = 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches) from a checkpoint, not applied yet

    def _indices(self) -> list[torch.Tensor]:
        device = self.images.device
        if not self.shuffle:
            shard = torch.tensor_split(torch.arange(len(self.labels), device=device), self.world_size)[
                self.rank
            ]
            return list(torch.split(shard, self.batch_size))
        batches = epoch_batches(len(self.labels), self.batch_size, self.seed + self.epoch_fn(), device)
        return [torch.tensor_split(b, self.world_size)[self.rank] for b in batches]

    def __len__(self) -> int:
        n = len(self.labels)
        if not self.shuffle:
            return -(-len(torch.tensor_split(torch.arange(n), self.world_size)[self.rank]) // self.batch_size)
        return max(1, n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator: the body runs at the first next(), when Lightning has set the epoch of a restart.
        self._epoch, start = self.epoch_fn(), 0
        if self._resume_at is not None:
            # A checkpoint taken at the very end of an epoch is resumed at the start of the next one.
            epoch, consumed = self._resume_at
            start = consumed if epoch == self._epoch else 0
            self._resume_at = None
        batches = self._indices()
        for self._position, idx in enumerate(batches[start:], start + 1):
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx)

    def state_dict(self) -> dict[str, int]:
        """The epoch being iterated and how many of its batches were handed out (saved in checkpoints)."""
        return {"epoch": self._epoch, "batches": self._position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next iteration skip the batches of ``state["epoch"]`` that were handed out already."""
        self._resume_at = (int(state["epoch"]), int(state["batches"]))


class CIFAR10DataModule(L.LightningDataModule):
    """CIFAR-10 (or a stand-in) held in memory as uint8; augmented batched on the training device.

    Args mirror the ``data`` config group (see the README's table). ``channels_last`` comes from the model
    config, so the normalised batches are laid out as the model expects them; ``seed`` is the run's seed.
    """

    def __init__(
        self,
        source: str = "torchvision",
        root: str = "data/cifar10",
        cache_dir: str | None = None,
        download: bool = True,
        batch_size: int = 512,
        eval_batch_size: int = 1024,
        val_size: int = 5000,
        split_seed: int = 0,
        train_subset: int | None = None,
        augment: bool = True,
        flip: str = "random",
        translate: int = 4,
        translate_mode: str = "zeros",
        on_device: bool | None = None,
        synthetic_train_size: int = 10_000,
        synthetic_test_size: int = 2_000,
        channels_last: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.cfg = dict(
            source=source, root=root, cache_dir=cache_dir, download=download, batch_size=batch_size,
            eval_batch_size=eval_batch_size, val_size=val_size, split_seed=split_seed,
            train_subset=train_subset, augment=augment, flip=flip, translate=translate,
            translate_mode=translate_mode, on_device=on_device,
            synthetic_train_size=synthetic_train_size, synthetic_test_size=synthetic_test_size,
        )  # fmt: skip
        self.channels_last = channels_last
        self.seed = seed  # the run's seed: it orders the training batches
        self.train_set: Split | None = None
        self.val_set: Split | None = None
        self.test_set: Split | None = None
        self._splits: dict[str, Split] = {}

    def _load(self, split: str) -> Split:
        if split not in self._splits:  # prepare_data and setup run in the same process on rank 0
            c = self.cfg
            size = c["synthetic_train_size"] if split == "train" else c["synthetic_test_size"]
            self._splits[split] = load_split(
                c["source"], c["root"], split, c["cache_dir"], synthetic_size=size, download=c["download"]
            )
        return self._splits[split]

    def prepare_data(self) -> None:
        """Download (torchvision source) and fill the cache once, on one process per node."""
        for split in SPLITS:
            self._load(split)

    def setup(self, stage: str | None = None) -> None:
        """Hold out the validation split and cut the training subset (seeded, the same on every process)."""
        c = self.cfg
        if stage in ("fit", "validate", None) and self.train_set is None:
            full = self._load("train")
            if c["val_size"] >= len(full):
                raise ConfigError(
                    f"data.val_size={c['val_size']} leaves no training images; the train split has {len(full)}"
                )
            perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(c["split_seed"]))
            val_idx, train_idx = perm[: c["val_size"]].sort().values, perm[c["val_size"] :].sort().values
            if c["train_subset"] is not None:
                if c["train_subset"] > len(train_idx):
                    raise ConfigError(
                        f"data.train_subset={c['train_subset']} is larger than the {len(train_idx)} training "
                        "images left after data.val_size; use a smaller subset or null for all"
                    )
                train_idx = class_balanced_subset(train_idx, full.labels, c["train_subset"])
            self.train_set = Split(full.images[train_idx], full.labels[train_idx])
            if c["augment"] and c["flip"] == "alternating":
                # airbench's alternating flip, part 1: a fixed random half of the images is flipped once, drawn
                # from the run's seed; on_after_batch_transfer flips every image in odd epochs (part 2).
                flipped = torch.rand(len(train_idx), generator=torch.Generator().manual_seed(self.seed)) < 0.5
                self.train_set.images[flipped] = self.train_set.images[flipped].flip(-1)
            self.val_set = Split(full.images[val_idx], full.labels[val_idx]) if c["val_size"] > 0 else None
        if self.test_set is None and (
            stage in ("test", None) or (stage in ("fit", "validate") and c["val_size"] == 0)
        ):
            self.test_set = self._load("test")
        if self.val_set is None and c["val_size"] == 0 and self.test_set is not None:
            self.val_set = self.test_set  # data.val_size=0: the test set doubles as the validation set

    def _device(self) -> torch.device:
        root = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        on_device = self.cfg["on_device"]
        # On a GPU the whole set (~180 MB as uint8) lives in device memory: no host-to-device copy per step.
        return root if (on_device if on_device is not None else root.type == "cuda") else torch.device("cpu")

    def _loader(self, split: Split, batch_size: int, train: bool) -> TensorBatches:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if train and batch_size % world:
            raise ConfigError(
                f"data.batch_size={batch_size} is the global batch and must divide evenly over {world} processes"
            )
        device = self._device()
        return TensorBatches(
            split.images.to(device),
            split.labels.to(device),
            batch_size,
            shuffle=train,
            seed=self.seed,
            epoch_fn=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
            rank=rank,
            world_size=world,
        )

    def train_dataloader(self) -> TensorBatches:
        """Shuffled global batches of ``data.batch_size``, shared out over the processes."""
        assert self.train_set is not None
        return self._loader(self.train_set, self.cfg["batch_size"], train=True)

    def val_dataloader(self) -> TensorBatches:
        """The held-out validation split (or the test set when ``data.val_size=0``)."""
        assert self.val_set is not None
        return self._loader(self.val_set, self.cfg["eval_batch_size"], train=False)

    def test_dataloader(self) -> TensorBatches:
        """The 10,000 official test images (or the synthetic test split)."""
        assert self.test_set is not None
        return self._loader(self.test_set, self.cfg["eval_batch_size"], train=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment (training only) and normalise on the device the batch now lives on."""
        images, labels = batch
        c = self.cfg
        if self.trainer is not None and self.trainer.training and c["augment"]:
            alternating = c["flip"] == "alternating"
            images = random_crop_flip(images, c["translate"], flip=not alternating, mode=c["translate_mode"])
            if alternating and self.trainer.current_epoch % 2 == 1:
                images = images.flip(-1)  # every image shows its other side in odd epochs
        return normalize(images, self.channels_last), labels

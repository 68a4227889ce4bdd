"""CIFAR-10 served from memory: batches cut from the uint8 tensors of :mod:`~downsample_lab.data.sources`, and
the LightningDataModule that holds out the validation split and augments batches on the training device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from downsample_lab.data.augment import augment, normalize
from downsample_lab.data.sources import SPLITS, Split, data_digest, split_of
from downsample_lab.errors import ConfigError

if TYPE_CHECKING:
    from downsample_lab.data.config import DataConfig


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


def data_device(on_device: bool | None, device: torch.device) -> torch.device:
    """Where the in-memory data set lives when training runs on ``device`` (``data.on_device``; None: in device
    memory on a GPU, where the whole set (~180 MB as uint8) then needs no host-to-device copy per step, and in
    host memory otherwise)."""
    keep = on_device if on_device is not None else device.type == "cuda"
    return device if keep else torch.device("cpu")


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

    Args:
        data: the ``data`` config group (:class:`~downsample_lab.data.config.DataConfig`; docs/configuration.md).
        channels_last: ``model.channels_last``: the normalised batches are laid out as the model expects them.
        seed: the run's seed; it orders the training batches.
        splits: the splits ``prepare_data`` decodes into the cache (``("test",)`` for a tool that only tests).
    """

    def __init__(
        self, data: DataConfig, channels_last: bool, seed: int, splits: tuple[str, ...] = SPLITS
    ) -> None:
        super().__init__()
        self.data_cfg = data
        self.channels_last = channels_last
        self.seed = seed
        self.splits = splits  # what prepare_data loads: eval tests only
        self.train_set: Split | None = None
        self.val_set: Split | None = None
        self.test_set: Split | None = None
        self._splits: dict[str, Split] = {}
        self._digest: str | None = None

    def _load(self, split: str) -> Split:
        if split not in self._splits:  # prepare_data and setup run in the same process on rank 0
            self._splits[split] = split_of(self.data_cfg, split)
        return self._splits[split]

    def __getstate__(self) -> dict[str, Any]:
        # A process started by pickling the module (trainer.strategy=ddp_spawn) loads its own splits from the
        # cache: those that digest() loaded here are not copied into every worker.
        return {**self.__dict__, "_splits": {}}

    def digest(self) -> str:
        """The data a training run reads, as one checksum (:func:`~downsample_lab.data.sources.data_digest`).
        Loads both splits (through the cache), as the fit and the test will."""
        if self._digest is None:
            self._digest = data_digest([self._load(split) for split in SPLITS])
        return self._digest

    def prepare_data(self) -> None:
        """Download (torchvision source) and fill the cache once, on one process per node: ``splits`` only."""
        for split in self.splits:
            self._load(split)

    def setup(self, stage: str | None = None) -> None:
        """Hold out the validation split and cut the training subset (seeded, the same on every process)."""
        c = self.data_cfg
        if stage in ("fit", "validate", None) and self.train_set is None:
            full = self._load("train")
            if c.val_size >= len(full):
                raise ConfigError(
                    f"data.val_size={c.val_size} leaves no training images; the train split has {len(full)}: "
                    "lower data.val_size (0 validates on the test set)"
                )
            perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(c.split_seed))
            val_idx, train_idx = perm[: c.val_size].sort().values, perm[c.val_size :].sort().values
            if c.train_subset is not None:
                if c.train_subset > len(train_idx):
                    raise ConfigError(
                        f"data.train_subset={c.train_subset} is larger than the {len(train_idx)} training "
                        "images left after data.val_size; use a smaller subset or null for all"
                    )
                train_idx = class_balanced_subset(train_idx, full.labels, c.train_subset)
            self.train_set = Split(full.images[train_idx], full.labels[train_idx])
            if c.augment and c.flip == "alternating":
                # airbench's alternating flip, part 1: a fixed random half of the images is flipped once, drawn
                # from the run's seed; on_after_batch_transfer flips every image in odd epochs (part 2).
                flipped = torch.rand(len(train_idx), generator=torch.Generator().manual_seed(self.seed)) < 0.5
                self.train_set.images[flipped] = self.train_set.images[flipped].flip(-1)
            self.val_set = Split(full.images[val_idx], full.labels[val_idx]) if c.val_size > 0 else None
        if self.test_set is None and (
            stage in ("test", None) or (stage in ("fit", "validate") and c.val_size == 0)
        ):
            self.test_set = self._load("test")
        if self.val_set is None and c.val_size == 0 and self.test_set is not None:
            self.val_set = self.test_set  # data.val_size=0: the test set doubles as the validation set

    def _device(self) -> torch.device:
        root = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        return data_device(self.data_cfg.on_device, root)

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
        return self._loader(self.train_set, self.data_cfg.batch_size, train=True)

    def val_dataloader(self) -> TensorBatches:
        """The held-out validation split (or the test set when ``data.val_size=0``)."""
        assert self.val_set is not None
        return self._loader(self.val_set, self.data_cfg.eval_batch_size, train=False)

    def test_dataloader(self) -> TensorBatches:
        """The 10,000 official test images (or the synthetic test split)."""
        assert self.test_set is not None
        return self._loader(self.test_set, self.data_cfg.eval_batch_size, train=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment (training only) and normalise on the device the batch now lives on."""
        images, labels = batch
        if self.trainer is not None and self.trainer.training:
            images = augment(images, self.data_cfg, self.trainer.current_epoch)
        return normalize(images, self.channels_last), labels

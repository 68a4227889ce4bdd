"""Training throughput per epoch, evaluation excluded.

Lightning's ``ThroughputMonitor`` reports a rolling per-device rate (and a global one only when there is more
than one device, under another tag), after a 100-batch window; the comparison between strategies wants one
global figure per epoch under one tag on any number of devices, so this callback times each training epoch,
subtracts the validation loop, and logs:

- ``train/images_per_sec``: training images processed per second, summed over all processes;
- ``train/epoch_time``: wall seconds of the epoch's training part.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochThroughput(L.Callback):
    """Logs ``train/images_per_sec`` (global) and ``train/epoch_time`` at the end of every training epoch."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self._eval_time = 0.0
        self._val_t0 = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module.device)
        self._t0, self._eval_time, self._images = time.perf_counter(), 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[1])

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module.device)
        self._val_t0 = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module.device)
        self._eval_time += time.perf_counter() - self._val_t0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module.device)
        elapsed = time.perf_counter() - self._t0 - self._eval_time
        if elapsed <= 0 or self._images == 0:
            return
        # Every process sees an equal share of each global batch, so the global count is this share × world;
        # the processes' own timings are averaged.
        images = self._images * trainer.world_size
        pl_module.log("train/images_per_sec", images / elapsed, on_epoch=True, sync_dist=True)
        pl_module.log("train/epoch_time", elapsed, on_epoch=True, sync_dist=True)

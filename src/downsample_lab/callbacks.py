"""Lightning callbacks of a training run: epoch throughput, the state an exact resume needs, the NaN guard.

``EpochThroughput``: Lightning's ``ThroughputMonitor`` reports a rolling per-device rate (and a global one only
when there is more than one device, under another tag), after a 100-batch window; the comparison between
strategies wants one global figure per epoch under one tag on any number of devices, so this callback times
each training epoch, subtracts the validation loop, and logs:

- ``train/images_per_sec``: training images processed per second, summed over all processes;
- ``train/epoch_time``: wall seconds of the epoch's training part.

``MidEpochCheckpoint``: ``last.ckpt`` every N steps inside an epoch.

``RunState``: what Lightning's checkpoints leave out but an exact resume needs (the RNG states) and what tells
a resumed run from a different one (the run's config).

``StopOnNonFiniteLoss``: stops the run at a NaN or infinite training loss, before a checkpoint can hold it.

``ProgressBar`` and ``EpochSummary``: what the console shows, without reading a value on the host between two
logging steps.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

from downsample_lab import compat
from downsample_lab.errors import UserError

log = logging.getLogger("downsample_lab")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA, MPS, ...), so that a clock reading covers it; a no-op on CPU."""
    if device.type != "cpu":  # torch.accelerator refuses a device other than the build's accelerator
        torch.accelerator.synchronize(device)


class EpochThroughput(L.Callback):
    """Logs ``train/images_per_sec`` (global) and ``train/epoch_time`` at the end of every training epoch."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self._eval_time = 0.0
        self._val_t0 = 0.0
        self._images = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed mid-epoch skips on_train_epoch_start: time the rest of that epoch from here.
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        self._t0, self._eval_time, self._images = time.perf_counter(), 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[1])

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        self._val_t0 = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        self._eval_time += time.perf_counter() - self._val_t0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        elapsed = time.perf_counter() - self._t0 - self._eval_time
        if elapsed <= 0 or self._images == 0:
            return
        # Every process sees an equal share of each global batch, so the global count is this share × world;
        # the processes' own timings are averaged.
        images = self._images * trainer.world_size
        pl_module.log("train/images_per_sec", images / elapsed, on_epoch=True, sync_dist=True)
        pl_module.log("train/epoch_time", elapsed, on_epoch=True, sync_dist=True)


def rng_states(device: torch.device) -> dict[str, Any]:
    """The global RNG states of torch (CPU, and ``device`` if it is a GPU), NumPy and Python, as tensors and
    plain values, so a checkpoint holding them still loads with ``weights_only=True``."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [int(version), torch.tensor(py_state, dtype=torch.int64), py_gauss],
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_states` returned."""
    torch.set_rng_state(states["torch"])
    keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = states["python"]
    random.setstate((version, tuple(py_state.tolist()), py_gauss))
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


class MidEpochCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint(every_n_train_steps=n)`` that skips the last batch of an epoch.

    A checkpoint written after an epoch's last batch but before its validation is resumed by Lightning as a
    finished epoch, without that validation (nor the epoch's metrics); the epoch-end checkpoint, written after
    validation, covers that point instead.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not compat.is_last_batch(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class RunState(L.Callback):
    """Saves in every checkpoint the global RNG states and the run's config; restores the RNG states on resume.

    Lightning restores weights, optimiser, schedule, loop counters and (through ``TensorBatches.state_dict``)
    the position in the epoch, but not the global RNG that the batch augmentation draws from; without it a
    resumed run would crop and flip differently from the run it continues. The states are put back at
    ``on_train_start``, after the sanity check, just before the first resumed batch. Under DDP the processes
    draw the same numbers (same seed, equal shares), so rank 0's states, the ones saved, serve every process.

    Args:
        config: the run's resolved config as plain values; ``train`` compares it with the resuming run's.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["rng_states"] = rng_states(pl_module.device)
        checkpoint["run_config"] = self.config

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._pending = checkpoint.get("rng_states")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning bug #20550 (open in 2.6): configure_optimizers reads trainer.estimated_stepping_batches, which
        # sets up the training loader before the loop state is restored, so the fit loop never hands the saved
        # loader state to TensorBatches. Hand it over here, where Lightning would have; a no-op when there is
        # none (a fresh run) or once Lightning has done it itself.
        compat.load_combined_loader_states(trainer)
        if self._pending is not None:
            set_rng_states(self._pending, pl_module.device)
            self._pending = None


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(L.Callback):
    """Stops training at a NaN or infinite loss, naming the step and the last checkpoint saved before it.

    Lightning's ``detect_anomaly`` checks every backward op and slows training several times. This checks the
    loss only, and without a host sync per step: every step records the first non-finite loss in tensors on
    the device (no sync), and they are read only at steps where a sync happens anyway or a checkpoint is about
    to be written: every ``check_every_n_steps`` (the logging interval, where Lightning syncs the logged loss),
    every ``checkpoint_every_n_steps`` and the last batch of an epoch (before validation and the epoch's
    checkpoint). Lightning runs checkpoint callbacks after all others, so a checkpoint never holds weights
    trained on a non-finite loss. At most ``check_every_n_steps - 1`` steps train on garbage before the run
    stops. Under DDP the processes compare their flags at those steps, so all of them stop at the same one.

    Args:
        check_every_n_steps: how often to read the flag (``trainer.log_every_n_steps``).
        checkpoint_every_n_steps: ``checkpoint.every_n_steps``; ``None`` for epoch-end checkpoints only.
        last_checkpoint: the file every checkpoint also goes to (``<run dir>/checkpoints/last.ckpt``).
    """

    def __init__(
        self, check_every_n_steps: int, checkpoint_every_n_steps: int | None, last_checkpoint: Path
    ) -> None:
        self.check_every_n_steps = check_every_n_steps
        self.checkpoint_every_n_steps = checkpoint_every_n_steps
        self.last_checkpoint = last_checkpoint
        self._first_bad_step: torch.Tensor | None = None  # -1 while every loss was finite
        self._first_bad_loss: torch.Tensor | None = None
        self._saved: tuple[Path, int] | None = None  # last checkpoint written, the global step it holds

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is not None:  # resumed: the checkpoint it came from is the last good one so far
            self._saved = (Path(trainer.ckpt_path), trainer.global_step)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._saved = (self.last_checkpoint, trainer.global_step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach()
        if self._first_bad_step is None:
            self._first_bad_step = torch.full((), -1, dtype=torch.int64, device=loss.device)
            self._first_bad_loss = torch.zeros((), dtype=loss.dtype, device=loss.device)
        # global_step already counts this batch's optimiser step: step n is the n-th batch trained on
        first_bad = (self._first_bad_step < 0) & ~torch.isfinite(loss)
        self._first_bad_step = torch.where(first_bad, trainer.global_step, self._first_bad_step)
        self._first_bad_loss = torch.where(first_bad, loss, self._first_bad_loss)
        step = trainer.global_step
        due = step % self.check_every_n_steps == 0 or compat.is_last_batch(trainer)
        due = due or (self.checkpoint_every_n_steps is not None and step % self.checkpoint_every_n_steps == 0)
        if not due:
            return
        # Every process decides on the same steps, from the earliest bad step of any: all stop together (DDP).
        steps = pl_module.all_gather(self._first_bad_step).reshape(-1)
        losses = pl_module.all_gather(self._first_bad_loss).reshape(-1)
        bad = steps >= 0
        if bad.any():
            earliest = int(torch.where(bad, steps, steps.max() + 1).argmin())
            bad_step, bad_loss = int(steps[earliest]), float(losses[earliest])
            if self._saved is None:
                where = "no checkpoint was saved before it"
            else:
                where = f"the last good checkpoint is {self._saved[0]} (step {self._saved[1]})"
            raise NonFiniteLossError(
                f"training loss is {bad_loss} at step {bad_step} (epoch "
                f"{trainer.current_epoch}) and the run stopped; {where}; lower optim.lr or set "
                "trainer.gradient_clip_val and train again"
            )


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, redrawn every ``trainer.log_every_n_steps`` batches, showing values read at logging
    steps only: the training loss of the last logging step and the last epoch's validation accuracy.

    Lightning's own bar shows every value logged with ``prog_bar=True`` and reads each on the host at every
    step (a GPU sync per step, even when the bar is hidden), and redraws on every batch.
    """

    def __init__(self, refresh_rate: int) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self._shown: dict[str, float] = {}

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return {k: f"{v:.4g}" for k, v in self._shown.items()}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % trainer.log_every_n_steps == 0:  # a logging step: its loss is read anyway
            loss = trainer.callback_metrics.get("train/loss")
            if loss is not None:
                self._shown["loss"] = float(loss)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        # the epoch as the log's epoch lines count it ("Epoch 2/3"), not Lightning's 0-based index
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and "val/acc" in trainer.callback_metrics:
            self._shown["val/acc"] = float(trainer.callback_metrics["val/acc"])
        super().on_validation_end(trainer, pl_module)


# The figures of the per-epoch line, in order, with how each is shown.
_EPOCH_LINE = (
    ("train/loss", "loss {:.4f}"),
    ("train/acc", "train/acc {:.4f}"),
    ("val/acc", "val/acc {:.4f}"),
    ("val/acc_best", "best {:.4f}"),
    ("train/images_per_sec", "{:,.0f} img/s"),
    ("train/epoch_time", "{:.1f} s"),
)


class EpochSummary(L.Callback):
    """One line per training epoch in the console and in ``train.log``, bar or no bar, e.g.
    ``Epoch 3/10: loss 1.2345, train/acc 0.5432, val/acc 0.6123, best 0.6200, 12,345 img/s, 4.1 s``.

    Written when everything of the epoch has been logged: the metrics of an epoch's end are logged by the
    callbacks and the module in ``on_train_epoch_end`` (the module's hook runs after every callback's), so the
    line of an epoch is written at the start of the next one, or when training ends. ``train/loss`` is that of
    the epoch's last logging step, or of its last step where an epoch is shorter than the logging interval.
    """

    def __init__(self) -> None:
        self._pending: int | None = None  # the epoch whose line is due

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        steps, every = trainer.num_training_batches, trainer.log_every_n_steps
        if trainer.is_global_zero and isinstance(steps, int) and steps < every:
            log.info(
                "An epoch has %d steps, fewer than trainer.log_every_n_steps=%d: TensorBoard gets the training "
                "loss every %d steps, not every epoch (the epoch lines show each epoch's last); set "
                "trainer.log_every_n_steps=%d or less for a point per epoch.", steps, every, every, steps,
            )  # fmt: skip

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def _write(self, trainer: L.Trainer) -> None:
        if self._pending is None or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = [fmt.format(float(metrics[key])) for key, fmt in _EPOCH_LINE if key in metrics]
        log.info("Epoch %d/%d: %s", self._pending + 1, trainer.max_epochs, ", ".join(parts))
        self._pending = None


class Lookahead(L.Callback):
    """airbench94's lookahead: every ``every`` steps the weights move to an EMA of themselves, and stay there.

    At step s of T, every ``every`` steps: ``ema ← lerp(ema, weights, 1 - a)`` with
    ``a = decay**every · (s/T)**power``, then ``weights ← ema``. ``a`` is near 0 early (the EMA follows the
    weights) and grows to ``decay**every`` at the end, so the averaging acts in the last part of training. After
    the last step (T), the weights are set to the EMA once more. Covers the module's floating-point state: the
    parameters and the BatchNorm running statistics (``pl_module.net.state_dict()``).

    No host sync per step: ``a`` is a Python float computed from the step counter, and the update is two
    fused multi-tensor calls over the tensors on the device. T is ``pl_module.total_steps()``. The EMA is kept in
    checkpoints, so a resumed run continues it.
    """

    def __init__(self, every: int = 5, decay: float = 0.95, power: float = 3.0) -> None:
        self.every, self.decay, self.power = every, decay, power
        self._live: list[torch.Tensor] = []
        self._ema: list[torch.Tensor] | None = None
        self._total = 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._total = int(pl_module.total_steps())
        # state_dict() tensors share storage with the parameters and buffers: updating them updates the net.
        self._live = [t for t in pl_module.net.state_dict().values() if t.is_floating_point()]
        if self._ema is None:
            self._ema = [t.detach().clone() for t in self._live]
        else:  # restored from a checkpoint
            self._ema = [e.to(t.device, t.dtype) for e, t in zip(self._ema, self._live, strict=True)]

    @torch.no_grad()
    def _update(self, decay: float) -> None:
        compat.lerp_all_(self._ema, self._live, 1.0 - decay)
        compat.copy_all_(self._live, self._ema)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step  # counts this batch's optimiser step
        if step % self.every == 0:
            self._update(self.decay**self.every * (min(step, self._total) / self._total) ** self.power)
        if step >= self._total:
            self._update(1.0)  # the final copy: the weights become the EMA

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self._ema}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._ema = state_dict.get("ema")

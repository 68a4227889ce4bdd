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

:func:`fit_callbacks`: the list a training run fits with, for ``train`` and the bench alike.
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
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from downsample_lab import compat
from downsample_lab.config import plain
from downsample_lab.device import synchronize
from downsample_lab.errors import UserError

log = logging.getLogger("downsample_lab")


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
    """Saves in every checkpoint the global RNG states, the run's config and its data digest; restores the RNG
    states on resume.

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
        # the data it trains on, which a resume must read too (run.resume); computed once per process
        digest = getattr(trainer.datamodule, "digest", None)
        if digest is not None:
            checkpoint["data_digest"] = digest()

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
    loss only, and without a host sync or a tensor op per step: every step keeps its (detached) loss in a list,
    and the losses are checked only at steps where a sync happens anyway or a checkpoint is about to be
    written: at the logging steps (``trainer.log_every_n_steps``, where the logged loss is read), every
    ``checkpoint_every_n_steps`` and the last batch of an epoch (before validation and the epoch's checkpoint),
    and, for a run that stops off those steps, before its validation, at its epoch's end and when training
    ends. Lightning runs checkpoint callbacks after all others, so a checkpoint never holds weights trained on a
    non-finite loss. At most ``log_every_n_steps - 1`` steps train on garbage before the run stops. Under DDP
    the processes compare their first non-finite steps at those steps, so all of them stop at the same one.

    Args:
        checkpoint_every_n_steps: ``checkpoint.every_n_steps``; ``None`` for epoch-end checkpoints only.
        last_checkpoint: the file every checkpoint also goes to (``<run dir>/checkpoints/last.ckpt``); None
            where no checkpoint is written (the bench).
    """

    def __init__(self, checkpoint_every_n_steps: int | None, last_checkpoint: Path | None) -> None:
        self.checkpoint_every_n_steps = checkpoint_every_n_steps
        self.last_checkpoint = last_checkpoint
        # The losses since the last check (on the device) and their steps: ~1 µs a step to append, where six tensor
        # ops a step took ~60 µs of host time (docs/BENCHMARKS.md, "Host overhead per step").
        self._losses: list[torch.Tensor] = []
        self._steps: list[int] = []
        self._saved: tuple[Path, int] | None = None  # last checkpoint written, the global step it holds

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is not None:  # resumed: the checkpoint it came from is the last good one so far
            self._saved = (Path(trainer.ckpt_path), trainer.global_step)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.last_checkpoint is not None:
            self._saved = (self.last_checkpoint, trainer.global_step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        # global_step already counts this batch's optimiser step: step n is the n-th batch trained on
        step = trainer.global_step
        self._losses.append(loss.detach())
        self._steps.append(step)
        # the logging steps as Lightning counts them, so the check syncs where it does
        due = compat.is_log_step(trainer) or compat.is_last_batch(trainer)
        if due or (self.checkpoint_every_n_steps is not None and step % self.checkpoint_every_n_steps == 0):
            self._check(trainer, pl_module)

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Raise :class:`NonFiniteLossError` if a loss since the last check is not finite (on any process)."""
        if not self._losses:  # every process has the same steps, so all of them return here together
            return
        losses = torch.stack(self._losses)
        finite = torch.isfinite(losses)
        first = (~finite).int().argmax()  # the first non-finite loss since the last check (0 when none)
        first_step = torch.as_tensor(self._steps, device=losses.device)[first]
        first_step = torch.where(finite.all(), -1, first_step)
        self._losses, self._steps = [], []
        # Every process decides on the same steps, from the earliest bad step of any: all stop together (DDP).
        steps = pl_module.all_gather(first_step).reshape(-1)
        losses = pl_module.all_gather(losses[first]).reshape(-1)
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

    # A run that stops off a due step (optim.train_epochs, trainer.max_steps) has losses not checked yet: before
    # its validation, its epoch-end checkpoint, and at the end (outside a fit the lists are empty).
    on_validation_start = on_train_epoch_end = on_train_end = _check


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
        if compat.is_log_step(trainer):  # a logging step: its loss is read anyway
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
        total = trainer.estimated_stepping_batches  # every epoch's, or trainer.max_steps
        if trainer.is_global_zero and total < every:
            log.info(
                "This run has %d step%s in all, fewer than trainer.log_every_n_steps=%d: TensorBoard gets no "
                "training loss or lr curve (the epoch lines show each epoch's loss); set "
                "trainer.log_every_n_steps=%d or less for them.", total, "s"[: total != 1], every, max(1, total),
            )  # fmt: skip
        elif trainer.is_global_zero and isinstance(steps, int) and steps < every:
            log.info(
                "An epoch has %d step%s, fewer than trainer.log_every_n_steps=%d: TensorBoard gets the training "
                "loss every %d steps, not every epoch (the epoch lines show each epoch's last); set "
                "trainer.log_every_n_steps=%d%s for a point per epoch.", steps, "s"[: steps != 1], every, every,
                steps, " or less" if steps > 1 else "",
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
        of = f"/{trainer.max_epochs}" if trainer.max_epochs > 0 else ""  # -1: steps only (the bench)
        log.info("Epoch %d%s: %s", self._pending + 1, of, ", ".join(parts))
        self._pending = None


def fit_callbacks(cfg: DictConfig, checkpoints: Path | None) -> list[L.Callback]:
    """The callbacks of a training run's fit, built in one place for ``train`` and the bench's Lightning path, so
    that the bench times the steps ``train`` runs (``eval`` only tests, with none).

    Every fit: the epoch's training throughput, the lr of each parameter group at logging steps
    (``train/lr/<group>``), the stop on a non-finite loss, and the epoch lines. With ``checkpoints`` (a run's
    ``checkpoints/`` directory: ``train``) the checkpoints: the val/acc-best one first (the Trainer's
    ``checkpoint_callback``), ``last.ckpt`` at every epoch end and, with ``checkpoint.every_n_steps``, every that
    many steps (what ``resume=true`` continues from), and the run state they carry (RNG states, config).
    airbench's lookahead belongs to the recipe: the module adds it itself (``Classifier.configure_callbacks``).
    """
    last = checkpoints / "last.ckpt" if checkpoints is not None else None
    callbacks: list[L.Callback] = []
    if checkpoints is not None:
        callbacks.append(
            ModelCheckpoint(
                dirpath=checkpoints,
                filename="best-epoch{epoch:03d}-acc{val/acc:.4f}",
                auto_insert_metric_name=False,
                monitor="val/acc",
                mode="max",
            )
        )
        # last.ckpt at every epoch end (the best checkpoint's save_last=True would refresh it only when val/acc
        # improves), and every checkpoint.every_n_steps steps.
        keep_last = dict(dirpath=checkpoints, filename="last", enable_version_counter=False)
        callbacks.append(ModelCheckpoint(**keep_last, save_on_train_epoch_end=True))
        if cfg.checkpoint.every_n_steps is not None:
            callbacks.append(
                MidEpochCheckpoint(**keep_last, every_n_train_steps=cfg.checkpoint.every_n_steps)
            )
        callbacks.append(RunState(plain(cfg)))
    callbacks += [
        EpochThroughput(),
        LearningRateMonitor(logging_interval="step"),
        StopOnNonFiniteLoss(OmegaConf.select(cfg, "checkpoint.every_n_steps"), last),
        EpochSummary(),
    ]
    return callbacks

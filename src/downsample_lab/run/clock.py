"""The stopwatch of a training job (a Lightning callback) that splits its wall time into the phases of
:mod:`downsample_lab.run.times`.

Clock readings sit at phase boundaries only (epoch starts and ends, the validation loop's ends, ``fit`` and
``test``), never inside a step, and wait for the device there (:func:`downsample_lab.device.synchronize`), so
that queued GPU work is counted in the phase that queued it.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.fabric.plugins import TorchCheckpointIO

from downsample_lab.device import synchronize
from downsample_lab.run.times import PHASES


class TimedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, adding up the seconds it spends writing."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        t0 = time.perf_counter()
        super().save_checkpoint(checkpoint, path, storage_options)
        self.seconds += time.perf_counter() - t0


class JobTimes(L.Callback):
    """Wall seconds per phase of one training job (:data:`PHASES`).

    ``train`` calls :meth:`mark` around ``fit`` and ``test``; the hooks split ``fit`` into its phases. The job's
    clock starts when the object is made, or at ``t0`` (``time.perf_counter()``: the job's start,
    :func:`downsample_lab.run.job.job_started`), the time until the object is made being ``imports``.
    """

    def __init__(self, checkpoint_io: TimedCheckpointIO, t0: float | None = None) -> None:
        self._io = checkpoint_io
        self._made = time.perf_counter()
        self._t0 = self._made if t0 is None else t0
        self._seconds = dict.fromkeys(PHASES, 0.0)
        self._marks: dict[str, float] = {}
        self._since = 0.0  # start of the open sanity check or epoch
        self._val_since = 0.0  # start of the open validation pass
        self._epoch_eval = 0.0  # validation seconds inside the open epoch
        self._epoch_io = 0.0  # checkpoint seconds at the open epoch's start
        self._io_at: dict[str, float] = {}  # checkpoint seconds at the last epoch's end and at fit_end

    def mark(self, event: str) -> None:
        """Note the time of ``fit_start``, ``fit_end``, ``test_start`` or ``test_end`` (called by ``train``)."""
        self._marks[event] = time.perf_counter()
        self._io_at[event] = self._io.seconds

    def _now(self, pl_module: L.LightningModule) -> float:
        synchronize(pl_module.device)
        return time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._marks["fit_started"] = self._now(pl_module)

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._since = self._now(pl_module)

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seconds["sanity_check"] += self._now(pl_module) - self._since

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._since, self._epoch_eval, self._epoch_io = self._now(pl_module), 0.0, self._io.seconds

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed mid-epoch skips on_train_epoch_start: its epoch counts from here.
        self.on_train_epoch_start(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_since = self._now(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            seconds = self._now(pl_module) - self._val_since
            self._seconds["validation"] += seconds
            self._epoch_eval += seconds

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = self._now(pl_module)
        self._seconds["train_steps"] += (
            now - self._since - self._epoch_eval - (self._io.seconds - self._epoch_io)
        )
        self._marks["last_epoch_end"] = now
        self._io_at["last_epoch_end"] = self._io.seconds

    def seconds(self) -> dict[str, float]:
        """Seconds per phase so far, ``wall`` (the job's clock), ``fixed`` (wall minus training steps)."""
        s = dict(self._seconds)
        m, now = self._marks, time.perf_counter()
        s["checkpoints"] = self._io.seconds
        s["imports"] = self._made - self._t0
        if "fit_start" in m:
            s["start"] = m["fit_start"] - self._made
            s["fit_setup"] = m.get("fit_started", m["fit_start"]) - m["fit_start"]
        if "fit_end" in m and "last_epoch_end" in m:
            # less the last epoch's checkpoints: Lightning writes them after this callback's epoch-end hook, and
            # they count as checkpoints
            io = self._io_at["fit_end"] - self._io_at["last_epoch_end"]
            s["fit_end"] = max(0.0, m["fit_end"] - m["last_epoch_end"] - io)
        if "test_end" in m:
            s["test"] = m["test_end"] - m["test_start"]
        wall = now - self._t0
        s["other"] = max(0.0, wall - sum(v for k, v in s.items() if k != "other"))
        s["wall"] = wall
        s["fixed"] = wall - s["train_steps"]
        return {k: round(v, 3) for k, v in s.items()}

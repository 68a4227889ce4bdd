"""The bench's path (b), the project's Lightning training path, timed window by window with the raw loop's windows
interleaved.

``run_lightning`` fits the ``Classifier`` on the ``CIFAR10DataModule`` through ``engine.trainer.build_trainer``
with the TensorBoard logger and the callbacks ``train`` fits with (``engine.callbacks.fit_callbacks``, and the
recipe's lookahead, which the module adds itself), validation, its sanity check and checkpointing off,
for the :class:`Plan`'s steps. Its :class:`InterleavedTimer` callback closes a Lightning window at each plan
boundary, runs a timed window of as many raw-loop steps (``rawloop.time_raw_window``), then opens the next
Lightning window, so that a machine whose load changes slows both paths alike. Each path's windows, losses and
peak memory end up in a :class:`PathResult`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from downsample_lab.bench.machine import allocated_memory, peak_memory, reset_peak_memory
from downsample_lab.bench.rawloop import LIGHTNING_MAX_EPOCHS, RawLoop, time_raw_window
from downsample_lab.config import plain
from downsample_lab.data import CIFAR10DataModule
from downsample_lab.device import synchronize, training_device
from downsample_lab.engine.callbacks import fit_callbacks
from downsample_lab.engine.classifier import Classifier
from downsample_lab.engine.trainer import build_trainer, tensorboard_logger


@dataclass(frozen=True)
class Plan:
    """Untimed warm-up steps, then ``windows`` timed windows of ``window_steps`` steps, per path."""

    warmup_steps: int
    window_steps: int
    windows: int

    @property
    def total_steps(self) -> int:
        """Every step one path runs."""
        return self.warmup_steps + self.windows * self.window_steps

    def is_boundary(self, steps_done: int) -> bool:
        """True at the end of the warm-up and of each window."""
        after = steps_done - self.warmup_steps
        return after >= 0 and after % self.window_steps == 0


@dataclass
class PathResult:
    """What the bench measured of one path."""

    window_images_per_sec: list[float] = field(default_factory=list)
    # CPU seconds the process spent per step (all its threads), per window: the host work of a step, which a
    # GPU run waits on when its kernels are short. Unlike wall time, other processes' load hardly changes it.
    window_host_us_per_step: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # at the end of each window: a check that it trains
    peak_memory_bytes: int = 0

    @property
    def images_per_sec(self) -> float:
        """Median over the windows."""
        return statistics.median(self.window_images_per_sec)

    @property
    def host_us_per_step(self) -> float:
        """Median over the windows."""
        return statistics.median(self.window_host_us_per_step)


class InterleavedTimer(L.Callback):
    """Times the Lightning path's windows and runs a timed raw window after each (see the module docstring).

    At every plan boundary (read at ``on_train_batch_end``, after the optimiser step): sync, close the Lightning
    window, run the raw window, then open the next Lightning window. Whatever Lightning does between two
    boundaries, including the hooks after this one, falls inside a Lightning window.
    """

    def __init__(self, plan: Plan, raw: RawLoop | None, other_bytes: int = 0) -> None:
        self.plan, self.raw, self.other_bytes = plan, raw, other_bytes
        self.lightning, self.raw_result = PathResult(), PathResult()
        self._t0, self._c0, self._images = 0.0, 0.0, 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        reset_peak_memory(pl_module.device)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[1])
        step = trainer.global_step  # counts this batch's optimiser step already
        if not self.plan.is_boundary(step):
            return
        device = pl_module.device
        synchronize(device)
        now, cpu = time.perf_counter(), time.process_time()
        if step == self.plan.warmup_steps:
            self.lightning.peak_memory_bytes = peak_memory(device, self.other_bytes)
        else:
            self.lightning.window_images_per_sec.append(self._images / (now - self._t0))
            self.lightning.window_host_us_per_step.append((cpu - self._c0) / self.plan.window_steps * 1e6)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.lightning.losses.append(float(loss))
            if self.raw is not None:
                rate, host_us = time_raw_window(self.raw, self.plan.window_steps)
                self.raw_result.window_images_per_sec.append(rate)
                self.raw_result.window_host_us_per_step.append(host_us)
                self.raw_result.losses.append(float(self.raw.last_loss))
        self._images = 0
        self._t0, self._c0 = time.perf_counter(), time.process_time()


def run_lightning(
    clf: Classifier, cfg: DictConfig, out: Path, name: str, plan: Plan, raw: RawLoop | None = None
) -> tuple[PathResult, PathResult]:
    """Path (b): fit ``clf`` as ``train`` does, ``plan.total_steps`` steps without evaluation, timing its windows.

    With ``raw``, a raw window runs after each Lightning window. Returns the Lightning and the raw results (the
    raw one is empty without ``raw``; its peak memory is measured by the caller, over its own warm-up).
    """
    other_bytes = allocated_memory(training_device(cfg.trainer))  # the raw loop's model and data, on a GPU
    datamodule = CIFAR10DataModule(
        OmegaConf.to_object(cfg.data), channels_last=cfg.model.channels_last, seed=cfg.seed
    )
    trainer_cfg = OmegaConf.create(plain(cfg.trainer))
    trainer_cfg.max_epochs = LIGHTNING_MAX_EPOCHS
    trainer_cfg.max_steps = plan.total_steps
    trainer_cfg.limit_val_batches = 0  # no validation loop and no sanity check: timing excludes evaluation
    trainer_cfg.num_sanity_val_steps = 0
    trainer_cfg.enable_checkpointing = False  # train's checkpoints are written after validation
    timer = InterleavedTimer(plan, raw, other_bytes)
    trainer = build_trainer(
        trainer_cfg,
        run_dir=out,
        callbacks=[*fit_callbacks(cfg, checkpoints=None), timer],  # what train fits with, no checkpoints
        logger=tensorboard_logger(out, name),
    )
    trainer.fit(clf, datamodule=datamodule)
    if len(timer.lightning.window_images_per_sec) != plan.windows:
        raise RuntimeError(
            f"the Lightning path stopped after {trainer.global_step} of {plan.total_steps} steps"
        )
    return timer.lightning, timer.raw_result

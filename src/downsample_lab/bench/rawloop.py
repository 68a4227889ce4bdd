"""The bench's path (a): a minimal hand-written PyTorch training loop, and the timing of one window of it.

Over the in-memory uint8 training tensor: slices of a seeded permutation, batched crop/flip and normalisation,
forward and loss in the context Lightning's precision plugin gives a training step, backward, optimiser step
and LR-schedule step. It does the same work per step as the Lightning path (``bench.lightning.run_lightning``): for
the same config the two paths' losses agree step for step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from omegaconf import DictConfig, OmegaConf

from downsample_lab.data.augment import augment, normalize
from downsample_lab.data.cifar10 import data_device, epoch_batches
from downsample_lab.data.config import DataConfig
from downsample_lab.data.sources import Split
from downsample_lab.device import synchronize
from downsample_lab.engine.classifier import Classifier
from downsample_lab.optim.build import build_optimizer, training_loss
from downsample_lab.optim.lookahead import LookaheadEMA

# No epoch limit: max_steps ends the Lightning path's run; both paths build their LR schedule with it.
LIGHTNING_MAX_EPOCHS = -1


def precision_plugin(precision: str, device: torch.device) -> Precision:
    """The precision plugin a ``lightning.Trainer`` on ``device`` builds for ``precision`` (32-true or *-mixed).

    As Lightning's accelerator connector picks it, fp16 autocast on a CPU included (Lightning runs it as
    bf16-mixed, with a warning), so that the raw loop autocasts, and scales its loss, as the Lightning path does.
    """
    if precision == "32-true":
        return Precision()
    if precision == "16-mixed" and device.type == "cpu":
        precision = "bf16-mixed"
    return MixedPrecision(precision, device.type)


def limited_batches(batches: list[torch.Tensor], limit: Any) -> list[torch.Tensor]:
    """``batches`` cut to ``trainer.limit_train_batches`` as Lightning applies it."""
    if isinstance(limit, float):
        return batches[: max(1, int(len(batches) * limit))]
    if isinstance(limit, int):
        return batches[:limit]
    return batches


class RawLoop:
    """Path (a): a hand-written training loop over ``clf.net``, run a given number of steps at a time.

    The optimiser and LR schedule come from :func:`downsample_lab.optim.build.build_optimizer`, as the Lightning
    path's ``configure_optimizers`` builds them (``total_steps`` steps, ``max_epochs=-1``). The data is ``train``
    held where the data module holds it (``data.on_device``: on the GPU by default, in host memory on a CPU).
    The loop keeps its own global-RNG state, so the steps it draws are the same whether or not other work runs
    between its calls. Forward and loss run in :func:`precision_plugin`'s training-step context.
    """

    def __init__(
        self,
        clf: Classifier,
        train: Split,
        cfg: DictConfig,
        device: torch.device,
        precision: str,
        total_steps: int,
    ) -> None:
        self.device, self.cfg = device, cfg
        self.data: DataConfig = OmegaConf.to_object(cfg.data)
        self.optim = clf.optim_cfg
        self.net = clf.net.to(device).train()
        self.opt, self.sched = build_optimizer(
            self.net, clf.optim_cfg, total_steps, LIGHTNING_MAX_EPOCHS, cfg.data.batch_size
        )
        self.data_device = data_device(self.data.on_device, device)
        self.images, self.labels = train.images.to(self.data_device), train.labels.to(self.data_device)
        # Lightning's own plugin: its training-step context is what the Lightning path's training_step runs in,
        # and its GradScaler (16-mixed on a GPU) scales the loss here as it does there.
        self.precision_plugin = plugin = precision_plugin(precision, device)
        self.scaler = plugin.scaler if isinstance(plugin, MixedPrecision) else None
        self.total_steps, self.steps_done = total_steps, 0
        # The recipe's lookahead, as the Lightning path runs it (Classifier.configure_callbacks).
        self.lookahead = LookaheadEMA(self.net, total_steps) if clf.optim_cfg.lookahead else None
        self.last_loss: torch.Tensor | None = None
        self._batches = self._batch_indices()
        # The RNG state right after the seeded model build: where the Lightning path's draws start too.
        self._rng = self._get_rng()

    def _get_rng(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def _set_rng(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)

    @contextmanager
    def _own_rng(self) -> Iterator[None]:
        outer = self._get_rng()
        self._set_rng(self._rng)
        try:
            yield
        finally:
            self._rng = self._get_rng()
            self._set_rng(outer)

    def _batch_indices(self) -> Iterator[tuple[int, torch.Tensor]]:
        c, epoch = self.cfg, 0
        while True:
            batches = epoch_batches(len(self.labels), self.data.batch_size, c.seed + epoch, self.data_device)
            for idx in limited_batches(batches, c.trainer.limit_train_batches):
                yield epoch, idx
            epoch += 1

    def run(self, steps: int) -> int:
        """Train ``steps`` more steps (without a final device sync); returns the number of images trained on."""
        if self.steps_done + steps > self.total_steps:
            raise ValueError(f"the schedule has {self.total_steps} steps; {self.steps_done} are done")
        # Config values read once: an OmegaConf attribute read costs ~9 µs, which the loop would pay every step.
        clip, channels_last = self.cfg.trainer.gradient_clip_val, self.cfg.model.channels_last
        images = 0
        with self._own_rng():
            for done in range(steps):
                epoch, idx = next(self._batches)
                x = self.images.index_select(0, idx).to(self.device, non_blocking=True)
                y = self.labels.index_select(0, idx).to(self.device, non_blocking=True)
                x = normalize(augment(x, self.data, epoch), channels_last)
                with self.precision_plugin.train_step_context():
                    loss, _ = training_loss(self.net(x), y, self.optim, len(y))
                self.opt.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    if clip:
                        self.scaler.unscale_(self.opt)
                        torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
                    self.scaler.step(self.opt)
                    self.scaler.update()
                else:
                    loss.backward()
                    if clip:
                        torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
                    self.opt.step()
                self.sched.step()
                if self.lookahead is not None:
                    self.lookahead.step(self.steps_done + done + 1)
                images += len(y)
        self.steps_done += steps
        self.last_loss = loss.detach()
        return images


def time_raw_window(raw: RawLoop, steps: int) -> tuple[float, float]:
    """Images per second and host CPU µs per step of ``steps`` raw steps, from a device sync to a device sync."""
    synchronize(raw.device)
    t0, c0 = time.perf_counter(), time.process_time()
    images = raw.run(steps)
    synchronize(raw.device)
    return images / (time.perf_counter() - t0), (time.process_time() - c0) / steps * 1e6

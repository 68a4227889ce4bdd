"""The training step never waits for the device: no host-device sync and no tensor built from Python values.

A GPU run is host-bound when a step reads a value back (``.item()``, ``bool(t)``, ...) or copies one in
(``torch.tensor(3.0, device=...)``): the host stops until the queued kernels finish. Such calls are the same calls
on a CPU, so they are counted here, without a GPU, through the real training entry point: a
``TorchFunctionMode`` sees every torch call made during a window of training steps between two logging steps,
including Lightning's own work, the callbacks, the data loader and the batch augmentation.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch.overrides import TorchFunctionMode

import downsample_lab.engine.trainer as trainer_module
from downsample_lab.train import train

from .conftest import TINY, compose_config

Tensor = torch.Tensor

# Calls that read a device value on the host, copy a Python value to the device, or have a data-dependent
# output shape (the host must learn the size): each one stalls a GPU's queue.
SYNCING = {
    Tensor.item, Tensor.__bool__, Tensor.__float__, Tensor.__int__, Tensor.__index__, Tensor.tolist,
    Tensor.numpy, Tensor.cpu, torch.tensor, torch.as_tensor, torch.unique, Tensor.unique,
    torch.unique_consecutive, torch.nonzero, Tensor.nonzero, torch.masked_select, Tensor.masked_select,
    torch.argwhere, torch.bincount, Tensor.bincount,
}  # fmt: skip

LOG_EVERY = 10


class SyncCounter(TorchFunctionMode):
    """Records every syncing call (see ``SYNCING``) made while it is active, with where it was made."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in SYNCING:
            where = "".join(traceback.format_stack(limit=8)[:-1])
            self.calls.append(f"{getattr(func, '__qualname__', func)}\n{where}")
        return func(*args, **(kwargs or {}))


class CountWindow(L.Callback):
    """Counts syncing calls from the start of step ``first`` to the end of step ``last`` (global steps).

    Both are chosen between two logging steps, so that nothing in the window is due to be logged.
    """

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.counter = SyncCounter()
        self.steps = 0
        self.active = self.active_eval = False
        self.eval_batches: dict[str, int] = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int
    ) -> None:
        if trainer.global_step == self.first:
            self.counter.__enter__()
            self.active = True
        if self.active:
            self.steps += 1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.active and trainer.global_step == self.last + 1:  # counts this batch's step already
            self.counter.__exit__(None, None, None)
            self.active = False

    # Validation and test: from the second batch's start to the end of the one before the last (the first and
    # the last batch of an evaluation may set up or finish the epoch's metrics).
    def _eval_start(self, trainer: L.Trainer, stage: str, batch_idx: int) -> None:
        if batch_idx == 1 and not trainer.sanity_checking:
            self.counter.__enter__()
            self.eval_batches[stage] = self.eval_batches.get(stage, 0)
            self.active_eval = True
        if self.active_eval:
            self.eval_batches[stage] += 1

    def _eval_end(self, trainer: L.Trainer, stage: str, batch_idx: int) -> None:
        loader = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
        if self.active_eval and batch_idx == len(loader) - 2:
            self.counter.__exit__(None, None, None)
            self.active_eval = False

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._eval_start(trainer, "val", batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._eval_end(trainer, "val", batch_idx)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._eval_start(trainer, "test", batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._eval_end(trainer, "test", batch_idx)


@pytest.fixture
def counted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Train through ``downsample_lab.train.train`` with a counting window (steps 11 to 18 of 30)."""

    def run(*overrides: str) -> CountWindow:
        # steps 0-based: Lightning logs after steps 9, 19, 29; steps 11..18 lie strictly between two of them
        window = CountWindow(first=LOG_EVERY + 1, last=2 * LOG_EVERY - 2)
        build = trainer_module.build_trainer

        def build_with_window(*args: Any, callbacks: list[L.Callback], **kwargs: Any) -> L.Trainer:
            return build(*args, callbacks=[window, *callbacks], **kwargs)

        monkeypatch.setattr(trainer_module, "build_trainer", build_with_window)
        cfg = compose_config(
            "train",
            [
                *TINY,
                "data.synthetic_train_size=544",  # 480 training images: 30 steps of 16
                "data.batch_size=16",
                "data.eval_batch_size=16",  # 4 validation and 7 test batches
                f"trainer.log_every_n_steps={LOG_EVERY}",
                "trainer.enable_progress_bar=true",
                f"data.cache_dir={tmp_path / 'cache'}",
                *overrides,
            ],
            run_dir=tmp_path / "run",
        )
        train(cfg)
        assert window.steps == window.last - window.first + 1, "the window did not cover the steps it should"
        assert window.eval_batches == {"val": 2, "test": 5}, window.eval_batches
        return window

    return run


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_training_and_evaluation_steps_make_no_syncing_call(counted_run, precision, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)  # the bar, as in a terminal
    window = counted_run(f"trainer.precision={precision}")
    assert window.counter.calls == [], f"{len(window.counter.calls)} syncing calls; the first:\n" + (
        window.counter.calls[0] if window.counter.calls else ""
    )


def test_the_counter_sees_a_syncing_call_in_the_training_step(counted_run, monkeypatch):
    # The test above can fail: a training step that reads its loss on the host is caught.
    from downsample_lab.engine.classifier import Classifier

    step = Classifier.training_step

    def reading_step(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        loss.item()
        return loss

    monkeypatch.setattr(Classifier, "training_step", reading_step)
    window = counted_run("trainer.precision=32-true")
    assert len(window.counter.calls) == window.steps
    assert all(
        call.startswith("TensorBase.item") or "item" in call.split("\n")[0] for call in window.counter.calls
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_steps_do_not_synchronize(tmp_path, monkeypatch):
    """On a GPU, torch's sync debug mode raises at the first synchronizing call inside the window."""

    class ErrorOnSync(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, i):
            if trainer.global_step == LOG_EVERY + 1:
                torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, trainer, pl_module, *args):
            if trainer.global_step == 2 * LOG_EVERY - 1:
                torch.cuda.set_sync_debug_mode("default")

    build = trainer_module.build_trainer
    monkeypatch.setattr(
        trainer_module,
        "build_trainer",
        lambda *a, callbacks, **k: build(*a, callbacks=[ErrorOnSync(), *callbacks], **k),
    )
    cfg = compose_config(
        "train",
        [*TINY, "trainer=gpu", "data.synthetic_train_size=544", "data.batch_size=16",
         f"trainer.log_every_n_steps={LOG_EVERY}", f"data.cache_dir={tmp_path / 'cache'}"],
        run_dir=tmp_path / "run",
    )  # fmt: skip
    try:
        train(cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")

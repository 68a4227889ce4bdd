"""The LightningModule: wraps the CNN with the loss, the optimiser and schedule, and the metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from downsample_lab import compat
from downsample_lab.config import plain, typed
from downsample_lab.data.augment import normalize
from downsample_lab.engine.testtime import ShiftCurves, shift_agreement, tta_logits
from downsample_lab.models.config import ModelConfig
from downsample_lab.models.factory import build_model
from downsample_lab.models.fast import WHITEN_IMAGES
from downsample_lab.models.summary import count_params, forward_flops
from downsample_lab.optim.build import build_optimizer, training_loss
from downsample_lab.optim.config import OptimConfig
from downsample_lab.optim.lookahead import Lookahead


class Classifier(L.LightningModule):
    """CIFAR-10 classifier around the network of the ``model`` group (:func:`~downsample_lab.models.factory.build_model`).

    Args:
        model: the ``model`` config group (a :class:`~downsample_lab.models.config.ModelConfig`, or the plain dict a
            checkpoint saved: checkpoints keep plain values, so ``eval`` rebuilds the model from them).
        optim: the ``optim`` config group (:class:`~downsample_lab.optim.config.OptimConfig`, or its plain dict).
        max_shift: ``eval.max_shift``, the largest shift (pixels) of the test-time shift-consistency check and of
            the shift-robustness curves; 0 turns both off.
        tta_level: ``eval.tta_level``: 0, or log ``test/acc_tta`` with test-time augmentation 1 or 2 (:func:`~downsample_lab.engine.testtime.tta_logits`).
        shift_images: ``eval.shift_images``: about this many test images get the shift-robustness curves
            (:class:`~downsample_lab.engine.testtime.ShiftCurves`, shifts 0…``max_shift``); 0 turns them off.
        batch_size: ``data.batch_size``, the global batch; needed by ``optim.decoupled`` (weight decay per 1024
            examples).

    Logs ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/acc_best``,
    ``test/loss``, ``test/acc``, ``test/predicted_classes``, ``test/acc_tta``, ``test/consistency``,
    ``shift/<mode>_<direction>/<acc|consistency>``
    (step: the shift in pixels), ``model/params`` and ``model/flops_per_image``. Accuracy and loss are reduced
    over all processes by torchmetrics, so under DDP they cover the whole validation and test sets.
    """

    def __init__(
        self,
        model: ModelConfig | Mapping[str, Any],
        optim: OptimConfig | Mapping[str, Any],
        max_shift: int,
        tta_level: int,
        batch_size: int,
        shift_images: int = 0,  # 0 for checkpoints written before eval.shift_images existed
    ) -> None:
        super().__init__()
        self.model_cfg, self.optim_cfg = (
            typed(ModelConfig, model, "model"),
            typed(OptimConfig, optim, "optim"),
        )
        self.save_hyperparameters(
            {"model": plain(self.model_cfg), "optim": plain(self.optim_cfg), "max_shift": max_shift,
             "tta_level": tta_level, "batch_size": batch_size, "shift_images": shift_images}
        )  # fmt: skip
        self.net = build_model(self.model_cfg)
        self.n_params = count_params(self.net)
        self.flops_per_image = forward_flops(self.net)
        if self.model_cfg.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if self.model_cfg.compile:
            self.net.compile()  # in place: state_dict keys stay those of the plain model
        # No argument checks and no NaN checks inside the metrics: torchmetrics' checks read values on the host
        # (``unique`` of the targets, ``isnan(...).any()``), a GPU sync on every step. The inputs are ours.
        metrics = {}
        for stage in ("val", "test", "test_tta"):
            metrics[f"{stage}_acc"] = MulticlassAccuracy(num_classes=10, average="micro", validate_args=False)
        for stage in ("val", "test"):
            metrics[f"{stage}_loss"] = MeanMetric(nan_strategy="disable")
        self.metrics = torch.nn.ModuleDict(metrics)
        # The epoch's training accuracy as two counters on the device: a torchmetrics update costs ~80 µs of host
        # time per step (timeit, batch 8), these two in-place ops ~13 µs; the training step is the hot loop.
        # Buffers, so checkpoints keep them and a resumed run continues the epoch's counts.
        self.register_buffer("train_correct", torch.zeros((), dtype=torch.long))
        self.register_buffer("train_seen", torch.zeros((), dtype=torch.long))
        self.val_acc_best = MaxMetric(nan_strategy="disable")
        # Kept in checkpoints (torchmetrics leaves metric states out by default), so a resumed run continues the
        # best validation accuracy where the interrupted run left it.
        self.val_acc_best.persistent(True)
        self.test_consistency = MeanMetric(nan_strategy="disable")
        # Per class: how often the tested model predicts it on the test set. A collapsed model predicts one class
        # (the report leaves such runs out: downsample_lab.report.read.degenerate_reason). A scatter-add on the
        # device: torchmetrics' stat scores count with bincount, which reads its input's size on the host (a sync).
        self.register_buffer("test_predicted", torch.zeros(10, dtype=torch.long), persistent=False)
        self.max_shift = max_shift
        self.tta_level = tta_level
        self.shift_images = shift_images
        self.shift_curves: ShiftCurves | None = (
            None  # built in on_test_start, when the test set's size is known
        )
        self._total_steps: int | None = None  # set by configure_optimizers (optim.train_epochs)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets ``_current_fx_name`` around every hook call, about 40 times a training step, and
        # nn.Module.__setattr__ checks each value against parameters, buffers and submodules first: 1.1 µs a call
        # against 0.17 µs here (timeit), ~40 µs of host time per step. A plain string needs none of that.
        if name == compat.HOOK_NAME_ATTR:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning calls this before it loads the weights: a checkpoint of an older version gets today's keys.
        upgrade_state_dict(checkpoint["state_dict"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of normalised images."""
        return self.net(x)

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        # Sync-free: metrics are updated on the device and logged at epoch ends (``on_*_epoch_end``); nothing
        # here reads a value on the host or builds a tensor from a Python number.
        images, labels = batch
        logits = self(images)
        self.metrics[f"{stage}_acc"].update(logits, labels)
        # per image: no weight built from len(labels)
        self.metrics[f"{stage}_loss"].update(F.cross_entropy(logits, labels, reduction="none"))
        return logits

    def _is_log_step(self) -> bool:
        # The steps at which Lightning hands logged values to the logger (``trainer.log_every_n_steps``; its
        # check runs after this step with the same counter). Per-step values are logged only then: every value
        # logged is read on the host when it is written.
        return compat.is_log_step(self.trainer)

    def _is_short_epochs_last_step(self, batch_idx: int) -> bool:
        # An epoch with fewer steps than the logging interval: its last step's loss too, for the epoch's console
        # line (downsample_lab.engine.callbacks.EpochSummary); TensorBoard still gets the logging steps' only.
        steps = self.trainer.num_training_batches
        return isinstance(steps, int) and steps < self.trainer.log_every_n_steps and batch_idx == steps - 1

    def setup(self, stage: str) -> None:
        # model=fast: the whitening stem comes from the training images' patch covariance (the first 5,000
        # training images, as airbench). A resumed run gets it from its checkpoint.
        init = getattr(self.net, "init_whitening", None)
        if stage == "fit" and init is not None and self.trainer.ckpt_path is None:
            images = self.trainer.datamodule.train_set.images[:WHITEN_IMAGES]
            init(normalize(images.to(self.device)))

    def on_fit_start(self) -> None:
        # Model cost as scalars, so TensorBoard's HParams tab and the report can show them beside accuracy.
        if self.logger is not None:
            self.logger.log_metrics(
                {"model/params": self.n_params, "model/flops_per_image": self.flops_per_image}, 0
            )

    def on_train_start(self) -> None:
        # The sanity check fed val metrics; the best-so-far must start from real epochs only (a resumed run's,
        # from the checkpoint's).
        if self.trainer.ckpt_path is None:
            self.val_acc_best.reset()

    def on_train_epoch_start(self) -> None:
        # Lightning resets the epoch's accuracy only after the epoch-end checkpoint is written, so a run resumed
        # from that checkpoint would carry it into the next epoch. (One resumed mid-epoch skips this hook and
        # keeps the partial counts it restored.)
        self.train_correct.zero_()
        self.train_seen.zero_()
        epochs = self.model_cfg.whiten_bias_epochs
        if epochs is not None:  # model=fast: the whitening bias trains for the first epochs only
            self.net.whiten.bias.requires_grad_(self.current_epoch < epochs)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        # in place (``+=`` would set the buffer again through nn.Module.__setattr__'s checks, ~2 µs each)
        self.train_correct.add_((logits.detach().argmax(dim=1) == labels).sum())
        self.train_seen.add_(len(labels))
        global_batch = len(labels) * self.trainer.world_size
        loss, mean = training_loss(logits, labels, self.optim_cfg, global_batch)
        log_step = self._is_log_step()
        if log_step or self._is_short_epochs_last_step(batch_idx):
            self._log_train_loss(mean.detach(), to_logger=log_step)
        return loss

    def _log_train_loss(self, mean: torch.Tensor, to_logger: bool) -> None:
        # ``train/loss`` of this step, into the metrics callbacks read (the epoch line, the bar, the run's final
        # metrics) and, at a logging step, to the logger, at the step Lightning gives the lr of the same step
        # (train/lr/<group>, Lightning's LearningRateMonitor). Not ``self.log``: for one scalar a step it costs
        # ~0.6 ms of host time per call (its result collection moves the metric's state with
        # ``apply_to_collection``), then ~0.5 ms in the logger connector (the value read, the event file
        # flushed) and ~20 µs at every step after (its step metrics collected): ~0.15 ms a step at a logging
        # interval of 10, a fifth of Lightning's host overhead in the bench's overhead mode (docs/BENCHMARKS.md,
        # "Host overhead per step"). The event file is flushed by Lightning's epoch-end logging and every
        # ``flush_secs`` by TensorBoard's writer.
        compat.set_callback_metric(self.trainer, "train/loss", mean)
        if to_logger and self.logger is not None:
            self.logger.log_metrics({"train/loss": mean}, step=compat.logger_step(self.trainer))

    def on_train_epoch_end(self) -> None:
        # every process trains on an equal share of each batch: the mean of the processes' accuracies is the global one
        acc = self.train_correct / self.train_seen.clamp(min=1)
        self.log("train/acc", acc, on_step=False, on_epoch=True, sync_dist=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # optim.train_epochs (e.g. 9.9): stop inside the last epoch; Lightning then validates these weights.
        if self._total_steps is not None and self.trainer.global_step >= self._total_steps:
            self.trainer.should_stop = True

    def total_steps(self) -> int:
        """Optimiser steps of the whole run: ``optim.train_epochs`` (rounded up) or ``trainer.max_epochs`` epochs."""
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = self.optim_cfg.train_epochs
        if epochs is None:
            return total
        return max(1, min(total, math.ceil(epochs * self.trainer.num_training_batches)))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_eval_metrics("val")
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(self.metrics["val_acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

    def _log_eval_metrics(self, stage: str) -> None:
        # Metric objects: Lightning computes them (reduced over all processes) and resets them after the epoch.
        self.log(f"{stage}/acc", self.metrics[f"{stage}_acc"], on_step=False, on_epoch=True)
        self.log(f"{stage}/loss", self.metrics[f"{stage}_loss"], on_step=False, on_epoch=True)

    def on_test_start(self) -> None:
        self.test_predicted.zero_()
        # The same shifts for every run and arm (per process), so consistency is comparable across runs.
        self._shift_generator = torch.Generator(device=self.device).manual_seed(1234 + self.global_rank)
        self.shift_curves = None
        if self.max_shift > 0 and self.shift_images > 0:
            n_test = len(self.trainer.datamodule.test_set)
            subset = torch.Generator(device=self.device).manual_seed(4321 + self.global_rank)
            self.shift_curves = ShiftCurves(self.max_shift, self.shift_images / n_test, subset).to(
                self.device
            )

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        logits = self._eval_step(batch, "test")
        preds = logits.argmax(dim=1)
        self.test_predicted.scatter_add_(0, preds, torch.ones_like(preds))
        if self.tta_level > 0:
            self.metrics["test_tta_acc"].update(tta_logits(self, batch[0], self.tta_level, logits), batch[1])
        if self.max_shift > 0:
            agree = shift_agreement(self, batch[0], self.max_shift, self._shift_generator)
            self.test_consistency.update(agree.float())
        if self.shift_curves is not None:
            self.shift_curves.update(self, batch[0], batch[1], logits)

    def on_test_epoch_end(self) -> None:
        self._log_eval_metrics("test")
        counts = self.trainer.strategy.reduce(self.test_predicted, reduce_op="sum")  # over all processes
        self.log("test/predicted_classes", (counts > 0).sum().float())
        if self.tta_level > 0:
            self.log("test/acc_tta", self.metrics["test_tta_acc"], on_step=False, on_epoch=True)
        if self.max_shift > 0:
            self.log("test/consistency", self.test_consistency, on_step=False, on_epoch=True)
        if self.shift_curves is not None:
            curves = self.shift_curves.compute()  # reduced over all processes
            if self.logger is not None:  # one point per shift: the step is the shift in pixels
                for shift in range(self.max_shift + 1):
                    self.logger.log_metrics(
                        {tag: values[shift] for tag, values in curves.items()}, step=shift
                    )

    def configure_callbacks(self) -> list[L.Callback]:
        """The recipe's own callbacks, on every Trainer that fits this module (``train`` and the bench): airbench's
        lookahead where ``optim.lookahead`` is set."""
        return [Lookahead()] if self.optim_cfg.lookahead else []

    def configure_optimizers(self) -> dict[str, Any]:
        """The optimiser and lr schedule of the ``optim`` group over :meth:`total_steps` steps
        (:func:`downsample_lab.optim.build.build_optimizer`)."""
        total = self.total_steps()
        self._total_steps = total if self.optim_cfg.train_epochs is not None else None
        opt, sched = build_optimizer(
            self.net, self.optim_cfg, total, self.trainer.max_epochs, self.hparams.batch_size
        )
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "interval": "step", "name": "train/lr"},
        }


_OLD_TRAIN_ACC = (
    "metrics.train_acc."  # torchmetrics' MulticlassAccuracy states (tp, fp, tn, fn), until 2026-12
)


def upgrade_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """A Classifier's state dict as today's code expects it, from one of any earlier version (in place).

    The training accuracy was a torchmetrics metric (``metrics.train_acc.tp/fp/tn/fn``); it is two counters now:
    micro accuracy is tp / (tp + fn).
    """
    if f"{_OLD_TRAIN_ACC}tp" in state:
        tp, fn = state[f"{_OLD_TRAIN_ACC}tp"], state[f"{_OLD_TRAIN_ACC}fn"]
        state["train_correct"] = tp.sum().long()
        state["train_seen"] = (tp + fn).sum().long()
    for key in [k for k in state if k.startswith(_OLD_TRAIN_ACC)]:
        del state[key]
    return state

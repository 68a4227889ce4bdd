"""The optimiser, its learning-rate schedule and the training loss, from the ``optim`` config group: pure
functions that the LightningModule (``Classifier``) and the bench's raw loop both call.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from downsample_lab.optim.config import OptimConfig

KILO = 1024  # airbench's unit: lr and weight decay are given per 1024 examples
TRIANGLE_START = 0.2  # the triangular schedule starts at this fraction of the peak lr
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def training_loss(
    logits: torch.Tensor, labels: torch.Tensor, cfg: OptimConfig, global_batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss to backpropagate, and the mean cross-entropy (what ``train/loss`` shows), of a training batch.

    Cross-entropy with ``optim.label_smoothing``; with ``optim.loss_reduction=sum`` (airbench's summed loss)
    times ``global_batch``: under DDP gradients are averaged over the processes, so the global batch, not the
    local one, makes them the sum over the global batch.
    """
    mean = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
    return (mean * global_batch if cfg.loss_reduction == "sum" else mean), mean


def param_groups(net: nn.Module, cfg: OptimConfig, batch_size: int | None) -> list[dict[str, Any]]:
    """The parameter groups: weight decay on conv and linear weights only (``weights``), not on BatchNorm or
    biases (``norms_biases``); with ``optim.decoupled``, airbench94's parametrisation instead (``bn_biases``,
    ``others``). The names tag each group's lr in TensorBoard (``train/lr/<name>``).

    Decoupled: ``optim.lr`` and ``optim.weight_decay`` are per 1024 examples. With Nesterov momentum m, constant
    gradients make the step 1 + 1/(1-m) times the lr; dividing by 1024·(1 + 1/(1-m)) makes the step size
    independent of the momentum, and the decay (``lr × weight_decay`` in PyTorch's SGD) independent of the lr:
    every trainable parameter decays by weight_decay × batch / (1024·(1 + 1/(1-m))) per step (times the
    schedule's factor). BatchNorm biases get ``optim.bias_lr_scale`` × the lr, with the same decay. Frozen
    parameters (the whitening filters, BatchNorm weights) are left out.
    """
    if not cfg.decoupled:
        decay = [p for p in net.parameters() if p.ndim > 1]
        no_decay = [p for p in net.parameters() if p.ndim <= 1]
        return [
            {"name": "weights", "params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
            {"name": "norms_biases", "params": no_decay, "weight_decay": 0.0, "lr": cfg.lr},
        ]
    if batch_size is None:
        raise ValueError("optim.decoupled needs the batch size")
    scale = KILO * (1 + 1 / (1 - cfg.momentum))
    lr = cfg.lr / scale
    decay = cfg.weight_decay * batch_size / scale
    bn_biases = {id(m.bias) for m in net.modules() if isinstance(m, BATCH_NORMS) and m.bias is not None}
    trainable = [p for p in net.parameters() if p.requires_grad]
    biases = [p for p in trainable if id(p) in bn_biases]
    others = [p for p in trainable if id(p) not in bn_biases]
    bias_lr = lr * cfg.bias_lr_scale
    return [
        {"name": "bn_biases", "params": biases, "lr": bias_lr, "weight_decay": decay / bias_lr},
        {"name": "others", "params": others, "lr": lr, "weight_decay": decay / lr},
    ]


def build_optimizer(
    net: nn.Module, cfg: OptimConfig, total_steps: int, max_epochs: int, batch_size: int | None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD (Nesterov) or AdamW over :func:`param_groups`, and the lr schedule over ``total_steps`` steps.

    ``max_epochs`` places the ``step`` schedule's milestones (``total_steps // max_epochs`` steps per epoch; 1 or
    less: the whole run is one epoch); ``batch_size`` is the global batch (``optim.decoupled``).
    """
    groups = param_groups(net, cfg, batch_size)
    if cfg.name == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    total = max(1, total_steps)
    warmup = max(1, int(cfg.warmup * total))
    if cfg.schedule == "onecycle":
        # Linear up to lr over the warm-up, linear down to ~0; momentum left as configured. At least two warm-up
        # steps: OneCycleLR divides by zero when the warm-up is exactly one step (e.g. 0.2 of 5 steps).
        pct_start = min(max(cfg.warmup, 2 / total), 0.999)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in groups], total_steps=total, pct_start=pct_start,
            anneal_strategy="linear", cycle_momentum=False, div_factor=25.0, final_div_factor=1e3,
        )  # fmt: skip
    elif cfg.schedule == "cosine":

        def lr_lambda(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    elif cfg.schedule == "step":
        # The paper recipes' "divide by 10 at epochs ...", in optimiser steps.
        per_epoch = max(1, total // max(1, max_epochs))
        milestones = [m * per_epoch for m in cfg.milestones]
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg.gamma)
    elif cfg.schedule == "triangular":
        # airbench94: np.interp over steps [0, warmup·T, T] of the factors [0.2, 1, 0]
        peak = int(cfg.warmup * total)

        def lr_lambda(step: int) -> float:
            return float(np.interp(step, [0, peak, total], [TRIANGLE_START, 1.0, 0.0]))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    else:
        sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    return opt, sched

"""The ``optim`` config group: its schema (``configs/optim/*.yaml`` give the values) and value rules."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from downsample_lab.choice import choices
from downsample_lab.errors import check_value

OptimizerName = choices("OptimizerName", ("sgd", "adamw"), __name__)
Schedule = choices("Schedule", ("onecycle", "cosine", "step", "constant", "triangular"), __name__)
LossReduction = choices("LossReduction", ("mean", "sum"), __name__)


@dataclass
class OptimConfig:
    name: OptimizerName = MISSING
    """`sgd` (`optim=sgd`) or `adamw` (`optim=adamw` also sets its lr, decay, schedule)"""
    lr: float = MISSING
    """peak learning rate (follows the device, with the batch)"""
    momentum: float = MISSING
    """SGD momentum"""
    nesterov: bool = MISSING
    """SGD Nesterov momentum"""
    betas: list[float] = MISSING
    """AdamW betas"""
    weight_decay: float = MISSING
    """on conv and linear weights; BatchNorm and biases are not decayed"""
    label_smoothing: float = MISSING
    """cross-entropy label smoothing (training loss only)"""
    schedule: Schedule = MISSING
    """`onecycle` (linear up, linear down), `cosine` (linear warm-up, cosine), `step`, `constant`,
    `triangular` (airbench: ×0.2 → ×1 → 0, linear)
    """
    warmup: float = MISSING
    """`onecycle`, `cosine`, `triangular`: fraction of all steps spent warming up"""
    milestones: list[int] = MISSING
    """`step`: epochs after which the lr is multiplied by `optim.gamma`"""
    gamma: float = MISSING
    """`step`: the factor"""
    decoupled: bool = MISSING
    """sgd: airbench's parametrisation: `optim.lr` and `optim.weight_decay` per 1024 examples (lr / (1024·(1
    + 1/(1−momentum))), decay × batch / the same), every trainable parameter decayed
    """
    bias_lr_scale: float = MISSING
    """lr factor of the BatchNorm biases (needs `optim.decoupled`; airbench: 64)"""
    loss_reduction: LossReduction = MISSING
    """`mean` or `sum` over the batch (airbench: sum; the logged `train/loss` is the mean either way)"""
    lookahead: bool = MISSING
    """airbench's lookahead EMA of the weights, every 5 steps (`optim.lookahead.Lookahead`)"""
    train_epochs: float | None = MISSING
    """epochs, possibly fractional (9.9: the last epoch stops at 90% of its steps; at most
    `trainer.max_epochs`); `null` = `trainer.max_epochs`
    """


def check_optim(o: DictConfig) -> None:
    """The value rules of the ``optim`` group (merged into :class:`OptimConfig`); raise ConfigError."""
    check_value(o.lr > 0, "optim.lr", o.lr, "use a positive learning rate")
    check_value(0 <= o.momentum < 1, "optim.momentum", o.momentum, "use a value in [0, 1)")
    check_value(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", list(o.betas),
                "give two values in [0, 1), e.g. [0.9,0.999]")  # fmt: skip
    check_value(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "use 0 or a positive value")
    check_value(
        0 <= o.label_smoothing < 1, "optim.label_smoothing", o.label_smoothing, "use a value in [0, 1)"
    )
    check_value(0 <= o.warmup < 1, "optim.warmup", o.warmup, "use a fraction of the training steps in [0, 1)")
    ms = list(o.milestones)
    check_value(all(m > 0 for m in ms) and ms == sorted(ms), "optim.milestones", ms,
                "give increasing epochs at which the step schedule multiplies the lr by optim.gamma")  # fmt: skip
    check_value(0 < o.gamma <= 1, "optim.gamma", o.gamma, "use a factor in (0, 1]")
    check_value(
        not o.nesterov or o.momentum > 0, "optim.nesterov", o.nesterov, "Nesterov needs optim.momentum > 0"
    )
    check_value(
        o.bias_lr_scale > 0, "optim.bias_lr_scale", o.bias_lr_scale, "use a positive factor (1 = off)"
    )
    check_value(o.bias_lr_scale == 1 or o.decoupled, "optim.bias_lr_scale", o.bias_lr_scale,
                "a separate lr for BatchNorm biases needs optim.decoupled=true (or use 1)")  # fmt: skip
    check_value(not o.decoupled or o.name == "sgd", "optim.decoupled", o.decoupled,
                "the decoupled (airbench) parametrisation is for optim.name=sgd")  # fmt: skip
    check_value(o.train_epochs is None or o.train_epochs > 0, "optim.train_epochs", o.train_epochs,
                "use null (trainer.max_epochs) or a positive, possibly fractional, number of epochs")  # fmt: skip

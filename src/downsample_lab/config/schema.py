"""The config schema: every key a user can set and its type; the typed objects the code is given.

The YAML files under ``configs/`` hold the values (one visible place for every default); the dataclasses hold
the types, a key with a fixed set of values as a :class:`~downsample_lab.choice.Choice`. Each domain owns its
group (:class:`~downsample_lab.models.config.ModelConfig`, :class:`~downsample_lab.data.config.DataConfig`,
:class:`~downsample_lab.optim.config.OptimConfig`); this module holds the groups of the tools (``trainer``,
``eval``, ``checkpoint``, ``bench``) and composes one root schema per task. The
descriptions of the keys are in :mod:`.keys`. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from downsample_lab.choice import choices
from downsample_lab.data.config import DataConfig
from downsample_lab.models.config import Downsample, ModelConfig
from downsample_lab.optim.config import OptimConfig


def config_dir() -> Path:
    """Where the YAML configs live: inside the package for a wheel install, ``./configs`` for an editable one."""
    packaged = Path(__file__).parents[1] / "configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "configs"


Accelerator = choices("Accelerator", ("auto", "cpu", "gpu", "cuda", "mps"), __name__)
Strategy = choices("Strategy", ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"), __name__)
Precision = choices(
    "Precision", ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"), __name__
)
TestWeights = choices("TestWeights", ("auto", "best", "final"), __name__)


@dataclass
class TrainerConfig:
    """Passed to ``lightning.Trainer`` as keyword arguments (``precision: auto`` is resolved first)."""

    accelerator: Accelerator = MISSING
    """`auto` (a CUDA GPU if there is one, else the CPU), `cpu`, `gpu`, ...; `trainer=cpu`, `trainer=gpu`,
    `trainer=ddp` set it
    """
    devices: Any = MISSING  # an int, a list of device indices, or "auto"
    """devices per node; `-1` = all"""
    num_nodes: int = MISSING
    """nodes"""
    strategy: Strategy = MISSING
    """`auto`, `ddp`, `ddp_spawn`, `ddp_find_unused_parameters_true` (DDP with `model=fast`, whose whitening
    bias stops training)
    """
    precision: Precision = MISSING
    """`auto` picks `bf16-mixed` where the hardware runs bf16 natively (GPUs, CPUs with AVX512-BF16/AMX),
    else `32-true`, and logs the choice; or any Lightning precision
    """
    max_epochs: int = MISSING
    """epochs"""
    deterministic: bool = MISSING
    """deterministic algorithms only"""
    log_every_n_steps: int = MISSING
    """how often step metrics are logged"""
    check_val_every_n_epoch: int = MISSING
    """validation interval"""
    num_sanity_val_steps: int = MISSING
    """validation batches Lightning runs before the first training step (to catch a broken validation step
    early; Lightning's default is 2); `-1` = all
    """
    fast_dev_run: Any = MISSING  # bool or a number of batches
    """one batch of each stage and no checkpoints: a smoke test (the run's log and status are still written)"""
    limit_train_batches: Any = MISSING  # null, a fraction (float) or a number of batches (int)
    """a fraction or a number of batches"""
    limit_val_batches: Any = MISSING
    """a fraction or a number of batches"""
    limit_test_batches: Any = MISSING
    """a fraction or a number of batches"""
    gradient_clip_val: float | None = MISSING
    """gradient-norm clipping"""
    enable_progress_bar: bool = MISSING
    """a progress bar when stderr is a terminal (none when redirected); redrawn every
    `trainer.log_every_n_steps` steps with the loss of the last logging step
    """


@dataclass
class EvalOptions:
    max_shift: int = MISSING
    """shift consistency and the shift-robustness curves: largest shift in pixels; `0` turns both off"""
    shift_images: int = MISSING
    """shift-robustness curves on a fixed random subset of about this many test images; `0` turns them off"""


@dataclass
class TrainEvalOptions(EvalOptions):
    tta_level: int = MISSING
    """`test/acc_tta` with test-time augmentation: `1` mirror, `2` mirror + 1-pixel translations (airbench);
    `0` off
    """
    test_weights: TestWeights = MISSING
    """what `test` evaluates: `best` (the val/acc-best checkpoint), `final` (the weights at the end of
    training), `auto` = `final` when `data.val_size=0` (validation is then the test set), else `best`
    """


@dataclass
class CheckpointConfig:
    every_n_steps: int | None = MISSING
    """also write `last.ckpt` every N optimiser steps inside an epoch; `null` = at epoch ends only"""


@dataclass
class TrainConfig:
    seed: int = MISSING
    """seeds Python, NumPy, torch on every process and the order of training batches"""
    resume: bool = MISSING
    """continue an interrupted run from `<run dir>/checkpoints/last.ckpt`; in a sweep, skip completed jobs
    and continue the others
    """
    ckpt_path: str | None = MISSING
    """continue training from this checkpoint (one of a run with the same config; `resume=true` finds a run's
    own `last.ckpt`)
    """
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: TrainEvalOptions = field(default_factory=TrainEvalOptions)


@dataclass
class ShapesConfig:
    input_size: list[int] = MISSING
    """N, C, H, W of the batch `shapes` pushes through the model"""
    model: ModelConfig = field(default_factory=ModelConfig)


@dataclass
class EvalConfig:
    seed: int = MISSING
    """seeds Python, NumPy and torch on every process (evaluation draws no training batches)"""
    ckpt_path: str = MISSING
    """the checkpoint to test (required): a `.ckpt` written by `downsample_lab.train`"""
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalOptions = field(default_factory=EvalOptions)


@dataclass
class BenchSettings:
    """The ``bench`` block of ``configs/bench.yaml`` (each key is described there)."""

    strategies: list[Downsample] = MISSING
    """`model.downsample` values to bench, in this order"""
    warmup_steps: int = MISSING
    """untimed steps per path before its first window (first-step allocations, autotuning, compile)"""
    window_steps: int = MISSING
    """optimiser steps per timed window"""
    windows: int = MISSING
    """timed windows per path, lightning and raw alternating; img/s is the median over them"""
    threads: int | None = MISSING
    """torch CPU threads (`torch.set_num_threads`); `null` = torch's default (the cores)"""
    out: str | None = MISSING
    """JSON file to write; `null` = `<run dir>/bench.json`"""


@dataclass
class BenchConfig:
    """The groups a training step needs, plus the ``bench`` block (no resume, checkpoint or test keys)."""

    seed: int = MISSING
    """seeds Python, NumPy, torch on every process and the order of training batches"""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    bench: BenchSettings = field(default_factory=BenchSettings)

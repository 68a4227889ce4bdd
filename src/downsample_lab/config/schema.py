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
    devices: Any = MISSING  # an int, a list of device indices, or "auto"
    num_nodes: int = MISSING
    strategy: Strategy = MISSING
    precision: Precision = MISSING
    max_epochs: int = MISSING
    deterministic: bool = MISSING
    log_every_n_steps: int = MISSING
    check_val_every_n_epoch: int = MISSING
    num_sanity_val_steps: int = MISSING
    fast_dev_run: Any = MISSING  # bool or a number of batches
    limit_train_batches: Any = MISSING  # null, a fraction (float) or a number of batches (int)
    limit_val_batches: Any = MISSING
    limit_test_batches: Any = MISSING
    gradient_clip_val: float | None = MISSING
    enable_progress_bar: bool = MISSING


@dataclass
class EvalOptions:
    max_shift: int = MISSING
    shift_images: int = MISSING


@dataclass
class TrainEvalOptions(EvalOptions):
    tta_level: int = MISSING
    test_weights: TestWeights = MISSING


@dataclass
class CheckpointConfig:
    every_n_steps: int | None = MISSING


@dataclass
class TrainConfig:
    seed: int = MISSING
    resume: bool = MISSING
    ckpt_path: str | None = MISSING
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: TrainEvalOptions = field(default_factory=TrainEvalOptions)


@dataclass
class ShapesConfig:
    input_size: list[int] = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)


@dataclass
class EvalConfig:
    seed: int = MISSING
    ckpt_path: str = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalOptions = field(default_factory=EvalOptions)


@dataclass
class BenchSettings:
    """The ``bench`` block of ``configs/bench.yaml`` (each key is described there)."""

    strategies: list[Downsample] = MISSING
    warmup_steps: int = MISSING
    window_steps: int = MISSING
    windows: int = MISSING
    threads: int | None = MISSING
    out: str | None = MISSING


@dataclass
class BenchConfig:
    """The groups a training step needs, plus the ``bench`` block (no resume, checkpoint or test keys)."""

    seed: int = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    bench: BenchSettings = field(default_factory=BenchSettings)

"""The config schema: every key a user can set and its type, and the typed objects the code is given.

The YAML files under ``configs/`` hold the values (one visible place for every default); the dataclasses here
hold the types, a key with a fixed set of values as a :class:`Choice` enum; :mod:`config_rules` holds what the
values may be. :func:`validate` applies both before any data is loaded or any model is built, so a typo'd key,
a wrong type or an impossible value stops the run at once with one sentence naming the key. The DataModule,
the LightningModule and :func:`~downsample_lab.models.build_model` take the typed objects
(``OmegaConf.to_object`` of a validated group, e.g. :class:`DataConfig`), so no default is written twice.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import torch
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from downsample_lab import (
    config_rules,
    resolvers,  # noqa: F401  (registers the resolvers the YAML configs call)
)
from downsample_lab.data import SOURCES
from downsample_lab.errors import ConfigError, did_you_mean
from downsample_lab.models import DOWNSAMPLE_NAMES, MODEL_NAMES, PADDING_MODES


def config_dir() -> Path:
    """Where the YAML configs live: inside the package for a wheel install, ``./configs`` for an editable one."""
    packaged = Path(__file__).parent / "configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "configs"


class Choice(str, Enum):
    """The type of a key whose value is one of a fixed set of names; a config holds the member, which compares
    equal to its name and prints as it (``cfg.model.downsample == "conv"``, ``f"{...}"``)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


def _choices(name: str, values: Iterable[str]) -> Any:
    return Choice(name, [(v, v) for v in values], module=__name__, qualname=name)


ModelName = _choices("ModelName", MODEL_NAMES)
Downsample = _choices("Downsample", DOWNSAMPLE_NAMES)
PaddingMode = _choices("PaddingMode", PADDING_MODES)
Source = _choices("Source", SOURCES)
Flip = _choices("Flip", ("random", "alternating"))
TranslateMode = _choices("TranslateMode", ("zeros", "reflect"))
OptimizerName = _choices("OptimizerName", ("sgd", "adamw"))
Schedule = _choices("Schedule", ("onecycle", "cosine", "step", "constant", "triangular"))
LossReduction = _choices("LossReduction", ("mean", "sum"))
Accelerator = _choices("Accelerator", ("auto", "cpu", "gpu", "cuda", "mps"))
Strategy = _choices("Strategy", ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"))
Precision = _choices("Precision", ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"))
TestWeights = _choices("TestWeights", ("auto", "best", "final"))


# The schema: the types of the keys; the YAML files give every value (MISSING: required).
@dataclass
class ModelConfig:
    name: ModelName = MISSING
    widths: list[int] = MISSING
    dropout: float = MISSING
    channels_last: bool = MISSING
    compile: bool = MISSING
    # model.name=cnn and fast
    downsample: Downsample | None = None
    padding_mode: PaddingMode | None = None
    # model.name=cnn only
    kernel_size: int | None = None
    blocks: int | None = None
    match_params: bool | None = None
    # model.name=fast only (downsample too)
    whiten_bias_epochs: int | None = None
    # the All-CNN family only
    batch_norm: bool | None = None


@dataclass
class DataConfig:
    source: Source = MISSING
    root: str = MISSING
    cache_dir: str | None = MISSING
    download: bool = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    val_size: int = MISSING
    split_seed: int = MISSING
    train_subset: int | None = MISSING
    augment: bool = MISSING
    flip: Flip = MISSING
    translate: int = MISSING
    translate_mode: TranslateMode = MISSING
    on_device: bool | None = MISSING
    synthetic_train_size: int = MISSING
    synthetic_test_size: int = MISSING


@dataclass
class OptimConfig:
    name: OptimizerName = MISSING
    lr: float = MISSING
    momentum: float = MISSING
    nesterov: bool = MISSING
    betas: list[float] = MISSING
    weight_decay: float = MISSING
    label_smoothing: float = MISSING
    schedule: Schedule = MISSING
    warmup: float = MISSING
    milestones: list[int] = MISSING
    gamma: float = MISSING
    decoupled: bool = MISSING
    bias_lr_scale: float = MISSING
    loss_reduction: LossReduction = MISSING
    lookahead: bool = MISSING
    train_epochs: float | None = MISSING


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


Config = TypeVar("Config")


def typed(schema: type[Config], value: Config | Mapping[str, Any], group: str = "") -> Config:
    """``value`` as a ``schema`` object: as it is, or a mapping (a validated config node, the hyperparameters a
    checkpoint saved) merged into the schema; raises ConfigError naming the key (``group.key``) that does not
    fit, e.g. one a checkpoint of an older version lacks."""
    if isinstance(value, schema):
        return value
    if OmegaConf.is_config(value):  # a node of a larger config: resolve its ${...} there, first
        value = plain(value)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), value))  # type: ignore[return-value]
    except MissingMandatoryValue as err:
        raise ConfigError(f"{group}.{err.full_key} has no value (saved by an older version?)") from None
    except OmegaConfBaseException as err:
        raise _schema_error(err, schema, f"{group}." if group else "") from None


def plain(value: Any) -> Any:
    """A config object or node as plain dicts, lists and scalars, choices as their names: what checkpoints,
    JSON files and TensorBoard store."""
    node = value if OmegaConf.is_config(value) else OmegaConf.structured(value)
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)


def _choice_of(schema: type, key: str) -> type[Choice] | None:
    """The :class:`Choice` type of the dotted ``key`` (``bench.strategies[1]``) in ``schema``, if it has one."""
    hint: Any = schema
    for part in re.sub(r"\[\d+\]", "", key).split("."):
        if not dataclasses.is_dataclass(hint):
            return None
        hint = typing.get_type_hints(hint).get(part)
    for t in (hint, *typing.get_args(hint)):
        for u in (t, *typing.get_args(t)):  # list[Downsample], Downsample | None
            if isinstance(u, type) and issubclass(u, Choice):
                return u
    return None


def _schema_error(err: OmegaConfBaseException, schema: type, prefix: str = "") -> ConfigError:
    key = err.full_key or "?"
    shown = prefix + key  # the key as a user writes it
    if isinstance(err, ConfigKeyError):
        parent = key.rsplit(".", 1)[0] if "." in key else None
        node = OmegaConf.structured(schema)
        valid = OmegaConf.select(node, parent) if parent else node
        names = ", ".join(valid.keys()) if isinstance(valid, DictConfig) else ""
        where = (
            f"the {prefix}{parent} group"
            if parent
            else (f"the {prefix[:-1]} group" if prefix else "the top level")
        )
        return ConfigError(f"{shown} is not a config key; {where} has: {names}")
    if isinstance(err, MissingMandatoryValue):
        return ConfigError(f"{shown} has no value; set it, e.g. {shown}=<value>")
    choice = _choice_of(schema, key) if isinstance(err, ValidationError) else None
    if choice is not None:
        names = list(choice.__members__)
        return ConfigError(
            f"{shown}={err.value!r} is not valid; choose one of {', '.join(names)}"
            f"{did_you_mean(str(err.value), names)}"
        )
    if isinstance(err, ValidationError):
        return ConfigError(f"{shown}={err.value!r} has the wrong type; {str(err.msg).splitlines()[0]}")
    return ConfigError(f"{shown}: {str(err.msg).splitlines()[0]}")


def check_accelerator(t: DictConfig) -> None:
    """Raise ConfigError when the ``trainer`` group asks for a CUDA GPU that this machine lacks.

    Not part of :func:`validate`: a GPU config (``experiment=ablation``) is still valid on a CPU machine, it
    cannot run there.
    """
    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={t.accelerator} (trainer=gpu, trainer=ddp) needs a CUDA GPU and torch sees none "
            "on this machine; use trainer=cpu, or run where torch.cuda.is_available() is true"
        )


def check_launcher(t: DictConfig) -> None:
    """Raise ConfigError for DDP inside a job of a parallel sweep (``hydra/launcher=parallel``).

    The jobs of such a sweep share the machine; a job that started its own process group over every device
    would compete with the others for them (and its worker processes would outlive a stopped pool).
    """
    from downsample_lab.resolvers import concurrent_jobs, runs_on_cuda

    devices = t.devices
    if devices == "auto":  # Lightning's auto: every GPU there is, else one CPU process
        devices = max(1, torch.cuda.device_count()) if runs_on_cuda(t.accelerator) else 1
    n = len(devices) if isinstance(devices, list | ListConfig) else int(devices)
    ddp = "ddp" in str(t.strategy) or n != 1 or int(t.num_nodes) != 1
    if ddp and concurrent_jobs() > 1:
        raise ConfigError(
            f"trainer.strategy={t.strategy} trainer.devices={t.devices} trainer.num_nodes={t.num_nodes} runs DDP "
            "inside a job, which a parallel sweep (hydra/launcher=parallel) does not do: run the jobs on one device "
            "each (trainer.devices=1, e.g. trainer=gpu) or sweep the DDP jobs one at a time (drop "
            "hydra/launcher=parallel)"
        )


@functools.cache
def _structured(schema: type) -> DictConfig:
    """The schema as an OmegaConf node, built once: building it takes most of a validation's ~0.1 s."""
    return OmegaConf.structured(schema)


def validate(cfg: DictConfig, schema: type = TrainConfig, *updates: DictConfig) -> DictConfig:
    """Check ``cfg`` against ``schema`` (types, choices) and the value rules of :mod:`config_rules`; return the
    typed config or raise ConfigError. ``updates`` are merged over ``cfg`` first (a sweep job's values)."""
    try:
        node = OmegaConf.merge(_structured(schema), cfg, *updates)  # (merge copies the schema's node)
        OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise _schema_error(err, schema) from None
    config_rules.check(node)
    return node

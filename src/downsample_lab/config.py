"""The config schema and its validation: every key a user can set, its type, and what values are valid.

The YAML files under ``configs/`` hold the values (one visible place for every default); the dataclasses here
hold the types. :func:`validate` merges the two before any data is loaded or any model is built, so a typo'd
key, a wrong type or an impossible value stops the run at once with one sentence naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from downsample_lab import resolvers  # noqa: F401  (registers the resolvers the YAML configs call)
from downsample_lab.data import SOURCES
from downsample_lab.errors import ConfigError, did_you_mean
from downsample_lab.models import DOWNSAMPLE_NAMES, MODEL_NAMES, effective_widths


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
    # model.name=cnn only
    downsample: Downsample | None = None
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
    fast_dev_run: Any = MISSING  # bool or a number of batches
    limit_train_batches: Any = MISSING  # null, a fraction (float) or a number of batches (int)
    limit_val_batches: Any = MISSING
    limit_test_batches: Any = MISSING
    gradient_clip_val: float | None = MISSING
    enable_progress_bar: bool = MISSING


@dataclass
class EvalOptions:
    max_shift: int = MISSING


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


def typed(schema: type[Config], value: Config | Mapping[str, Any]) -> Config:
    """``value`` as a ``schema`` object: as it is, or a mapping (a validated config node, the hyperparameters a
    checkpoint saved) merged into the schema; raises ConfigError naming a key that does not fit."""
    if isinstance(value, schema):
        return value
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), value))  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise _schema_error(err, schema) from None


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


def _schema_error(err: OmegaConfBaseException, schema: type) -> ConfigError:
    key = err.full_key or "?"
    if isinstance(err, ConfigKeyError):
        parent = key.rsplit(".", 1)[0] if "." in key else None
        node = OmegaConf.structured(schema)
        valid = OmegaConf.select(node, parent) if parent else node
        names = ", ".join(valid.keys()) if isinstance(valid, DictConfig) else ""
        where = f"the {parent} group" if parent else "the top level"
        return ConfigError(f"{key} is not a config key; {where} has: {names}")
    if isinstance(err, MissingMandatoryValue):
        return ConfigError(f"{key} has no value; set it, e.g. {key}=<value>")
    choice = _choice_of(schema, key) if isinstance(err, ValidationError) else None
    if choice is not None:
        names = list(choice.__members__)
        return ConfigError(
            f"{key}={err.value!r} is not valid; choose one of {', '.join(names)}"
            f"{did_you_mean(str(err.value), names)}"
        )
    if isinstance(err, ValidationError):
        return ConfigError(f"{key}={err.value!r} has the wrong type; {str(err.msg).splitlines()[0]}")
    return ConfigError(f"{key}: {str(err.msg).splitlines()[0]}")


def _shown(value: Any) -> str:
    return repr(str(value) if isinstance(value, Choice) else value)


def _check(ok: bool, key: str, value: Any, valid: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={_shown(value)} is not valid; {valid}")


_CNN_ONLY = ("downsample", "kernel_size", "blocks", "match_params")
_ALLCNN_ONLY = ("batch_norm",)
_FAST_ONLY = ("downsample", "whiten_bias_epochs")
# The keys each model takes beyond the common ones.
_MODEL_KEYS = {"cnn": _CNN_ONLY, "fast": _FAST_ONLY}


def _model_keys_owner(key: str) -> str:
    if key in _ALLCNN_ONLY:
        return "the All-CNN models"
    return " and ".join(f"model.name={name}" for name, keys in _MODEL_KEYS.items() if key in keys)


def _check_model(m: DictConfig) -> None:
    own = _MODEL_KEYS.get(m.name, _ALLCNN_ONLY)
    foreign = tuple(k for k in {*_CNN_ONLY, *_ALLCNN_ONLY, *_FAST_ONLY} if k not in own)
    for key in own:
        if m[key] is None:
            raise ConfigError(f"model.{key} has no value; model.name={m.name} needs it")
    for key in sorted(foreign):
        if m[key] is not None:
            raise ConfigError(
                f"model.{key}={_shown(m[key])} does not apply to model.name={m.name}; remove it (it is for "
                f"{_model_keys_owner(key)})"
            )
    _check(len(m.widths) > 0 and all(w > 0 for w in m.widths), "model.widths", list(m.widths),
           "give one positive width per stage, e.g. [64,128,256]")  # fmt: skip
    _check(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "use a probability in [0, 1)")
    if m.name == "fast":
        _check(len(m.widths) == 3, "model.widths", list(m.widths),
               "model.name=fast has three groups, e.g. [64,256,256]")  # fmt: skip
        _check(m.whiten_bias_epochs >= 0, "model.whiten_bias_epochs", m.whiten_bias_epochs,
               "use 0 (never train the whitening bias) or a number of epochs")  # fmt: skip
        return
    if m.name != "cnn":
        _check(
            len(m.widths) == 2,
            "model.widths",
            list(m.widths),
            "the All-CNN models have two stages, e.g. [96,192]",
        )
        return
    k = m.kernel_size
    _check(
        k > 0 and k % 2 == 1,
        "model.kernel_size",
        k,
        "use an odd positive size (3, 5 or 7) so padding k//2 keeps H and W",
    )
    _check(m.blocks >= 1, "model.blocks", m.blocks, "use at least 1 conv block per stage")
    try:
        effective_widths(m)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_data(d: DictConfig) -> None:
    for key in ("batch_size", "eval_batch_size", "synthetic_train_size", "synthetic_test_size"):
        _check(d[key] > 0, f"data.{key}", d[key], "use a positive number")
    _check(
        d.val_size >= 0, "data.val_size", d.val_size, "use 0 (validate on the test set) or a positive count"
    )
    _check(0 <= d.translate <= 8, "data.translate", d.translate, "use a shift in pixels from 0 to 8")
    _check(d.train_subset is None or d.train_subset > 0, "data.train_subset", d.train_subset,
           "use null (all training images) or a positive count")  # fmt: skip
    if d.source == "folder" and not Path(os.path.expanduser(d.root)).is_dir():
        raise ConfigError(
            f"data.root={d.root!r} is not a folder; with data.source=folder it must hold train/ and test/ "
            "class folders (see the README, 'Use a local copy of CIFAR-10')"
        )


def _check_optim(o: DictConfig) -> None:
    _check(o.lr > 0, "optim.lr", o.lr, "use a positive learning rate")
    _check(0 <= o.momentum < 1, "optim.momentum", o.momentum, "use a value in [0, 1)")
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", list(o.betas),
           "give two values in [0, 1), e.g. [0.9,0.999]")  # fmt: skip
    _check(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "use 0 or a positive value")
    _check(0 <= o.label_smoothing < 1, "optim.label_smoothing", o.label_smoothing, "use a value in [0, 1)")
    _check(0 <= o.warmup < 1, "optim.warmup", o.warmup, "use a fraction of the training steps in [0, 1)")
    ms = list(o.milestones)
    _check(all(m > 0 for m in ms) and ms == sorted(ms), "optim.milestones", ms,
           "give increasing epochs at which the step schedule multiplies the lr by optim.gamma")  # fmt: skip
    _check(0 < o.gamma <= 1, "optim.gamma", o.gamma, "use a factor in (0, 1]")
    _check(
        not o.nesterov or o.momentum > 0, "optim.nesterov", o.nesterov, "Nesterov needs optim.momentum > 0"
    )
    _check(o.bias_lr_scale > 0, "optim.bias_lr_scale", o.bias_lr_scale, "use a positive factor (1 = off)")
    _check(o.bias_lr_scale == 1 or o.decoupled, "optim.bias_lr_scale", o.bias_lr_scale,
           "a separate lr for BatchNorm biases needs optim.decoupled=true (or use 1)")  # fmt: skip
    _check(not o.decoupled or o.name == "sgd", "optim.decoupled", o.decoupled,
           "the decoupled (airbench) parametrisation is for optim.name=sgd")  # fmt: skip
    _check(o.train_epochs is None or o.train_epochs > 0, "optim.train_epochs", o.train_epochs,
           "use null (trainer.max_epochs) or a positive, possibly fractional, number of epochs")  # fmt: skip


def _check_trainer(t: DictConfig, batch_size: int | None) -> None:
    _check(t.max_epochs >= 1, "trainer.max_epochs", t.max_epochs, "use at least 1 epoch")
    _check(t.num_nodes >= 1, "trainer.num_nodes", t.num_nodes, "use at least 1 node")
    _check(
        t.log_every_n_steps >= 1, "trainer.log_every_n_steps", t.log_every_n_steps, "use a positive number"
    )
    devices = t.devices
    ok = devices == "auto" or (isinstance(devices, int) and (devices >= 1 or devices == -1))
    ok = ok or (OmegaConf.is_list(devices) and len(devices) > 0)
    _check(
        ok, "trainer.devices", devices, "use a positive count, -1 (all), auto, or a list of device indices"
    )
    if batch_size is not None and isinstance(devices, int) and devices >= 1:
        world = devices * t.num_nodes
        _check(batch_size % world == 0, "data.batch_size", batch_size,
               f"it is the global batch and must divide evenly over {world} processes "
               "(trainer.devices × trainer.num_nodes)")  # fmt: skip


def check_accelerator(t: DictConfig) -> None:
    """Raise ConfigError when the ``trainer`` group asks for a CUDA GPU that this machine lacks.

    Not part of :func:`validate`: a GPU config (``experiment=ablation``) is still valid on a CPU machine, it
    cannot run there.
    """
    import torch  # here, not at the top: the schema itself needs no torch

    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={t.accelerator} (trainer=gpu, trainer=ddp) needs a CUDA GPU and torch sees none "
            "on this machine; use trainer=cpu, or run where torch.cuda.is_available() is true"
        )


def validate(cfg: DictConfig, schema: type = TrainConfig) -> DictConfig:
    """Check ``cfg`` against ``schema`` and the value rules; return the typed config or raise ConfigError."""
    try:
        node = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise _schema_error(err, schema) from None
    if "model" in node:
        _check_model(node.model)
    if "optim" in node:
        _check_optim(node.optim)
    if "input_size" in node:
        size = list(node.input_size)
        _check(len(size) == 4 and all(n > 0 for n in size) and size[1] == 3, "input_size", size,
               "give N,C,H,W with C=3, e.g. [1,3,256,256]")  # fmt: skip
    if "eval" in node:
        shift = node.eval.max_shift
        _check(0 <= shift < 16, "eval.max_shift", shift, "use 0 (off) or a shift in pixels below 16")
        if "tta_level" in node.eval:
            level = node.eval.tta_level
            _check(
                level in (0, 1, 2),
                "eval.tta_level",
                level,
                "use 0 (off), 1 (mirror) or 2 (mirror + translate)",
            )
    if "data" in node:
        _check_data(node.data)
    if "trainer" in node:
        _check_trainer(node.trainer, node.data.batch_size)
    if "optim" in node and "trainer" in node and node.optim.train_epochs is not None:
        epochs = node.optim.train_epochs
        _check(math.ceil(epochs) <= node.trainer.max_epochs, "optim.train_epochs", epochs,
               f"it ends in epoch {math.ceil(epochs)}, after trainer.max_epochs={node.trainer.max_epochs}; "
               f"set trainer.max_epochs={math.ceil(epochs)}")  # fmt: skip
    if "checkpoint" in node:
        _check_resume(node)
    return node


def _check_resume(t: DictConfig) -> None:
    n = t.checkpoint.every_n_steps
    _check(n is None or n >= 1, "checkpoint.every_n_steps", n,
           "use null (checkpoints at epoch ends only) or a positive number of steps")  # fmt: skip
    if t.ckpt_path is not None and not Path(os.path.expanduser(t.ckpt_path)).is_file():
        raise ConfigError(
            f"ckpt_path={t.ckpt_path} is not a file; pass a .ckpt from a run's checkpoints/ folder to resume it"
        )

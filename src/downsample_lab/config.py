"""The config schema and its validation: every key a user can set, its type, and what values are valid.

The YAML files under ``configs/`` hold the values (one visible place for every default); the dataclasses here
hold the types. :func:`validate` merges the two before any data is loaded or any model is built, so a typo'd
key, a wrong type or an impossible value stops the run at once with one sentence naming the key.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from downsample_lab.data import SOURCES
from downsample_lab.errors import ConfigError
from downsample_lab.models import DOWNSAMPLE_NAMES, MODEL_NAMES, effective_widths

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant", "triangular")
LOSS_REDUCTIONS = ("mean", "sum")
FLIPS = ("random", "alternating")
TRANSLATE_MODES = ("zeros", "reflect")
TEST_WEIGHTS = ("auto", "best", "final")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true")


# Characters a directory name keeps: those Hydra's override grammar takes unquoted in a value, so that a
# run's path can be pasted into hydra.run.dir=..., ckpt_path=... as it is (no '=', ',', '[', ']', '~', ':').
_PASTEABLE = re.compile(r"[^A-Za-z0-9_.+-]+")


def short_dirname(text: str, limit: int = 96) -> str:
    """A directory name from ``text``: only characters an override takes unquoted, at most ``limit`` of them.

    Every other character becomes ``-``. A longer name is cut and ends in ``_`` and a hash of the whole, so
    names stay distinct and well within the 255-byte limit of file systems.
    """
    name = _PASTEABLE.sub("-", text).strip("-") or "default"
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def sweep_overrides(hydra_cfg: Any) -> list[Any]:
    """The overrides a multirun sweeps over (``a=x,y``, ``range(..)``, ``hydra.sweeper.params``), parsed.

    ``hydra_cfg`` is the ``hydra`` node of the sweep's config: the one ``multirun.yaml`` holds, whose
    ``overrides.task`` still has the command line's lists (a job's own config has its values only).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [str(o) for o in hydra_cfg.overrides.task]
    params = OmegaConf.select(hydra_cfg, "sweeper.params", default=None) or {}
    lines += [f"{k}={v}" for k, v in params.items()]
    return [o for o in OverridesParser.create().parse_overrides(lines) if o.is_sweep_override()]


def planned_jobs(hydra_cfg: Any) -> int | None:
    """How many jobs the sweep of ``hydra_cfg`` (a ``hydra`` node) runs; None where a glob makes it unknown."""
    n = 1
    try:
        for override in sweep_overrides(hydra_cfg):
            n *= len(list(override.sweep_string_iterator()))
    except Exception:  # glob(...) over a config group: its options are only known to Hydra's config loader
        return None
    return n


def _job_value(value: str) -> str:
    # [8,16,32] → 8-16-32, as the TensorBoard run names write widths
    return value.strip("[]").replace(",", "-") if value.startswith("[") else value


def job_dirname(*, _root_: DictConfig) -> str:
    """A sweep job's directory name: its number, the values of the keys the sweep varies, and the seed.

    ``3_downsample-conv_seed-1`` for ``-m model.downsample=maxpool,conv seed=0,1``. Registered as the config
    resolver ``${job_dirname:}`` (``configs/hydra/default.yaml``). The keys that vary come from the sweep's
    ``multirun.yaml`` (written before the first job starts); a key is named by its last part unless two
    varying keys share it. A resumed sweep reads the same file, so its jobs find their directories again.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = _root_.hydra
    try:
        sweep = OmegaConf.load(Path(str(hydra_cfg.sweep.dir)) / "multirun.yaml").hydra
        varying = [o.key_or_group for o in sweep_overrides(sweep)]
    except Exception:  # no multirun.yaml: name the job by all of its overrides
        varying = None
    own = OverridesParser.create().parse_overrides([str(o) for o in hydra_cfg.overrides.task])
    values = {o.key_or_group: o.get_value_element_as_str() for o in own if not o.is_sweep_override()}
    keys = [k for k in (varying if varying is not None else values) if k in values]
    if "seed" not in keys and OmegaConf.select(_root_, "seed", default=None) is not None:
        keys.append("seed")  # always: the seed tells replicates apart, and a sweep may keep it fixed
        values["seed"] = str(_root_.seed)
    short = [k.rsplit(".", 1)[-1].lstrip("+~") for k in keys]
    parts = [
        f"{name if short.count(name) == 1 else key}-{_job_value(values[key])}"
        for key, name in zip(keys, short, strict=True)
    ]
    return short_dirname("_".join([str(hydra_cfg.job.num), *parts]))


OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)

# One line per downsampling strategy, for the --help of train, shapes and bench (configs/hydra/help/).
STRATEGY_HELP = {
    "maxpool": "MaxPool2d(2, stride 2): no parameters",
    "conv": "Conv2d(C, C, 2, stride 2) → BatchNorm → ReLU: learned, 4·C·C + 2·C parameters",
    "conv3": "Conv2d(C, C, 3, stride 2, padding 1) → BatchNorm → ReLU: overlapping windows, 9·C·C + 2·C",
    "avgpool": "AvgPool2d(2, stride 2): no parameters",
    "blurpool": "anti-aliased max-pool (Zhang 2019): MaxPool2d(2, stride 1), 3x3 blur with stride 2",
}


def strategies_help() -> str:
    """The ``${strategies:}`` resolver: every valid ``model.downsample`` with what it builds."""
    return "\n".join(f"{name:<9} {STRATEGY_HELP.get(name, '')}".rstrip() for name in DOWNSAMPLE_NAMES)


OmegaConf.register_new_resolver("strategies", strategies_help, replace=True)


def runs_on_cuda(accelerator: str) -> bool:
    """Whether ``trainer.accelerator`` trains on a CUDA GPU (``auto``: when one is present)."""
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def if_gpu(accelerator: str, on_gpu: Any, on_cpu: Any) -> Any:
    """``${if_gpu:${trainer.accelerator},A,B}``: ``A`` for a run on a CUDA GPU, else ``B``.

    A default that follows the device: a GPU needs a larger batch than a CPU to be busy (see the README's table).
    """
    return on_gpu if runs_on_cuda(accelerator) else on_cpu


OmegaConf.register_new_resolver("if_gpu", if_gpu, replace=True)


def records_subdir(output_dir: str, resume: Any) -> str | None:
    """``hydra.output_subdir``: ``.hydra``, or None (Hydra writes nothing) for a resumed run that has its records.

    Hydra writes ``.hydra/config.yaml`` and ``overrides.yaml`` at every job start; a resume (even a refused or
    a no-op one) must keep the command the run was started with. Registered as ``${records_subdir:...}``.
    """
    if resume is True and (Path(output_dir) / ".hydra" / "config.yaml").is_file():
        return None
    return ".hydra"


OmegaConf.register_new_resolver("records_subdir", records_subdir, replace=True)


def config_dir() -> Path:
    """Where the YAML configs live: inside the package for a wheel install, ``./configs`` for an editable one."""
    packaged = Path(__file__).parent / "configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "configs"


@dataclass
class ModelConfig:
    name: str = MISSING
    widths: list[int] = MISSING
    dropout: float = MISSING
    channels_last: bool = MISSING
    compile: bool = MISSING
    # model.name=cnn only
    downsample: str | None = None
    kernel_size: int | None = None
    blocks: int | None = None
    match_params: bool | None = None
    # model.name=fast only (downsample too)
    whiten_bias_epochs: int | None = None
    # the All-CNN family only
    batch_norm: bool | None = None


@dataclass
class DataConfig:
    source: str = MISSING
    root: str = MISSING
    cache_dir: str | None = MISSING
    download: bool = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    val_size: int = MISSING
    split_seed: int = MISSING
    train_subset: int | None = MISSING
    augment: bool = MISSING
    flip: str = MISSING
    translate: int = MISSING
    translate_mode: str = MISSING
    on_device: bool | None = MISSING
    synthetic_train_size: int = MISSING
    synthetic_test_size: int = MISSING


@dataclass
class OptimConfig:
    name: str = MISSING
    lr: float = MISSING
    momentum: float = MISSING
    nesterov: bool = MISSING
    betas: list[float] = MISSING
    weight_decay: float = MISSING
    label_smoothing: float = MISSING
    schedule: str = MISSING
    warmup: float = MISSING
    milestones: list[int] = MISSING
    gamma: float = MISSING
    decoupled: bool = MISSING
    bias_lr_scale: float = MISSING
    loss_reduction: str = MISSING
    lookahead: bool = MISSING
    train_epochs: float | None = MISSING


@dataclass
class TrainerConfig:
    """Passed to ``lightning.Trainer`` as keyword arguments (``precision: auto`` is resolved first)."""

    accelerator: str = MISSING
    devices: Any = MISSING  # an int, a list of device indices, or "auto"
    num_nodes: int = MISSING
    strategy: str = MISSING
    precision: str = MISSING
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
    test_weights: str = MISSING


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
    if isinstance(err, ValidationError):
        return ConfigError(f"{key}={err.value!r} has the wrong type; {str(err.msg).splitlines()[0]}")
    return ConfigError(f"{key}: {str(err.msg).splitlines()[0]}")


def _check(ok: bool, key: str, value: Any, valid: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not valid; {valid}")


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, value, f"choose one of {', '.join(choices)}")


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
    _check_choice("model.name", m.name, MODEL_NAMES)
    own = _MODEL_KEYS.get(m.name, _ALLCNN_ONLY)
    foreign = tuple(k for k in {*_CNN_ONLY, *_ALLCNN_ONLY, *_FAST_ONLY} if k not in own)
    for key in own:
        if m[key] is None:
            raise ConfigError(f"model.{key} has no value; model.name={m.name} needs it")
    for key in sorted(foreign):
        if m[key] is not None:
            raise ConfigError(
                f"model.{key}={m[key]!r} does not apply to model.name={m.name}; remove it (it is for "
                f"{_model_keys_owner(key)})"
            )
    _check(len(m.widths) > 0 and all(w > 0 for w in m.widths), "model.widths", list(m.widths),
           "give one positive width per stage, e.g. [64,128,256]")  # fmt: skip
    _check(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "use a probability in [0, 1)")
    if m.name == "fast":
        _check(len(m.widths) == 3, "model.widths", list(m.widths),
               "model.name=fast has three groups, e.g. [64,256,256]")  # fmt: skip
        _check_choice("model.downsample", m.downsample, DOWNSAMPLE_NAMES)
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
    _check_choice("model.downsample", m.downsample, DOWNSAMPLE_NAMES)
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
    _check_choice("data.source", d.source, SOURCES)
    for key in ("batch_size", "eval_batch_size", "synthetic_train_size", "synthetic_test_size"):
        _check(d[key] > 0, f"data.{key}", d[key], "use a positive number")
    _check(
        d.val_size >= 0, "data.val_size", d.val_size, "use 0 (validate on the test set) or a positive count"
    )
    _check_choice("data.flip", d.flip, FLIPS)
    _check_choice("data.translate_mode", d.translate_mode, TRANSLATE_MODES)
    _check(0 <= d.translate <= 8, "data.translate", d.translate, "use a shift in pixels from 0 to 8")
    _check(d.train_subset is None or d.train_subset > 0, "data.train_subset", d.train_subset,
           "use null (all training images) or a positive count")  # fmt: skip
    if d.source == "folder" and not Path(os.path.expanduser(d.root)).is_dir():
        raise ConfigError(
            f"data.root={d.root!r} is not a folder; with data.source=folder it must hold train/ and test/ "
            "class folders (see the README, 'Use a local copy of CIFAR-10')"
        )


def _check_optim(o: DictConfig) -> None:
    _check_choice("optim.name", o.name, OPTIMIZERS)
    _check_choice("optim.schedule", o.schedule, SCHEDULES)
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
    _check_choice("optim.loss_reduction", o.loss_reduction, LOSS_REDUCTIONS)
    _check(o.bias_lr_scale > 0, "optim.bias_lr_scale", o.bias_lr_scale, "use a positive factor (1 = off)")
    _check(o.bias_lr_scale == 1 or o.decoupled, "optim.bias_lr_scale", o.bias_lr_scale,
           "a separate lr for BatchNorm biases needs optim.decoupled=true (or use 1)")  # fmt: skip
    _check(not o.decoupled or o.name == "sgd", "optim.decoupled", o.decoupled,
           "the decoupled (airbench) parametrisation is for optim.name=sgd")  # fmt: skip
    _check(o.train_epochs is None or o.train_epochs > 0, "optim.train_epochs", o.train_epochs,
           "use null (trainer.max_epochs) or a positive, possibly fractional, number of epochs")  # fmt: skip


def _check_trainer(t: DictConfig, batch_size: int | None) -> None:
    _check_choice("trainer.accelerator", t.accelerator, ACCELERATORS)
    _check_choice("trainer.strategy", t.strategy, STRATEGIES)
    _check_choice("trainer.precision", t.precision, PRECISIONS)
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
        typed = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        OmegaConf.to_container(typed, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise _schema_error(err, schema) from None
    if "model" in typed:
        _check_model(typed.model)
    if "optim" in typed:
        _check_optim(typed.optim)
    if "input_size" in typed:
        size = list(typed.input_size)
        _check(len(size) == 4 and all(n > 0 for n in size) and size[1] == 3, "input_size", size,
               "give N,C,H,W with C=3, e.g. [1,3,256,256]")  # fmt: skip
    if "eval" in typed:
        shift = typed.eval.max_shift
        _check(0 <= shift < 16, "eval.max_shift", shift, "use 0 (off) or a shift in pixels below 16")
        if "tta_level" in typed.eval:
            level = typed.eval.tta_level
            _check(
                level in (0, 1, 2),
                "eval.tta_level",
                level,
                "use 0 (off), 1 (mirror) or 2 (mirror + translate)",
            )
            _check_choice("eval.test_weights", typed.eval.test_weights, TEST_WEIGHTS)
    if "data" in typed:
        _check_data(typed.data)
    if "trainer" in typed:
        _check_trainer(typed.trainer, typed.data.batch_size)
    if "optim" in typed and "trainer" in typed and typed.optim.train_epochs is not None:
        epochs = typed.optim.train_epochs
        _check(math.ceil(epochs) <= typed.trainer.max_epochs, "optim.train_epochs", epochs,
               f"it ends in epoch {math.ceil(epochs)}, after trainer.max_epochs={typed.trainer.max_epochs}; "
               f"set trainer.max_epochs={math.ceil(epochs)}")  # fmt: skip
    if "checkpoint" in typed:
        _check_resume(typed)
    return typed


def _check_resume(t: DictConfig) -> None:
    n = t.checkpoint.every_n_steps
    _check(n is None or n >= 1, "checkpoint.every_n_steps", n,
           "use null (checkpoints at epoch ends only) or a positive number of steps")  # fmt: skip
    if t.ckpt_path is not None and not Path(os.path.expanduser(t.ckpt_path)).is_file():
        raise ConfigError(
            f"ckpt_path={t.ckpt_path} is not a file; pass a .ckpt from a run's checkpoints/ folder to resume it"
        )

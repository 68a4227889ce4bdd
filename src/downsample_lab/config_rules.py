"""The value rules of :func:`downsample_lab.config.validate`: what each key may be beyond its type (the schema
in :mod:`downsample_lab.config` checks types and choices), each broken rule one sentence naming the key.
"""

from __future__ import annotations

import math
import os
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from downsample_lab.errors import ConfigError
from downsample_lab.models import DOWNSAMPLE_NAMES, effective_widths
from downsample_lab.models.downsample import ZERO_PADDING_ONLY
from downsample_lab.tta import TTA_LEVELS


def check(node: DictConfig) -> None:
    """Apply the rules of every group ``node`` (a config merged into its schema) has; raise ConfigError."""
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
        n = node.eval.shift_images
        _check(
            n >= 0, "eval.shift_images", n, "use 0 (no shift-robustness curves) or a number of test images"
        )
        if "tta_level" in node.eval:
            level = node.eval.tta_level
            _check(
                level in TTA_LEVELS,
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
    if "bench" in node:
        _check_bench(node.bench)
        zeros_only = [str(s) for s in node.bench.strategies if str(s) in ZERO_PADDING_ONLY]
        if zeros_only and node.model.padding_mode not in (None, "zeros"):
            raise ConfigError(
                f"model.padding_mode={node.model.padding_mode} does not apply to bench.strategies "
                f"{', '.join(zeros_only)}, which pad with zeros only; use model.padding_mode=zeros or leave them out"
            )


def _shown(value: Any) -> str:
    return repr(str(value) if isinstance(value, Enum) else value)


def _check(ok: bool, key: str, value: Any, valid: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={_shown(value)} is not valid; {valid}")


_CNN_ONLY = ("downsample", "padding_mode", "kernel_size", "blocks", "match_params")
_ALLCNN_ONLY = ("batch_norm",)
_FAST_ONLY = ("downsample", "padding_mode", "whiten_bias_epochs")
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
    if m.downsample is not None and str(m.downsample) in ZERO_PADDING_ONLY:
        _check(m.padding_mode == "zeros", "model.padding_mode", m.padding_mode,
               f"model.downsample={m.downsample} pads with zeros only; use model.padding_mode=zeros")  # fmt: skip
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
    n = t.num_sanity_val_steps
    _check(n >= -1, "trainer.num_sanity_val_steps", n, "use 0 (none), a number of batches, or -1 (all)")
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


def _check_bench(b: DictConfig) -> None:
    _check(len(b.strategies) > 0, "bench.strategies", [str(s) for s in b.strategies],
           f"list one or more of {', '.join(DOWNSAMPLE_NAMES)}")  # fmt: skip
    for key in ("warmup_steps", "window_steps", "windows"):
        _check(b[key] >= 1, f"bench.{key}", b[key], "use an integer >= 1")
    _check(b.threads is None or b.threads >= 1, "bench.threads", b.threads,
           "use null (torch's default) or an integer >= 1")  # fmt: skip


def _check_resume(t: DictConfig) -> None:
    n = t.checkpoint.every_n_steps
    _check(n is None or n >= 1, "checkpoint.every_n_steps", n,
           "use null (checkpoints at epoch ends only) or a positive number of steps")  # fmt: skip
    if t.ckpt_path is not None and not Path(os.path.expanduser(t.ckpt_path)).is_file():
        raise ConfigError(
            f"ckpt_path={t.ckpt_path} is not a file; pass a .ckpt from a run's checkpoints/ folder to resume it"
        )

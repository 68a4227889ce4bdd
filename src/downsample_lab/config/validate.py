"""Check a config against its schema and the value rules, before any data is loaded or any model is built, so
that a typo'd key, a wrong type or an impossible value stops the run at once with one sentence naming the key;
and turn a validated config into the typed objects the code is given (:func:`typed`) or plain data (:func:`plain`).

The rules of each group live with the group (``check_model`` in :mod:`downsample_lab.models.config`, ...); the
rules here span groups or belong to the root schemas. Torch-free.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from downsample_lab.choice import Choice
from downsample_lab.config.schema import TrainConfig
from downsample_lab.data.config import check_data, check_training_split
from downsample_lab.errors import ConfigError, check_value, did_you_mean
from downsample_lab.models.config import check_model
from downsample_lab.models.names import DOWNSAMPLE_NAMES, ZERO_PADDING_ONLY
from downsample_lab.optim.config import check_optim

TTA_LEVELS = (0, 1, 2)  # eval.tta_level: off, mirror, mirror + translate (downsample_lab.engine.testtime)


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


@functools.cache
def _structured(schema: type) -> DictConfig:
    """The schema as an OmegaConf node, built once: building it takes most of a validation's ~0.1 s."""
    return OmegaConf.structured(schema)


def validate(cfg: DictConfig, schema: type = TrainConfig, *updates: DictConfig) -> DictConfig:
    """Check ``cfg`` against ``schema`` (types, choices) and the value rules (:func:`check` here, ``check_model``/``check_data``/``check_optim`` of the domains); return the
    typed config or raise ConfigError. ``updates`` are merged over ``cfg`` first (a sweep job's values)."""
    try:
        node = OmegaConf.merge(_structured(schema), cfg, *updates)  # (merge copies the schema's node)
        OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        # resolved in place: every ${...} (the device-dependent defaults) keeps the value it was checked with
        OmegaConf.resolve(node)
    except OmegaConfBaseException as err:
        raise _schema_error(err, schema) from None
    check(node)
    return node


def check(node: DictConfig) -> None:
    """Apply the rules of every group ``node`` (a config merged into its schema) has; raise ConfigError."""
    if "model" in node:
        check_model(node.model)
    if "optim" in node:
        check_optim(node.optim)
    if "input_size" in node:
        size = list(node.input_size)
        check_value(len(size) == 4 and all(n > 0 for n in size) and size[1] == 3, "input_size", size,
                    "give N,C,H,W with C=3, e.g. [1,3,256,256]")  # fmt: skip
    if "eval" in node:
        _check_eval(node.eval)
    if "data" in node:
        check_data(node.data)
    if "data" in node and "optim" in node:  # a tool that trains (eval tests only: its val_size is unused)
        check_training_split(node.data)
    if "trainer" in node:
        _check_trainer(node.trainer, node.data.batch_size)
    if "optim" in node and "trainer" in node and node.optim.train_epochs is not None:
        epochs = node.optim.train_epochs
        check_value(math.ceil(epochs) <= node.trainer.max_epochs, "optim.train_epochs", epochs,
                    f"it ends in epoch {math.ceil(epochs)}, after trainer.max_epochs={node.trainer.max_epochs}; "
                    f"set trainer.max_epochs={math.ceil(epochs)}")  # fmt: skip
    if "checkpoint" in node:
        _check_resume(node)
    if "bench" in node:
        _check_bench(node.bench, node.model.padding_mode)


def _check_eval(e: DictConfig) -> None:
    check_value(
        0 <= e.max_shift < 16, "eval.max_shift", e.max_shift, "use 0 (off) or a shift in pixels below 16"
    )
    check_value(e.shift_images >= 0, "eval.shift_images", e.shift_images,
                "use 0 (no shift-robustness curves) or a number of test images")  # fmt: skip
    if "tta_level" in e:
        check_value(e.tta_level in TTA_LEVELS, "eval.tta_level", e.tta_level,
                    "use 0 (off), 1 (mirror) or 2 (mirror + translate)")  # fmt: skip


def _check_trainer(t: DictConfig, batch_size: int | None) -> None:
    check_value(t.max_epochs >= 1, "trainer.max_epochs", t.max_epochs, "use at least 1 epoch")
    check_value(t.num_nodes >= 1, "trainer.num_nodes", t.num_nodes, "use at least 1 node")
    check_value(
        t.log_every_n_steps >= 1, "trainer.log_every_n_steps", t.log_every_n_steps, "use a positive number"
    )
    n = t.num_sanity_val_steps
    check_value(n >= -1, "trainer.num_sanity_val_steps", n, "use 0 (none), a number of batches, or -1 (all)")
    devices = t.devices
    ok = devices == "auto" or (isinstance(devices, int) and (devices >= 1 or devices == -1))
    ok = ok or (OmegaConf.is_list(devices) and len(devices) > 0)
    check_value(
        ok, "trainer.devices", devices, "use a positive count, -1 (all), auto, or a list of device indices"
    )
    if batch_size is not None and isinstance(devices, int) and devices >= 1:
        world = devices * t.num_nodes
        check_value(batch_size % world == 0, "data.batch_size", batch_size,
               f"it is the global batch and must divide evenly over {world} processes "
               "(trainer.devices × trainer.num_nodes)")  # fmt: skip


def _check_resume(t: DictConfig) -> None:
    n = t.checkpoint.every_n_steps
    check_value(n is None or n >= 1, "checkpoint.every_n_steps", n,
           "use null (checkpoints at epoch ends only) or a positive number of steps")  # fmt: skip
    if t.ckpt_path is not None and not Path(os.path.expanduser(t.ckpt_path)).is_file():
        raise ConfigError(
            f"ckpt_path={t.ckpt_path} is not a file; pass a .ckpt from a run's checkpoints/ folder to resume it"
        )


def _check_bench(b: DictConfig, padding_mode: str | None) -> None:
    """The value rules of the ``bench`` block, and its strategies against ``model.padding_mode``."""
    check_value(len(b.strategies) > 0, "bench.strategies", [str(s) for s in b.strategies],
                f"list one or more of {', '.join(DOWNSAMPLE_NAMES)}")  # fmt: skip
    for key in ("warmup_steps", "window_steps", "windows"):
        check_value(b[key] >= 1, f"bench.{key}", b[key], "use an integer >= 1")
    check_value(b.threads is None or b.threads >= 1, "bench.threads", b.threads,
                "use null (torch's default) or an integer >= 1")  # fmt: skip
    zeros_only = [str(s) for s in b.strategies if str(s) in ZERO_PADDING_ONLY]
    if zeros_only and padding_mode not in (None, "zeros"):
        raise ConfigError(
            f"model.padding_mode={padding_mode} does not apply to bench.strategies "
            f"{', '.join(zeros_only)}, which pad with zeros only; use model.padding_mode=zeros or leave them out"
        )

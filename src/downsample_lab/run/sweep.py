"""A sweep's plan: its jobs (by Hydra's rule), their directory names, the launcher that runs them and how many
at once; and every job checked before the first one starts.

Hydra composes a job's config only when the job starts, so a typo in the last value of a swept key used to
surface after every job before it had trained. :func:`check_sweep` enumerates the jobs as Hydra's basic
sweeper does (:func:`sweep_overrides`: the experiment's ``hydra.sweeper.params``, and the command line's values
in their place), composes the config once per distinct choice of config groups (``model=``, ``trainer=``,
``experiment=``: composing is the slow part, about 0.3 s) and applies each job's values to a copy, then
validates it as the job would (:func:`downsample_lab.config.validate`; where the launcher runs the jobs on this
machine, :func:`~downsample_lab.device.check_accelerator` and, for the tools that train,
:func:`~downsample_lab.data.config.check_data_files`). Every combination of the swept keys is checked, except
that each seed is checked once (no rule ties the seed to another key): 162 jobs of
``experiment=ablation_fast_tune`` are 82 checks (the 81 settings, and the second seed once).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from downsample_lab.device import cuda_device_count, runs_on_cuda
from downsample_lab.errors import ConfigError

log = logging.getLogger("downsample_lab")

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
    """The overrides a multirun sweeps over (``a=x,y``, ``range(..)``, ``hydra.sweeper.params``), parsed; a key
    the command line sets replaces the params' values of that key, as in Hydra's basic sweeper.

    ``hydra_cfg`` is the ``hydra`` node of the sweep's config: the one ``multirun.yaml`` holds, whose
    ``overrides.task`` still has the command line's lists (a job's own config has its values only).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(hydra_cfg, "sweeper.params", default=None) or {}
    merged = merged_overrides(OverridesParser.create(), [str(o) for o in hydra_cfg.overrides.task], params)
    return [o for o in merged if o.is_sweep_override()]


def merged_overrides(parser: Any, task: list[str], params: Any) -> list[Any]:
    """A sweep's overrides by Hydra's rule (``BasicSweeper.split_arguments``): the experiment's
    ``hydra.sweeper.params``, then the command line's ``task``, by key (with its ``+``/``~`` prefix and
    ``@package``, as Hydra keys them) in one ordered dict, so a command-line
    value, swept or not, replaces the params' values of its key, in their place."""
    merged = {o.get_key_element(): o for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])}
    merged |= {o.get_key_element(): o for o in parser.parse_overrides(task)}
    return list(merged.values())


# The launcher that runs a sweep's jobs several at a time (configs/hydra/launcher/parallel.yaml).
PARALLEL_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def _parallel_jobs(launcher: Any) -> int:
    """``hydra.launcher.n_jobs`` of the parallel launcher (``-1``, joblib's "one per CPU", counted); else 1."""
    if launcher is None or OmegaConf.select(launcher, "_target_", default=None) != PARALLEL_LAUNCHER:
        return 1
    n = int(launcher.n_jobs)
    return n if n > 0 else max(1, cpu_count() + 1 + n)


def cpu_count() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def concurrent_jobs() -> int:
    """How many jobs of the current sweep run at once: ``hydra.launcher.n_jobs`` under ``hydra/launcher=parallel``,
    1 under Hydra's basic launcher and outside a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return 1
    return _parallel_jobs(HydraConfig.get().launcher)


def launcher_overrides(hydra_cfg: Any) -> list[str]:
    """The command-line overrides that select the sweep's launcher again (for a resume command), if not the
    basic one: ``hydra/launcher=parallel hydra.launcher.n_jobs=<k>``."""
    if OmegaConf.select(hydra_cfg, "launcher._target_", default=None) != PARALLEL_LAUNCHER:
        return []
    return ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={hydra_cfg.launcher.n_jobs}"]


def planned_jobs(hydra_cfg: Any) -> int | None:
    """How many jobs the sweep of ``hydra_cfg`` (a ``hydra`` node) runs; None where a glob makes it unknown."""
    n = 1
    try:
        for override in sweep_overrides(hydra_cfg):
            n *= len(list(override.sweep_string_iterator()))
    except Exception:  # glob(...) over a config group: its options are only known to Hydra's config loader
        return None
    return n


SWEEP_RECORD = "multirun.yaml"


def varying_keys(sweep_dir: Path | str) -> list[str]:
    """The keys and config groups the sweep of ``sweep_dir`` varies, from the record Hydra writes there before its
    first job (``multirun.yaml``: a job's own Hydra config holds only its own values). Raises when unreadable.

    Parsed once per content of the file (each job names its directory and its HParams by it: parsing the record
    took ~70 ms a time, reading it a few microseconds)."""
    return list(_varying_keys((Path(str(sweep_dir)) / SWEEP_RECORD).read_text()))


@functools.lru_cache(maxsize=8)
def _varying_keys(record: str) -> tuple[str, ...]:
    return tuple(o.key_or_group for o in sweep_overrides(OmegaConf.create(record).hydra))


def swept_overrides() -> list[str]:
    """:func:`varying_keys` of the current sweep; empty outside a multirun, or where its record cannot be read."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return []
    try:
        return varying_keys(HydraConfig.get().sweep.dir)
    except Exception as err:  # a damaged or foreign file: the HParams' always-differing keys still lead
        log.debug("Could not read the sweep's overrides: %s", err)
        return []


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
        varying = varying_keys(hydra_cfg.sweep.dir)
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


def check_launcher(t: DictConfig) -> None:
    """Raise ConfigError for DDP inside a job of a parallel sweep (``hydra/launcher=parallel``).

    The jobs of such a sweep share the machine; a job that started its own process group over every device
    would compete with the others for them (and its worker processes would outlive a stopped pool).
    """
    devices = t.devices
    if devices == "auto":  # Lightning's auto: every GPU there is, else one CPU process
        devices = max(1, cuda_device_count()) if runs_on_cuda(t.accelerator) else 1
    n = len(devices) if isinstance(devices, list | ListConfig) else int(devices)
    ddp = "ddp" in str(t.strategy) or n != 1 or int(t.num_nodes) != 1
    if ddp and concurrent_jobs() > 1:
        raise ConfigError(
            f"trainer.strategy={t.strategy} trainer.devices={t.devices} trainer.num_nodes={t.num_nodes} runs DDP "
            "inside a job, which a parallel sweep (hydra/launcher=parallel) does not do: run the jobs on one device "
            "each (trainer.devices=1, e.g. trainer=gpu) or sweep the DDP jobs one at a time (drop "
            "hydra/launcher=parallel)"
        )


def job_overrides(task: Sequence[str], params: Any) -> list[tuple[Any, ...]] | None:
    """Each job's overrides (parsed), in Hydra's order, for a sweep of the command line's ``task`` overrides and
    the experiment's ``params``; None where a value list is only known to Hydra (``glob(...)``). Each distinct
    override is parsed once (Hydra's parser takes about a millisecond per override)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    lists = []
    for o in merged_overrides(parser, list(task), params or {}):
        if not o.is_sweep_override():
            lists.append([o])
            continue
        try:
            lines = [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        except Exception:  # glob(...) over a config group
            return None
        lists.append(parser.parse_overrides(lines))
    return list(itertools.product(*lists))


# Launchers that run the jobs on this machine: there, a job's accelerator must exist here too (a cluster
# launcher such as submitit's runs them on other machines, which check their own).
LOCAL_LAUNCHERS = ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", PARALLEL_LAUNCHER)


# What the last check_sweep of this process validated: the config's name and the number of its jobs
# (hydra/sweeper=checked reads it).
_checked: tuple[str, int] = ("", 0)


def checked_jobs(config_name: str) -> int:
    """How many jobs of the config ``config_name`` this process's :func:`check_sweep` validated (0: none, another
    config's, or a check that left them to Hydra).

    The ``checked`` sweeper (``hydra_plugins/downsample_lab_sweeper``) then skips Hydra's own composition of each
    job before the first starts."""
    name, jobs = _checked
    return jobs if name == config_name else 0


def forget_check() -> None:
    """:func:`checked_jobs` back to 0: a command line that :func:`check_sweep` does not check (a resumed sweep)."""
    global _checked
    _checked = ("", 0)


def check_sweep(task: Sequence[str], config_name: str, schema: type) -> int:
    """Compose and validate every job of the multirun ``task`` (the command line's overrides); raise ConfigError
    for the first bad one, naming its overrides. Returns the number of jobs checked (0: not a sweep, or its
    values are only known to Hydra), which :func:`checked_jobs` reports for ``config_name`` from then on."""
    global _checked
    forget_check()
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf.errors import OmegaConfBaseException

    from downsample_lab.config import config_dir, validate
    from downsample_lab.data.config import check_data_files
    from downsample_lab.device import check_accelerator

    parsed = OverridesParser.create().parse_overrides(list(task))
    if not any(o.is_sweep_override() or o.key_or_group == "experiment" for o in parsed):
        return 0  # a single job: it is checked when it starts
    groups = config_dir()

    def is_group(o: Any) -> bool:
        return (groups / o.key_or_group).is_dir()

    def values(o: Any) -> bool:  # an override of a value of the task's config (not a group, not Hydra's)
        return not is_group(o) and not o.key_or_group.startswith("hydra")

    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    shared = [o.input_line for o in parsed if not o.is_sweep_override() and not is_group(o)]
    composed: dict[tuple[str, ...], tuple[DictConfig, bool]] = {}
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(groups), version_base="1.3"):
            try:
                base = compose_config(config_name, fixed)
            except ConfigError as err:
                raise ConfigError(f"{err} (no job has started)") from None
            params = OmegaConf.select(base, "hydra.sweeper.params")
            jobs = job_overrides(task, params)
            if jobs is None or len(jobs) <= 1:
                return 0
            swept = {o.key_or_group for o in parsed if o.is_sweep_override()} | {str(k) for k in params or {}}
            seen: set[tuple[str, ...]] = set()
            seeds: set[str] = set()
            for number, job in enumerate(jobs):
                # Each combination of the other keys; each seed once (no rule ties the seed to another key).
                seed = next((o.input_line for o in job if o.key_or_group == "seed"), "")
                rest = tuple(o.input_line for o in job if o.key_or_group != "seed")
                if rest in seen and seed in seeds:
                    continue
                seen.add(rest)
                seeds.add(seed)
                choice = tuple(o.input_line for o in job if is_group(o))
                own = [o for o in job if values(o)]
                try:
                    if choice not in composed:
                        # the job's groups (the command line's among them) and the command line's fixed values;
                        # where the sweep varies no group (e.g. experiment=ablation_fast_cpu: model.downsample and
                        # seed are values), that is the config composed above, with the same overrides
                        same = sorted([*choice, *shared]) == sorted(fixed)
                        cfg = base if same else compose_config(config_name, [*choice, *shared])
                        HydraConfig.instance().set_config(cfg)  # for the resolvers that read Hydra's node
                        local = OmegaConf.select(cfg, "hydra.launcher._target_") in LOCAL_LAUNCHERS
                        with open_dict(cfg):
                            del cfg.hydra
                        composed[choice] = (cfg, local)
                    cfg, local = composed[choice]
                    deleted = [o for o in own if o.is_delete()]
                    if deleted:  # (rare) a copy without those keys; else the shared config itself, not copied
                        cfg = copy.deepcopy(cfg)
                        for o in deleted:
                            _delete(cfg, o.key_or_group)
                    typed = validate(cfg, schema, _values([o for o in own if not o.is_delete()]))
                    if local and "trainer" in typed:
                        check_accelerator(typed.trainer)
                    # a tool that trains (eval's data keys are its checkpoint's, read when it runs)
                    if local and "optim" in typed:
                        check_data_files(typed.data)
                except (ConfigError, OmegaConfBaseException) as err:
                    shown = " ".join(o.input_line for o in job if o.key_or_group in swept)
                    raise ConfigError(
                        f"job {number} of the sweep ({shown}): {err} (no job has started)"
                    ) from None
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None  # Hydra sets its own when the sweep starts
    _checked = (config_name, len(jobs))
    return len(jobs)


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """The config ``name`` with ``overrides`` and Hydra's node; a composition error as one ConfigError line."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return compose(name, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"cannot compose the config ({first})") from None


def _values(overrides: Sequence[Any]) -> DictConfig:
    """``key=v``, ``+key=v`` and ``++key=v`` overrides as one config to merge over a job's (a merge, as Hydra
    applies a value override)."""
    node = OmegaConf.create({})
    for o in overrides:
        OmegaConf.update(node, o.key_or_group, o.value(), merge=False)
    return node


def _delete(cfg: DictConfig, key: str) -> None:
    """``~key`` on ``cfg``, as Hydra applies it."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    with open_dict(cfg):
        if node is not None and leaf in node:
            node.pop(leaf)

"""The resolvers the YAML configs call, and the facts about a sweep they read.

``${job_dirname:}`` names a sweep job's directory (``configs/hydra/default.yaml``), ``${if_gpu:...}`` picks a
default by device (``configs/data/cifar10.yaml``, ``configs/optim/sgd.yaml``), ``${strategies:}`` lists the
downsampling strategies in ``--help`` and ``${records_subdir:...}`` keeps a resumed run's records. Importing
:mod:`downsample_lab.config` registers them, before any entry point composes a config.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from downsample_lab.models.downsample import describe_strategies

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


def strategies_help() -> str:
    """The ``${strategies:}`` resolver: every valid ``model.downsample`` with what it builds."""
    return "\n".join(f"{name:<9} {text}".rstrip() for name, text in describe_strategies().items())


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

"""Every job of a multirun checked before the first one starts: ``-m`` with a bad value anywhere in the sweep
stops with the one line a single run with that value gets, naming the job, before any data is loaded and
before Hydra creates the sweep's directory.

Hydra composes a job's config only when the job starts, so a typo in the last value of a swept key used to
surface after every job before it had trained. :func:`check_sweep` enumerates the jobs as Hydra's basic
sweeper does (:func:`downsample_lab.resolvers.sweep_overrides`: the experiment's ``hydra.sweeper.params``, and
the command line's values in their place), composes the config once per distinct choice of config groups
(``model=``, ``trainer=``, ``experiment=``: composing is the slow part, about 0.3 s) and applies each job's
values to a copy, then validates it as the job would (:func:`downsample_lab.config.validate` and
:func:`~downsample_lab.config.check_accelerator`). Every combination of the swept keys is checked, except that
each seed is checked once (no rule ties the seed to another key): 162 jobs of ``experiment=ablation_fast_tune``
are 82 checks (the 81 settings, and the second seed once).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from downsample_lab.errors import ConfigError
from downsample_lab.resolvers import PARALLEL_LAUNCHER


def job_overrides(task: Sequence[str], params: Any) -> list[tuple[Any, ...]] | None:
    """Each job's overrides (parsed), in Hydra's order, for a sweep of the command line's ``task`` overrides and
    the experiment's ``params``; None where a value list is only known to Hydra (``glob(...)``). Each distinct
    override is parsed once (Hydra's parser takes about a millisecond per override)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from downsample_lab.resolvers import merged_overrides

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


def check_sweep(task: Sequence[str], config_name: str, schema: type) -> int:
    """Compose and validate every job of the multirun ``task`` (the command line's overrides); raise ConfigError
    for the first bad one, naming its overrides. Returns the number of jobs checked (0: not a sweep, or its
    values are only known to Hydra)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf.errors import OmegaConfBaseException

    from downsample_lab.config import check_accelerator, config_dir, validate

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
                base = _compose(config_name, fixed)
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
                        # the job's groups (the command line's among them) and the command line's fixed values
                        cfg = _compose(config_name, [*choice, *shared])
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
                except (ConfigError, OmegaConfBaseException) as err:
                    shown = " ".join(o.input_line for o in job if o.key_or_group in swept)
                    raise ConfigError(
                        f"job {number} of the sweep ({shown}): {err} (no job has started)"
                    ) from None
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None  # Hydra sets its own when the sweep starts
    return len(jobs)


def _compose(name: str, overrides: list[str]) -> DictConfig:
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

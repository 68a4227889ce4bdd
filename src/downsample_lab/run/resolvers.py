"""The resolvers the YAML configs call, registered by :func:`register` before any entry point composes a config.

``${job_dirname:}`` names a sweep job's directory (``configs/hydra/default.yaml``), ``${if_gpu:...}`` picks a
default by device (``configs/data/cifar10.yaml``, ``configs/optim/sgd.yaml``), ``${strategies:}`` lists the
downsampling strategies in ``--help`` and ``${records_subdir:...}`` keeps a resumed run's records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from downsample_lab.device import if_gpu
from downsample_lab.models.names import STRATEGIES
from downsample_lab.run.sweep import job_dirname


def strategies_help() -> str:
    """The ``${strategies:}`` resolver: every valid ``model.downsample`` with what it builds."""
    return "\n".join(f"{name:<9} {text}".rstrip() for name, text in STRATEGIES.items())


def records_subdir(output_dir: str, resume: Any) -> str | None:
    """``hydra.output_subdir``: ``.hydra``, or None (Hydra writes nothing) for a resumed run that has its records.

    Hydra writes ``.hydra/config.yaml`` and ``overrides.yaml`` at every job start; a resume (even a refused or
    a no-op one) must keep the command the run was started with. Registered as ``${records_subdir:...}``.
    """
    if resume is True and (Path(output_dir) / ".hydra" / "config.yaml").is_file():
        return None
    return ".hydra"


RESOLVERS = {
    "job_dirname": job_dirname,
    "if_gpu": if_gpu,
    "strategies": strategies_help,
    "records_subdir": records_subdir,
}


def register() -> None:
    """Register the resolvers with OmegaConf (again, harmlessly, when they are)."""
    for name, resolver in RESOLVERS.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)

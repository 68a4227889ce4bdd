"""What every Hydra entry point does around its task: report user errors in one line, record the run's status."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from downsample_lab.errors import UserError, exit_with_error

log = logging.getLogger("downsample_lab")


def run_dir() -> Path:
    """The Hydra output directory of the current job."""
    return Path(HydraConfig.get().runtime.output_dir)


@rank_zero_only
def write_status(directory: Path, status: str, **info: Any) -> None:
    """``<run dir>/status.json``: running, completed (with the final metrics) or failed (with the reason)."""
    record = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
    tmp = directory / "status.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(directory / "status.json")


def run_task(
    task: Callable[[DictConfig], dict[str, float]], cfg: DictConfig, metric: str | None
) -> float | None:
    """Run ``task``, keep ``status.json`` up to date and return ``metric`` (for Hydra sweepers).

    A :class:`UserError` becomes one line on stderr and exit code 2 for a single run; inside a multirun it is
    raised so that Hydra marks that job failed and the sweep goes on with the others.
    """
    directory = run_dir()
    write_status(directory, "running")
    try:
        metrics = task(cfg)
    except UserError as err:
        write_status(directory, "failed", error=str(err))
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        log.error("%s", err)
        exit_with_error(err)
    except BaseException as err:
        write_status(directory, "failed", error=f"{type(err).__name__}: {err}")
        raise
    write_status(directory, "completed", metrics=metrics)
    return metrics.get(metric) if metric else None

"""What every Hydra entry point does around its task: report user errors in one line, record the run's status,
skip a finished job of a resumed sweep, and list a sweep's failed jobs at its end."""

from __future__ import annotations

import atexit
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from downsample_lab.config import planned_jobs
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


def read_status(directory: Path) -> dict[str, Any]:
    """The run's ``status.json`` as a dict; empty when there is none (or it cannot be read)."""
    try:
        return json.loads((directory / "status.json").read_text())
    except (OSError, ValueError):
        return {}


class JobError(UserError, CompactHydraException):
    """A user error inside a multirun job: Hydra prints its one sentence, not a traceback, at the sweep's end."""


_RESUME_HINT = "resume=true continues it from its last checkpoint"


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def run_task(
    task: Callable[[DictConfig], dict[str, float]],
    cfg: DictConfig,
    metric: str | None,
    skip_completed: bool = False,
) -> float | None:
    """Run ``task``, keep ``status.json`` up to date and return ``metric`` (for Hydra sweepers).

    A :class:`UserError` becomes one line on stderr and exit code 2 for a single run; inside a multirun it is
    raised so that Hydra marks that job failed and the sweep goes on with the others. With ``skip_completed``
    (``resume=true``), a run whose ``status.json`` says completed returns its saved metric without running.
    """
    directory = run_dir()
    previous = read_status(directory)
    if skip_completed and previous.get("status") == "completed":
        log.info("%s completed before: returning its saved metrics without training.", directory)
        metrics = previous.get("metrics", {})
        return metrics.get(metric) if metric else None
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    write_status(directory, "running")
    try:
        metrics = task(cfg)
    except UserError as err:
        write_status(directory, "failed", error=str(err))
        if multirun:
            raise JobError(str(err)) from None
        exit_with_error(err)  # one line on stderr; status.json keeps the reason
    except SIGTERMException:
        write_status(directory, "failed", error=f"stopped by SIGTERM; {_RESUME_HINT}")
        # Lightning stops at a batch boundary and raises SystemExit(None), which would exit 0; report the signal
        # as a shell does for a process it ended.
        sys.exit(128 + 15)
    except (KeyboardInterrupt, SystemExit) as err:  # Lightning turns Ctrl-C into SystemExit(1)
        write_status(directory, "failed", error=f"interrupted ({_reason(err)}); {_RESUME_HINT}")
        raise
    except BaseException as err:
        write_status(directory, "failed", error=_reason(err))
        raise
    write_status(directory, "completed", metrics=metrics)
    return metrics.get(metric) if metric else None


def sweep_summary(sweep_dir: Path, hint: str = "", planned: int | None = None) -> tuple[str, bool]:
    """One line for the sweep and one per job that did not complete, from the jobs' ``status.json`` files.

    Returns the text (empty when no job has a status) and whether every job completed. ``planned`` is the
    number of jobs the sweep meant to run (:func:`downsample_lab.config.planned_jobs`): jobs without a
    directory or status never ran (the sweep was stopped before them), and the summary says how many. A job
    is named by its number and the overrides that set it apart from the other jobs of the sweep.
    """
    jobs = []
    for job in sorted(sweep_dir.iterdir() if sweep_dir.is_dir() else [], key=_job_number):
        status = read_status(job)
        if status and _job_number(job) >= 0:
            overrides = _overrides(job)
            jobs.append((job, status, overrides))
    varying = {k for k in {k for _, _, o in jobs for k in o} if len({o.get(k) for _, _, o in jobs}) > 1}
    lines = []
    for job, status, overrides in jobs:
        if status.get("status") == "completed":
            continue
        own = ",".join(f"{k}={v}" for k, v in overrides.items() if k in varying)
        name = f"job {_job_number(job)}" + (f" ({own})" if own else "")
        reason = status.get("error") or "did not finish (killed?)"
        lines.append(f"  {name}: {reason}")
    done = len(jobs) - len(lines)
    total = max(planned or 0, len(jobs))
    never = total - len(jobs)
    if not jobs and not planned:
        return "", True  # no job got as far as its task (e.g. a composition error, which Hydra reports)
    if not lines and not never:
        return f"Sweep {sweep_dir}: all {done} jobs completed.", True
    head = f"Sweep {sweep_dir}: {done} of {total} jobs completed"
    if lines:
        head += f"; {len(lines)} did not" + (f" and {never} never ran" if never else "") + ":"
    else:
        head += f"; {never} never ran."
    return "\n".join([head, *lines, *([hint] if hint else [])]), False


def _job_number(job: Path) -> int:
    number = job.name.split("_", 1)[0]
    return int(number) if job.is_dir() and number.isdigit() else -1


def _overrides(job: Path) -> dict[str, str]:
    try:
        listed = OmegaConf.load(job / ".hydra" / "overrides.yaml")
    except Exception:  # a missing or damaged file: name the job by its number alone
        return {}
    return dict(str(o).split("=", 1) for o in listed if "=" in str(o))


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, print which jobs failed and why (``configs/hydra/default.yaml``).

    Hydra's ``BasicSweeper`` runs every job of a batch (by default the whole sweep), keeps going after a failed
    one, then raises the first failure, which ends the command with exit code 1 and skips
    ``on_multirun_end``. So the summary is also registered to print at exit, after Hydra's own message; the
    exit code is left as it is.
    """

    def __init__(self) -> None:
        self._sweep_dir: Path | None = None
        self._hint = ""
        self._planned: int | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_dir = Path(config.hydra.sweep.dir)
        self._planned = planned_jobs(config.hydra)
        if "resume" in config:
            self._hint = (
                "Fix what failed, then repeat the sweep command with resume=true "
                f"hydra.sweep.dir={self._sweep_dir}: completed jobs are skipped, the others resumed."
            )
        atexit.register(self._report)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._report()

    def _report(self) -> None:
        if self._sweep_dir is None:
            return
        text, ok = sweep_summary(self._sweep_dir, self._hint, self._planned)
        self._sweep_dir = None  # once: at the end of the sweep or at exit, whichever comes first
        if text:
            print(text, file=sys.stdout if ok else sys.stderr, flush=True)

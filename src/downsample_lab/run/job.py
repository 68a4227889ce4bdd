"""What every Hydra entry point does around its task: report user errors in one line, record the run's status,
skip a finished job of a resumed sweep, and list a sweep's failed jobs at its end."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from downsample_lab import console
from downsample_lab.errors import UserError, exit_with_error
from downsample_lab.run import status
from downsample_lab.run.exit import freeze_at_exit
from downsample_lab.run.resume import resume_advice, shown
from downsample_lab.run.status import INTERRUPTED
from downsample_lab.run.summary import summary_follows
from downsample_lab.run.sweep import concurrent_jobs, cpu_count

log = logging.getLogger("downsample_lab")


def run_dir() -> Path:
    """The Hydra output directory of the current job."""
    return Path(HydraConfig.get().runtime.output_dir)


def _rank_zero() -> bool:
    # Lightning's rank, which its strategy sets; before Lightning is imported (a config refused before any work),
    # the launcher's environment as Lightning reads it (lightning.fabric.utilities.rank_zero._get_rank).
    if "lightning" in sys.modules:
        from lightning.pytorch.utilities import rank_zero_only

        return rank_zero_only.rank == 0
    keys = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
    return int(next((os.environ[k] for k in keys if k in os.environ), 0)) == 0


def write_status(directory: Path, state: str, **info: Any) -> None:
    """:func:`~downsample_lab.run.status.write_status`, in rank 0 only: the one record of a DDP run."""
    if _rank_zero():
        status.write_status(directory, state, **info)


class JobError(UserError, CompactHydraException):
    """A user error inside a multirun job: Hydra prints its one sentence, not a traceback, at the sweep's end."""


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _report_stop(directory: Path, what: str, advice: str) -> None:
    if _rank_zero():
        line = f"Run {shown(directory)} {what}" + (f"; {advice}" if advice else ".")
        console.write(line)  # above the bar, not glued onto it


_started: float | None = None  # time.perf_counter() when this process's current job began (run_task)


def job_started() -> float | None:
    """When the job this process runs began (``time.perf_counter()``; None outside :func:`run_task`): a job's
    clock starts there, so its first phase, ``imports``, holds the run's checks and what the job's process
    imports for it (torch and Lightning, in the first job of a process)."""
    return _started


def run_task(
    task: Callable[[Any], Any],
    cfg: DictConfig,
    metric: str | None,
    skip_completed: bool = False,
    prepare: Callable[[DictConfig], Any] | None = None,
) -> float | None:
    """Run ``task``, keep ``status.json`` up to date and return ``metric`` (for Hydra sweepers).

    A :class:`UserError` becomes one line on stderr and exit code 2 for a single run; inside a multirun it is
    raised so that Hydra marks that job failed and the sweep goes on with the others. With ``skip_completed``
    (``resume=true``), a run whose ``status.json`` says completed returns its saved metric without running.
    ``prepare`` runs first and ``task`` is given what it returns (``cfg`` without it): a UserError there (e.g. a
    refused resume) leaves the records of a run that has them (``status.json``) as they were. ``task`` returns
    its metrics, or its metrics and more for ``status.json`` (train: the job's times). An interrupted or crashed
    training run (a config with ``resume``) prints its directory and the command that continues it, which
    ``status.json`` keeps too; in a sweep whose summary this process prints next (one job at a time), or in a
    parallel sweep, that summary gives the command, once.
    """
    directory = run_dir()
    previous = status.status_of(directory)
    if skip_completed and previous.get("status") == "completed":
        log.info("%s completed before: returning its saved metrics without training.", directory)
        metrics = previous.get("metrics", {})
        return metrics.get(metric) if metric else None
    global _started
    t0 = _started = time.perf_counter()
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    parallel = concurrent_jobs() > 1
    freeze_at_exit()  # also where argv.run did not start the process: a worker of a parallel sweep, a SLURM job
    if parallel:
        _share_machine(concurrent_jobs())
    resumable = "resume" in cfg
    started = False  # whether this command has written status.json (a new run, or a resume that began)
    handler = _catch_sigterm()
    try:
        prepared = prepare(cfg) if prepare is not None else cfg
        write_status(directory, "running")
        started = True
        result = task(prepared)
    except UserError as err:
        if started or not previous:
            write_status(directory, "failed", error=str(err))
        if parallel:
            _job_line(directory, f"failed: {err}", t0)
        if multirun:
            raise JobError(str(err)) from None
        exit_with_error(err)  # one line on stderr; status.json keeps the reason
    except (KeyboardInterrupt, SystemExit) as err:
        if _is_sigterm(err):
            _stopped(
                directory, "stopped by SIGTERM", resumable, started or not previous, parallel, INTERRUPTED
            )
            # Lightning stops at a batch boundary and raises SIGTERMException, a SystemExit(None), which would exit
            # 0; report the signal as a shell does for a process it ended.
            sys.exit(EXIT_SIGTERM)
        if isinstance(err, SystemExit) and err.code != 1:  # Lightning turns Ctrl-C into SystemExit(1)
            _stopped(directory, f"exited with code {err.code}", resumable, started or not previous, parallel)
            raise
        _stopped(directory, "interrupted", resumable, started or not previous, parallel, INTERRUPTED)
        sys.exit(EXIT_SIGINT)  # as a shell reports a process ended by SIGINT, not Lightning's 1
    except BaseException as err:
        _stopped(directory, f"crashed ({_reason(err)})", resumable, started or not previous, parallel)
        if parallel:
            _job_line(directory, f"crashed ({_reason(err)})", t0)
        raise
    finally:
        _started = None  # a later train() of this process outside run_task starts its own clock
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
    metrics, extra = result if isinstance(result, tuple) else (result, {})
    write_status(directory, "completed", metrics=metrics, **extra)
    if parallel:
        figures = ", ".join(f"{k} {metrics[k]:.4f}" for k in JOB_LINE_METRICS if k in metrics)
        _job_line(directory, "completed" + (f": {figures}" if figures else ""), t0)
    return metrics.get(metric) if metric else None


# The exit codes a shell gives a process that SIGINT (Ctrl-C) or SIGTERM ended.
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM

# What the one console line of a finished job in a parallel sweep shows.
JOB_LINE_METRICS = ("val/acc_best", "test/acc", "test/acc_tta")


def _share_machine(jobs: int) -> None:
    """In one of ``jobs`` jobs running at once: take a share of the CPU cores, and leave the console to the
    sweep (this job's log lines go to its train.log only, and it prints one line when it ends)."""
    import torch

    console.quiet_libraries()  # a worker process of the pool: argv.run did this in the sweep's process only
    torch.set_num_threads(max(1, cpu_count() // jobs))
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C reaches every process of the terminal's group; the sweep's process stops the pool (run.argv.run)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):  # console
            root.removeHandler(handler)
    threads = torch.get_num_threads()
    log.info(
        "One of %d jobs running at once (a parallel sweep): %s.",
        jobs,
        console.counted(threads, "torch thread"),
    )


def _job_line(directory: Path, what: str, t0: float) -> None:
    print(f"Job {shown(directory)} {what} ({time.perf_counter() - t0:.0f} s)", flush=True)


class Terminated(SystemExit):
    """SIGTERM outside ``fit`` (inside it, Lightning raises its own ``SIGTERMException`` at a batch boundary)."""


def _is_sigterm(err: BaseException) -> bool:
    if isinstance(err, Terminated):
        return True
    if "lightning" not in sys.modules:  # it raised nothing: it is not even imported (a run refused at once)
        return False
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(err, SIGTERMException)


def _raise_sigterm(signum: int, frame: Any) -> None:
    # Outside fit, SIGTERM would end the process at once, without a word; inside fit, Lightning's own handler
    # is the active one and calls this one too: it then stops at the next batch boundary by itself.
    if signal.getsignal(signal.SIGTERM) is _raise_sigterm:
        raise Terminated()


def _catch_sigterm() -> Any:
    """Make SIGTERM raise :class:`Terminated`, as Lightning does during fit; returns the handler it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_sigterm)


def _stopped(
    directory: Path, what: str, resumable: bool, record: bool, parallel: bool = False, status: str = "failed"
) -> None:
    advice = resume_advice(directory) if resumable else ""
    if record:
        write_status(directory, status, error=f"{what}; {advice}" if advice else what)
    # In a parallel sweep the sweep's summary says which jobs stopped and gives the resume command, once; one job
    # at a time, the sweep's process prints that summary too, so the job only says that it stopped.
    if advice and not parallel:
        _report_stop(directory, what, "" if summary_follows(directory) else advice)

"""What every Hydra entry point does around its task: report user errors in one line, record the run's status,
skip a finished job of a resumed sweep, and list a sweep's failed jobs at its end."""

from __future__ import annotations

import atexit
import logging
import re
import shlex
import signal
import sys
import threading
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

from downsample_lab import runs
from downsample_lab.errors import UserError, exit_with_error
from downsample_lab.jobtime import add_up
from downsample_lab.jobtime import describe as describe_times
from downsample_lab.resolvers import concurrent_jobs, cpu_count, launcher_overrides, planned_jobs
from downsample_lab.runs import INTERRUPTED

log = logging.getLogger("downsample_lab")


def run_dir() -> Path:
    """The Hydra output directory of the current job."""
    return Path(HydraConfig.get().runtime.output_dir)


# Only rank 0 of a DDP run writes the run's record.
write_status = rank_zero_only(runs.write_status)


def read_status(directory: Path) -> dict[str, Any]:
    """The run's ``status.json`` as a dict; empty when there is none (or it cannot be read)."""
    return runs.read_status(directory)[0] or {}


class JobError(UserError, CompactHydraException):
    """A user error inside a multirun job: Hydra prints its one sentence, not a traceback, at the sweep's end."""


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _hydra_value(key: str, value: str) -> str:
    """``key=value`` as one shell word that Hydra's override parser reads back as ``value``."""
    if not re.fullmatch(r"[\w\-./:@%+]*", value):  # '=', ',', '[', '~', spaces... need Hydra's quotes
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return shlex.quote(f"{key}={value}")


def _shown(path: Path | str) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def resume_advice(directory: Path) -> str:
    """How to go on with the interrupted training run of ``directory``: the exact command, or that it restarts.

    A single run continues with ``resume=true hydra.run.dir=<run>``, a sweep job with the sweep's own
    ``-m resume=true hydra.sweep.dir=<sweep>`` (which skips the completed jobs); both from the directory alone.
    Before the first checkpoint there is nothing to continue: a single run must start again.
    """
    hydra_cfg = HydraConfig.get()
    has_checkpoint = (directory / "checkpoints" / "last.ckpt").is_file()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        command = sweep_resume_command(hydra_cfg)
        if has_checkpoint:
            return f"continue the sweep (this job from its last checkpoint) with: {command}"
        return f"this job had no checkpoint yet and starts again when the sweep goes on: {command}"
    if has_checkpoint:
        return "continue it with: python -m downsample_lab.train resume=true " + _hydra_value(
            "hydra.run.dir", _shown(directory)
        )
    return f"it had no checkpoint yet, so it must start again: {restart_command()}"


def sweep_resume_command(hydra_cfg: Any) -> str:
    """The command that continues the sweep of ``hydra_cfg`` (a ``hydra`` node), with the launcher it ran with."""
    words = [
        *launcher_overrides(hydra_cfg),
        "resume=true",
        _hydra_value("hydra.sweep.dir", _shown(hydra_cfg.sweep.dir)),
    ]
    return " ".join(["python -m downsample_lab.train -m", *words])


def restart_command() -> str:
    """The command that starts the current training run again from scratch, in a new run directory."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("resume=", "+resume="))]
    return " ".join(["python -m downsample_lab.train", *(shlex.quote(o) for o in overrides)])


@rank_zero_only
def _report_stop(directory: Path, what: str, advice: str) -> None:
    print(f"Run {_shown(directory)} {what}; {advice}", file=sys.stderr, flush=True)


def run_task(
    task: Callable[[DictConfig], dict[str, float]],
    cfg: DictConfig,
    metric: str | None,
    skip_completed: bool = False,
    check: Callable[[DictConfig], object] | None = None,
) -> float | None:
    """Run ``task``, keep ``status.json`` up to date and return ``metric`` (for Hydra sweepers).

    A :class:`UserError` becomes one line on stderr and exit code 2 for a single run; inside a multirun it is
    raised so that Hydra marks that job failed and the sweep goes on with the others. With ``skip_completed``
    (``resume=true``), a run whose ``status.json`` says completed returns its saved metric without running.
    ``check`` runs first: a UserError there (e.g. a refused resume) leaves the records of a run that has them
    (``status.json``) as they were. An interrupted or crashed training run (a config with ``resume``) prints its
    directory and the command that continues it, which ``status.json`` keeps too.
    """
    directory = run_dir()
    previous = read_status(directory)
    if skip_completed and previous.get("status") == "completed":
        log.info("%s completed before: returning its saved metrics without training.", directory)
        metrics = previous.get("metrics", {})
        return metrics.get(metric) if metric else None
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    parallel = concurrent_jobs() > 1
    if parallel:
        _share_machine(concurrent_jobs())
    resumable = "resume" in cfg
    started = False  # whether this command has written status.json (a new run, or a resume that began)
    handler = _catch_sigterm()
    t0 = time.perf_counter()
    try:
        if check is not None:
            check(cfg)
        write_status(directory, "running")
        started = True
        result = task(cfg)
    except UserError as err:
        if started or not previous:
            write_status(directory, "failed", error=str(err))
        if parallel:
            _job_line(directory, f"failed: {err}", t0)
        if multirun:
            raise JobError(str(err)) from None
        exit_with_error(err)  # one line on stderr; status.json keeps the reason
    except SIGTERMException:
        _stopped(directory, "stopped by SIGTERM", resumable, started or not previous, parallel, INTERRUPTED)
        # Lightning stops at a batch boundary and raises SystemExit(None), which would exit 0; report the signal
        # as a shell does for a process it ended.
        sys.exit(EXIT_SIGTERM)
    except (KeyboardInterrupt, SystemExit) as err:
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
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
    # A task returns its metrics, or its metrics and more for status.json (train: the job's times).
    metrics, extra = result if isinstance(result, tuple) else (result, {})
    write_status(directory, "completed", metrics=metrics, **extra)
    if parallel:
        shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in JOB_LINE_METRICS if k in metrics)
        _job_line(directory, "completed" + (f": {shown}" if shown else ""), t0)
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

    from downsample_lab.console import quiet_libraries

    quiet_libraries()  # a worker process of the pool: cli.run did this in the sweep's process only
    torch.set_num_threads(max(1, cpu_count() // jobs))
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C reaches every process of the terminal's group; the sweep stops the pool (downsample_lab.launcher)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:  # the console; FileHandler (train.log) is a subclass
            root.removeHandler(handler)
    log.info(
        "One of %d jobs running at once (hydra/launcher=parallel): %d torch threads.",
        jobs,
        torch.get_num_threads(),
    )


def _job_line(directory: Path, what: str, t0: float) -> None:
    print(f"Job {_shown(directory)} {what} ({time.perf_counter() - t0:.0f} s)", flush=True)


def _raise_sigterm(signum: int, frame: Any) -> None:
    # Outside fit, SIGTERM would end the process at once, without a word; inside fit, Lightning's own handler
    # is the active one and calls this one too: it then stops at the next batch boundary by itself.
    if signal.getsignal(signal.SIGTERM) is _raise_sigterm:
        raise SIGTERMException()


def _catch_sigterm() -> Any:
    """Make SIGTERM raise SIGTERMException, as Lightning does during fit; returns the handler it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_sigterm)


def _stopped(
    directory: Path, what: str, resumable: bool, record: bool, parallel: bool = False, status: str = "failed"
) -> None:
    advice = resume_advice(directory) if resumable else ""
    if record:
        write_status(directory, status, error=f"{what}; {advice}" if advice else what)
    if advice and not parallel:  # in a parallel sweep the sweep's summary gives the resume command, once
        _report_stop(directory, what, advice)


def sweep_summary(
    sweep_dir: Path, hint: str = "", planned: int | None = None, elapsed: float | None = None
) -> tuple[str, bool]:
    """One line for the sweep and one per job that did not complete, from the jobs' ``status.json`` files.

    Returns the text (empty when no job has a status) and whether every job completed. ``planned`` is the
    number of jobs the sweep meant to run (:func:`downsample_lab.resolvers.planned_jobs`): jobs without a
    directory or status never ran (the sweep was stopped before them), and the summary says how many. A job
    is named by its number and the overrides that set it apart from the other jobs of the sweep. With
    ``elapsed`` (the sweep's wall seconds) a last line adds up where the jobs' time went (their ``times``).
    """
    jobs = []
    for job in sorted(sweep_dir.iterdir() if sweep_dir.is_dir() else [], key=_job_number):
        status = read_status(job)
        if status and _job_number(job) >= 0:
            overrides = _overrides(job)
            jobs.append((job, status, overrides))
    varying = {k for k in {k for _, _, o in jobs for k in o} if len({o.get(k) for _, _, o in jobs}) > 1}
    lines = []
    n_interrupted = 0
    for job, status, overrides in jobs:
        if status.get("status") == "completed":
            continue
        own = ",".join(f"{k}={v}" for k, v in overrides.items() if k in varying)
        name = f"job {_job_number(job)}" + (f" ({own})" if own else "")
        reason = status.get("error") or "did not finish (killed?)"
        if status.get("status") == INTERRUPTED:
            n_interrupted += 1
            reason = f"interrupted: {reason}" if not reason.startswith("interrupted") else reason
        lines.append(f"  {name}: {reason}")
    done = len(jobs) - len(lines)
    total = max(planned or 0, len(jobs))
    never = total - len(jobs)
    if not jobs and not planned:
        return "", True  # no job got as far as its task (e.g. a composition error, which Hydra reports)
    times = [t for _, status, _ in jobs if isinstance(t := status.get("times"), dict)]
    footer = [_time_line(times, elapsed)] if times and elapsed is not None else []
    if not lines and not never:
        return "\n".join([f"Sweep {sweep_dir}: all {done} jobs completed.", *footer]), True
    head = f"Sweep {sweep_dir}: {done} of {total} jobs completed"
    counts = [
        f"{n} {what}"
        for n, what in (
            (n_interrupted, "interrupted"),
            (len(lines) - n_interrupted, "failed"),
            (never, "never ran"),
        )
        if n
    ]
    head += "; " + (", ".join(counts[:-1]) + " and " + counts[-1] if len(counts) > 1 else counts[0])
    head += ":" if lines else "."
    return "\n".join([head, *lines, *footer, *([hint] if hint else [])]), False


def _time_line(times: list[dict[str, float]], elapsed: float) -> str:
    total = add_up(times)
    return f"Time: {elapsed:.0f} s for the sweep; its {len(times)} timed jobs took {describe_times(total)}."


def _job_number(job: Path) -> int:
    number = job.name.split("_", 1)[0]
    return int(number) if job.is_dir() and number.isdigit() else -1


def _overrides(job: Path) -> dict[str, str]:
    try:
        listed = OmegaConf.load(job / ".hydra" / "overrides.yaml")
    except Exception:  # a missing or damaged file: name the job by its number alone
        return {}
    return dict(str(o).split("=", 1) for o in listed if "=" in str(o))


def mark_stopped(sweep_dir: Path) -> int:
    """Record every job of ``sweep_dir`` still marked running as stopped; returns how many there were."""
    count = 0
    for job in sorted(sweep_dir.iterdir() if sweep_dir.is_dir() else []):
        if _job_number(job) >= 0 and read_status(job).get("status") == "running":
            runs.write_status(job, INTERRUPTED, error="the sweep stopped while it ran")
            count += 1
    return count


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
        self._t0 = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_dir = Path(config.hydra.sweep.dir)
        self._planned = planned_jobs(config.hydra)
        self._t0 = time.perf_counter()
        if "resume" in config:
            self._hint = (
                f"Continue the sweep (after fixing what failed) with: {sweep_resume_command(config.hydra)} "
                "(completed jobs are skipped, the others resumed)."
            )
        atexit.register(self._report)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._report()

    def _report(self) -> None:
        if self._sweep_dir is None:
            return
        # At the sweep's end or exit no job of it runs any more (a parallel sweep's workers are gone: joblib kills
        # them on Ctrl-C, before they can record it): a job still marked running was stopped.
        mark_stopped(self._sweep_dir)
        text, ok = sweep_summary(self._sweep_dir, self._hint, self._planned, time.perf_counter() - self._t0)
        self._sweep_dir = None  # once: at the end of the sweep or at exit, whichever comes first
        if text:
            print(text, file=sys.stdout if ok else sys.stderr, flush=True)

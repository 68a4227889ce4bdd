"""A sweep's closing summary: every job counted once (completed, interrupted, failed, never ran), the jobs that
did not complete with the reason, and where the jobs' time went; printed by a Hydra callback at the sweep's end.
"""

from __future__ import annotations

import atexit
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from downsample_lab.console import counted
from downsample_lab.run.resume import sweep_resume_command
from downsample_lab.run.status import INTERRUPTED, status_of, write_status
from downsample_lab.run.sweep import planned_jobs, varying_keys
from downsample_lab.run.times import add_up
from downsample_lab.run.times import describe as describe_times

_pending: Path | None = None  # the sweep whose summary this process prints when the sweep ends


def summary_follows(job: Path) -> bool:
    """Whether this process prints the closing summary of the sweep ``job`` belongs to, once the job ends (the
    sweep's own process, one job at a time): a job that stops then leaves the command that continues the sweep to
    the summary's last line. False in a parallel sweep's worker, a SLURM job or a single run."""
    return _pending is not None and Path(job).resolve().is_relative_to(_pending.resolve())


def sweep_summary(
    sweep_dir: Path,
    resume: str = "",
    planned: int | None = None,
    elapsed: float | None = None,
    since: float | None = None,
) -> tuple[str, bool]:
    """One line for the sweep and one per job that did not complete, from the jobs' ``status.json`` files.

    Returns the text (empty when no job has a status) and whether every job completed. ``planned`` is the
    number of jobs the sweep meant to run (:func:`downsample_lab.run.sweep.planned_jobs`): jobs without a
    directory or status never ran (the sweep was stopped before them), and the summary says how many. A job
    is named by its number and the values of the keys the sweep varies. ``resume``, the command that continues
    the sweep, ends a summary of a sweep that did not complete (and a job's reason does not repeat it). With
    ``elapsed`` (the sweep's wall seconds) a ``Time:`` line adds up where the jobs' time went (their ``times``),
    counting with ``since`` (the sweep's start, ``time.time()``) only the jobs this command ran: a resumed
    sweep's jobs completed before keep the times of the command that ran them.
    """
    jobs = []
    for job in sorted(sweep_dir.iterdir() if sweep_dir.is_dir() else [], key=_job_number):
        status = status_of(job)
        if status and _job_number(job) >= 0:
            overrides = _overrides(job)
            jobs.append((job, status, overrides))
    varying = _varying(sweep_dir, [o for _, _, o in jobs])
    lines = []
    n_interrupted = 0
    for job, status, overrides in jobs:
        if status.get("status") == "completed":
            continue
        own = ",".join(f"{k}={v}" for k, v in overrides.items() if k in varying)
        name = f"job {_job_number(job)}" + (f" ({own})" if own else "")
        reason = status.get("error") or "did not finish (killed?)"
        if resume:  # said once, on the summary's last line
            reason = reason.replace(resume, "the command below")
        if status.get("status") == INTERRUPTED:
            n_interrupted += 1
            reason = f"interrupted: {reason}" if not reason.startswith("interrupted") else reason
        lines.append(f"  {name}: {reason}")
    done = len(jobs) - len(lines)
    total = max(planned or 0, len(jobs))
    never = total - len(jobs)
    if not jobs and not planned:
        return "", True  # no job got as far as its task (e.g. a composition error, which Hydra reports)
    ran = [job for job, _, _ in jobs if since is None or _written_since(job, since)]
    times = [t for job, status, _ in jobs if job in ran and isinstance(t := status.get("times"), dict)]
    before = sum(job not in ran and status.get("status") == "completed" for job, status, _ in jobs)
    finished = sum(job in ran and status.get("status") == "completed" for job, status, _ in jobs)
    footer = [_time_line(times, elapsed, before, finished)] if elapsed is not None else []
    if not lines and not never:
        return "\n".join([f"Sweep {sweep_dir}: all {counted(done, 'job')} completed.", *footer]), True
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
    hint = []
    if resume:
        fix = " (after fixing what failed)" if len(lines) > n_interrupted else ""
        hint = [f"Continue the sweep{fix} with: {resume} (completed jobs are skipped, the others resumed)."]
    return "\n".join([head, *lines, *footer, *hint]), False


def _time_line(times: list[dict[str, float]], elapsed: float, before: int, finished: int) -> str:
    """The sweep's wall time and where its jobs' time went (``times``: those of the jobs this command ran that
    record them; ``finished`` of its jobs completed, ``before`` completed under an earlier command)."""
    line = f"Time: {elapsed:.0f} s for the sweep"
    earlier = f" ({counted(before, 'job')} completed by an earlier command not counted)" if before else ""
    if not times:  # none finished, or jobs that record no phases (bench, eval)
        return f"{line}{earlier}." if finished else f"{line}; no job of it finished{earlier}."
    return f"{line}; its {counted(len(times), 'timed job')} took {describe_times(add_up(times))}{earlier}."


def _varying(sweep_dir: Path, overrides: list[dict[str, str]]) -> set[str]:
    """The keys the sweep varies (from its ``multirun.yaml``); else those whose value differs between its jobs."""
    try:
        return set(varying_keys(sweep_dir))
    except Exception:  # no record (e.g. a folder of runs put together by hand)
        return {k for k in {k for o in overrides for k in o} if len({o.get(k) for o in overrides}) > 1}


def _written_since(job: Path, since: float) -> bool:
    try:
        return (job / "status.json").stat().st_mtime >= since
    except OSError:
        return False


def _job_number(job: Path) -> int:
    number = job.name.split("_", 1)[0]
    return int(number) if job.is_dir() and number.isdigit() else -1


def _overrides(job: Path) -> dict[str, str]:
    try:
        listed = OmegaConf.load(job / ".hydra" / "overrides.yaml")
    except Exception:  # a missing or damaged file: name the job by its number alone
        return {}
    return dict(str(o).split("=", 1) for o in listed if "=" in str(o))


def mark_stopped(sweep_dir: Path, resume: str = "") -> int:
    """Record every job of ``sweep_dir`` still marked running as stopped, with ``resume``, the command that
    continues the sweep (and the job), if given; returns how many there were."""
    error = "the sweep stopped while it ran" + (f"; it continues with the sweep: {resume}" if resume else "")
    count = 0
    for job in sorted(sweep_dir.iterdir() if sweep_dir.is_dir() else []):
        if _job_number(job) >= 0 and status_of(job).get("status") == "running":
            write_status(job, INTERRUPTED, error=error)
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
        self._resume = ""
        self._planned: int | None = None
        self._t0 = 0.0
        self._started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_dir = Path(config.hydra.sweep.dir)
        self._planned = planned_jobs(config.hydra)
        self._t0, self._started = time.perf_counter(), time.time()
        global _pending
        _pending = self._sweep_dir
        if "resume" in config:
            self._resume = sweep_resume_command(config.hydra)
        atexit.register(self._report)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._report()

    def _report(self) -> None:
        global _pending
        _pending = None
        if self._sweep_dir is None:
            return
        # At the sweep's end or exit no job of it runs any more (a parallel sweep's workers are gone: joblib kills
        # them on Ctrl-C, before they can record it): a job still marked running was stopped.
        mark_stopped(self._sweep_dir, self._resume)
        elapsed = time.perf_counter() - self._t0
        text, ok = sweep_summary(self._sweep_dir, self._resume, self._planned, elapsed, since=self._started)
        self._sweep_dir = None  # once: at the end of the sweep or at exit, whichever comes first
        if text:
            print(text, file=sys.stdout if ok else sys.stderr, flush=True)

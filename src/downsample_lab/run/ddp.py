"""DDP inside a job: worker processes that re-run this job (not the whole sweep) and die with their launcher,
and no distributed state left behind for the next job of a sweep."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.core.hydra_config import HydraConfig

# Set by the process that starts a run; a DDP worker it launches compares it with its parent's id.
LAUNCHER_PID_ENV = "DOWNSAMPLE_LAB_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    """In a DDP worker process (``LOCAL_RANK`` set by the launcher), exit as soon as the launcher dies.

    A worker whose launcher was SIGKILLed would otherwise wait inside a collective until its timeout (30
    minutes), holding its device, and a ``resume=true`` on the same devices could not start. On Linux the kernel
    sends the worker SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread
    polls the parent's id. A launcher that died before this ran is caught by comparing the parent's id with the
    one the launcher left in the environment.
    """
    if "LOCAL_RANK" not in os.environ:
        return
    expected = os.environ.get(LAUNCHER_PID_ENV)
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
    if expected is not None and int(expected) != os.getppid():
        os._exit(1)  # the launcher died before the line above took effect


def _hydra_job_command(local_rank: int) -> tuple[list[str], str]:
    """The command that starts DDP process ``local_rank`` of the current Hydra job.

    Lightning's own version re-runs ``sys.argv`` with ``hydra.run.dir``: inside a multirun that re-launches the
    whole sweep in every process, into the wrong directory. This one re-runs only this job's overrides, into
    this job's output directory, with its own log file and without rewriting the job's ``.hydra/`` files.
    """
    import __main__

    hydra_cfg = HydraConfig.get()
    module = __main__.__spec__.name if __main__.__spec__ is not None else _entry_module
    command = [sys.executable, "-m", module, *hydra_cfg.overrides.task]
    command += [
        # quoted: a sweep job's directory name holds '=' and ',' from its overrides
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name={hydra_cfg.job.name}_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, hydra_cfg.runtime.cwd


_entry_module = "downsample_lab.train"  # the module a console script (no __main__.__spec__) runs


def use_hydra_job_command(module: str) -> None:
    """Make Lightning's DDP launcher start this job's worker processes with :func:`_hydra_job_command` (inside a
    Hydra job; a no-op outside one): ``python -m <module>`` (``downsample_lab.train``, ``downsample_lab.eval``).
    Called where a job builds its Trainer."""
    global _entry_module
    _entry_module = module
    if HydraConfig.initialized():
        from downsample_lab import compat

        compat.install_hydra_subprocess_cmd(_hydra_job_command)


_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "PL_GLOBAL_SEED")


@contextmanager
def distributed_job() -> Iterator[None]:
    """Leave no distributed state behind a job, so the next job of a multirun can start its own processes.

    Lightning keeps the process group alive after ``fit`` (``test`` reuses it) and its launcher leaves
    ``LOCAL_RANK``/``WORLD_SIZE``/... in the environment, from which the next Trainer in the same process would
    conclude that someone else launched it.
    """
    saved = {k: os.environ.get(k) for k in _LAUNCHER_ENV}
    try:
        yield
    finally:
        torch = sys.modules.get("torch")  # not imported: the job stopped before any work, nothing to clean up
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

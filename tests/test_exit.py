"""Every command ends without the collector's last passes over torch and Lightning (run/exit.py)."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from downsample_lab.run import exit as exit_module
from downsample_lab.run.job import run_task

from .conftest import REPO, compose_config

# Registered before the command runs, so atexit calls it after the command's own handlers (last in, first out).
PROBE = "import atexit, gc; atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0, flush=True))"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_freeze_at_exit_freezes_the_collector_once_when_the_process_exits():
    code = f"""{PROBE}
from downsample_lab.run.exit import freeze_at_exit
before = atexit._ncallbacks()
freeze_at_exit(); freeze_at_exit()
assert atexit._ncallbacks() == before + 1, atexit._ncallbacks()
print('frozen while running:', gc.get_freeze_count() > 0, flush=True)
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["frozen while running: False", "frozen at exit: True"]


def test_a_process_that_does_not_ask_keeps_the_collector():  # the probe can tell the two apart
    result = _python(PROBE)
    assert result.stdout.strip() == "frozen at exit: False"


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("downsample_lab.train", ["--help"]),
        ("downsample_lab.eval", ["--help"]),
        ("downsample_lab.report", ["--help"]),
        ("downsample_lab.report.selection", ["--help"]),
    ],
)
def test_every_command_asks_for_it(module, args):
    code = f"""{PROBE}
import runpy, sys
sys.argv = [{module!r}, *{args!r}]
runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.rstrip().endswith("frozen at exit: True"), result.stdout[-500:]


def test_a_job_asks_for_it_in_a_process_the_command_line_did_not_start(tmp_path, tiny_overrides, monkeypatch):
    # A worker of a parallel sweep or a SLURM job process runs the task function without argv.run.
    registered = []
    monkeypatch.setattr(exit_module, "_registered", False)
    monkeypatch.setattr(exit_module.atexit, "register", registered.append)
    cfg = compose_config("train", tiny_overrides, run_dir=tmp_path / "run")
    run_task(lambda cfg: {"val/acc_best": 0.5}, cfg, metric="val/acc_best")
    assert registered == [gc.freeze]

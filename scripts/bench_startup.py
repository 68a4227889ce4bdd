#!/usr/bin/env python
"""Two fixed costs every command or sweep pays, timed as docs/BENCHMARKS.md reports them.

    python scripts/bench_startup.py exit                     # a process's exit with torch and Lightning loaded
    python scripts/bench_startup.py first-job -- experiment=ablation_fast_cpu   # command to first job

``exit``: seconds from the last line of ``import torch, lightning, torchvision`` to the process being gone, as
Python leaves it, with ``gc.freeze()`` at exit (what every command of the project does, ``run/exit.py``) and with
``os._exit`` (the floor). ``first-job``: seconds from ``python -m downsample_lab.train -m <overrides>`` to the
start of its first job (Hydra's ``run_job``, replaced by a probe that exits there: no job runs, nothing is
written but the sweep's ``multirun.yaml`` under a temporary directory). ``--runs`` repeats each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

EXIT_MODES = {
    "plain": "pass",
    "gc.freeze at exit": "import atexit, gc; atexit.register(gc.freeze)",
    "os._exit": "import os; os._exit(0)",
}

PROBE = """
import os, sys, time
t0 = float(sys.argv[1])
import hydra.core.utils
def probe(*args, **kwargs):
    print(f"{time.time() - t0:.3f}", flush=True)
    os._exit(0)
hydra.core.utils.run_job = probe  # the launchers import it from here when Hydra loads them
sys.argv = ["train", "-m", *sys.argv[2:]]
from downsample_lab.train import main
main()
"""


def time_exit(code: str) -> float:
    program = f"import time, torch, lightning, torchvision; print(time.time(), flush=True); {code}"
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    return time.time() - float(result.stdout.split()[-1])


def time_first_job(overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-c", PROBE, str(time.time()), *overrides, f"hydra.sweep.dir={tmp}/sweep"]
        result = subprocess.run(command, capture_output=True, text=True)
    lines = result.stdout.split()
    if result.returncode != 0 or not lines:
        sys.exit(f"the sweep did not reach its first job:\n{result.stderr[-2000:]}")
    return float(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["exit", "first-job"])
    parser.add_argument("--runs", type=int, default=2)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.overrides = argv[split + 1 :]  # first-job: the sweep's overrides, after --
    if args.what == "exit":
        for name, code in EXIT_MODES.items():
            print(f"{name}: " + " / ".join(f"{time_exit(code):.2f}" for _ in range(args.runs)) + " s")
    else:
        seconds = [time_first_job(args.overrides) for _ in range(args.runs)]
        print(
            f"first job of -m {' '.join(args.overrides)}: " + " / ".join(f"{s:.2f}" for s in seconds) + " s"
        )


if __name__ == "__main__":
    main()

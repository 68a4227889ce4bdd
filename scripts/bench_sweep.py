#!/usr/bin/env python
"""The same sweep one job at a time and k jobs at a time: wall time, per-job metrics, where the time went.

    python scripts/bench_sweep.py                       # 8 tiny jobs (synthetic data, widths 8/16/32, 1 epoch), k=2
    python scripts/bench_sweep.py --jobs 2 4 -- trainer=gpu 'model.widths=[64,256,256]'   # overrides after --

Runs ``python -m downsample_lab.train -m`` with Hydra's basic launcher, then with ``hydra/launcher=parallel
hydra.launcher.n_jobs=k`` for each k, into ``--out`` (default ``outputs/bench_sweep/<time>``), and prints a
Markdown table: the sweep's wall time, its ratio to the sequential sweep, the jobs' summed phases (from each
job's ``status.json``) and whether every job's metrics equal the sequential sweep's (the CPU path is
deterministic for a seed and a number of torch threads: each k is checked against a sequential sweep whose jobs
run the threads a parallel job gets). The machine, versions and command go above the table. Run it on an idle machine:
another job on the cores makes every figure slower and the ratio meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

TINY = [
    "data.source=synthetic",
    "model.widths=[8,16,32]",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "seed=0,1,2,3,4,5,6,7",
]
PHASES = (
    "train_steps",
    "imports",
    "start",
    "fit_setup",
    "sanity_check",
    "validation",
    "checkpoints",
    "fit_end",
    "test",
    "other",
)
COMPARED = ("val/acc_best", "test/acc", "test/loss", "test/consistency")


def sweep(out: Path, launcher: list[str], overrides: list[str], threads: int | None) -> tuple[float, dict]:
    """Run one sweep into ``out``; its wall seconds and each job's status.json. ``threads``: OMP_NUM_THREADS."""
    command = [sys.executable, "-m", "downsample_lab.train", "-m", *launcher, *TINY, *overrides]
    command.append(f"hydra.sweep.dir={out}")
    env = dict(os.environ)
    if threads is not None:  # torch's intra-op threads in a sequential sweep (a parallel job sets its own)
        env["OMP_NUM_THREADS"] = str(threads)
    print("$", *([f"OMP_NUM_THREADS={threads}"] if threads else []), *command[1:], flush=True)
    t0 = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        sys.exit(f"the sweep failed ({result.returncode}):\n{result.stderr[-3000:]}")
    jobs = {}
    for job in sorted(out.iterdir()):
        if (job / "status.json").is_file():
            jobs[job.name] = json.loads((job / "status.json").read_text())
    return wall, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs",
        type=int,
        nargs="*",
        default=[2],
        help="k: jobs at once (default 2; none: the sequential sweep only)",
    )
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_sweep") / stamp)
    parser.add_argument("overrides", nargs="*", help="overrides for every job, after --")
    args = parser.parse_args()

    import torch

    from downsample_lab import __version__
    from downsample_lab.bench.machine import hardware, versions
    from downsample_lab.run.sweep import cpu_count

    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True).stdout.strip()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"Machine: {json.dumps(hardware(device))}")
    print(f"Versions: {json.dumps(versions())}; downsample_lab {__version__}, commit {commit or '?'}")
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; Python {platform.python_version()}")
    # (name, launcher overrides, threads per job, OMP_NUM_THREADS, directory): the sequential sweep with torch's
    # default threads; per k, a sequential one whose jobs run the threads a parallel job gets (the same float
    # reductions: the reference for the metrics) and the parallel one.
    default = torch.get_num_threads()
    runs = [("one at a time", [], default, None, args.out / "sequential")]
    for k in args.jobs:
        t = max(1, cpu_count() // k)
        if all(r[2] != t for r in runs):
            runs.append((f"one at a time, {t} thread(s)", [], t, t, args.out / f"sequential_t{t}"))
        launcher = ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={k}"]
        runs.append((f"{k} at once", launcher, t, None, args.out / f"k{k}"))
    results = [(name, t, *sweep(out, launcher, args.overrides, env)) for name, launcher, t, env, out in runs]
    sequential = {t: jobs for name, t, _, jobs in results if name.startswith("one at a time")}

    print()
    # outside the jobs: Python and Hydra's start, the sweep's check, Hydra's work per job (composing its config,
    # writing .hydra/) and the exit (the imports are the first job's "imports" phase, from 2026-12-01 on); only a
    # sequential sweep's wall time is the sum of its parts
    header = ["sweep", "threads per job", "wall s", "ratio", "jobs' wall s", "outside the jobs s"]
    header += [p.replace("_", " ") for p in PHASES]
    print("| " + " | ".join([*header, "metrics as one at a time"]) + " |")
    print("|---" * (len(header) + 1) + "|")
    for name, t, wall, jobs in results:
        sums = {p: sum(j.get("times", {}).get(p, 0.0) for j in jobs.values()) for p in (*PHASES, "wall")}
        reference = sequential[t]
        same = set(jobs) == set(reference) and all(
            jobs[n]["metrics"].get(m) == reference[n]["metrics"].get(m) for n in reference for m in COMPARED
        )
        check = "(reference)" if jobs is reference else ("yes, to the bit" if same else "**no**")
        cells = " | ".join(f"{sums[p]:.1f}" for p in PHASES)
        ratio = wall / results[0][2]
        outside = f"{wall - sums['wall']:.1f}" if name.startswith("one at a time") else "—"
        print(
            f"| {name} | {t} | {wall:.1f} | {ratio:.2f} | {sums['wall']:.1f} | {outside} | {cells} | {check} |"
        )


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""The same sweep one job at a time and k jobs at a time: wall time, per-job metrics, where the time went.

    python scripts/bench_sweep.py                       # 8 tiny jobs (synthetic data, widths 8/16/32, 1 epoch), k=2
    python scripts/bench_sweep.py --jobs 2 4 -- trainer=gpu 'model.widths=[64,256,256]'   # overrides after --

Runs ``python -m downsample_lab.train -m`` with Hydra's basic launcher, then with ``hydra/launcher=parallel
hydra.launcher.n_jobs=k`` for each k, into ``--out`` (default ``outputs/bench_sweep/<time>``), and prints a
Markdown table: the sweep's wall time, its ratio to the sequential sweep, the jobs' summed phases (from each
job's ``status.json``) and whether every job's metrics equal the sequential sweep's (the CPU path is
deterministic for a seed). The machine, versions and command go above the table. Run it on an idle machine:
another job on the cores makes every figure slower and the ratio meaningless.
"""

from __future__ import annotations

import argparse
import json
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


def sweep(out: Path, launcher: list[str], overrides: list[str]) -> tuple[float, dict[str, dict]]:
    command = [
        sys.executable,
        "-m",
        "downsample_lab.train",
        "-m",
        *launcher,
        *TINY,
        *overrides,
        f"hydra.sweep.dir={out}",
    ]
    print("$", " ".join(command[1:]), flush=True)
    t0 = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
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
    parser.add_argument("--jobs", type=int, nargs="+", default=[2], help="k: jobs at once (default 2)")
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/bench_sweep") / time.strftime("%Y-%m-%d_%H-%M-%S")
    )
    parser.add_argument("overrides", nargs="*", help="overrides for every job, after --")
    args = parser.parse_args()

    import torch

    from downsample_lab import __version__
    from downsample_lab.machine import hardware, versions

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"Machine: {json.dumps(hardware(device))}")
    print(f"Versions: {json.dumps(versions())}; downsample_lab {__version__}, commit {commit or '?'}")
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; Python {platform.python_version()}")
    runs = [("one at a time", [], args.out / "sequential")]
    runs += [
        (f"{k} at once", ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={k}"], args.out / f"k{k}")
        for k in args.jobs
    ]
    results = []
    for name, launcher, out in runs:
        results.append((name, *sweep(out, launcher, args.overrides)))

    reference = results[0][2]
    print()
    print(
        "| sweep | wall s | ratio | jobs' wall s | "
        + " | ".join(p.replace("_", " ") for p in PHASES)
        + " | metrics as sequential |"
    )
    print("|---" * (len(PHASES) + 5) + "|")
    for name, wall, jobs in results:
        sums = {p: sum(j.get("times", {}).get(p, 0.0) for j in jobs.values()) for p in (*PHASES, "wall")}
        same = all(
            jobs[n]["metrics"].get(m) == reference[n]["metrics"].get(m) for n in reference for m in COMPARED
        ) and set(jobs) == set(reference)
        cells = " | ".join(f"{sums[p]:.1f}" for p in PHASES)
        print(
            f"| {name} | {wall:.1f} | {wall / results[0][1]:.2f} | {sums['wall']:.1f} | {cells} | {'yes' if same else '**no**'} |"
        )


if __name__ == "__main__":
    main()

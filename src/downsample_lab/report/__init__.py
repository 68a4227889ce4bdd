"""Ablation report: ``python -m downsample_lab.report <sweep or outputs dir> [--out DIR]``.

Finds every training run below the directory, reads its TensorBoard scalars and HParams with tbparse,
groups the runs into arms (every hyperparameter that differs between runs, except the seed and the bookkeeping
keys of :data:`IGNORED_KEYS`), and writes to ``--out`` (default: the directory itself):

- ``report.md``: one row per arm (n, test accuracy mean ± std and 95% CI, best validation accuracy, shift
  consistency when logged, parameters, FLOPs, training throughput, Welch's t-test against the max-pool arm),
  and the runs left out of the statistics (failed, still running, incomplete) with the reason;
- ``results.csv``: the same table, one row per arm, unrounded (accuracies as fractions);
- ``runs.csv``: one row per run found, with its status, arm and final numbers;
- ``val_acc.png`` (validation accuracy per epoch, mean and min–max band per arm) and
  ``acc_vs_throughput.png`` (test accuracy against training images/s, ± std error bars);
- ``bench.csv`` when bench runs are below the directory: their images/s per setting and strategy, repeated runs
  summed up with their uncertainty (:mod:`~downsample_lab.report.bench`; a section of ``report.md`` too).

Runs whose model collapsed are left out of the statistics and listed with the reason (``--keep-degenerate``
counts them).

One module for each step:

- :mod:`~downsample_lab.report.read`: find run directories, load each into a :class:`Run`, the tidy run table;
- :mod:`~downsample_lab.report.arms`: which keys define an arm, the runs grouped into arms, their baselines;
- :mod:`~downsample_lab.report.stats`: mean/std/CI, Welch's t-test, the results table;
- :mod:`~downsample_lab.report.bench`: the bench runs' records, per setting and strategy;
- :mod:`~downsample_lab.report.render`: numbers and tables as text (markdown, console, ``runs.csv``);
- :mod:`~downsample_lab.report.plots`: the two plots;
- :mod:`~downsample_lab.report.document`: the text of ``report.md``;
- :mod:`~downsample_lab.report.build`: :func:`build_report` and the command line, :func:`main`.

The package reads files only; it imports neither torch nor Lightning, so it starts in about a second.
"""

from downsample_lab.report.arms import BASELINE_KEY, BASELINE_VALUE, IGNORED_KEYS, Arm, arm_keys, group_runs
from downsample_lab.report.build import REPORT_FILES, Report, build_report, main
from downsample_lab.report.plots import plot_acc_vs_throughput, plot_val_curves
from downsample_lab.report.read import (
    Run,
    degenerate_reason,
    find_run_dirs,
    is_run_dir,
    is_training_run,
    load_run,
    merge_hparams,
    runs_frame,
    val_curve,
)
from downsample_lab.report.stats import mean_std_ci, summarize, warmup_excluded, welch_p

__all__ = [
    "BASELINE_KEY",
    "BASELINE_VALUE",
    "IGNORED_KEYS",
    "REPORT_FILES",
    "Arm",
    "Report",
    "Run",
    "arm_keys",
    "build_report",
    "degenerate_reason",
    "find_run_dirs",
    "group_runs",
    "is_run_dir",
    "is_training_run",
    "load_run",
    "main",
    "mean_std_ci",
    "merge_hparams",
    "plot_acc_vs_throughput",
    "plot_val_curves",
    "runs_frame",
    "summarize",
    "val_curve",
    "warmup_excluded",
    "welch_p",
]

"""The report from end to end: :func:`build_report` reads every run below a directory and writes the files, and
:func:`main` is the command ``python -m downsample_lab.report DIR [--out DIR]``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from downsample_lab.console import counted
from downsample_lab.errors import UserError, exit_with_error
from downsample_lab.report.arms import arm_keys, group_runs, run_labels
from downsample_lab.report.bench import bench_frame, bench_summary, read_bench_runs
from downsample_lab.report.document import (
    NOTHING_TO_COMPARE,
    Report,
    baseline_caveats,
    busy_bench,
    report_markdown,
)
from downsample_lab.report.plots import plot_acc_vs_throughput, plot_shift_robustness, plot_val_curves
from downsample_lab.report.read import (
    DEGENERATE,
    INTERRUPTED,
    NOT_STARTED,
    Run,
    degenerate_reason,
    find_run_dirs,
    is_training_run,
    load_run,
)
from downsample_lab.report.render import bench_table, display_table, plain_table, runs_table, shift_table
from downsample_lab.report.stats import shift_summary, summarize, warmup_excluded
from downsample_lab.run.exit import freeze_at_exit

REPORT_FILES = ("report.md", "results.csv", "runs.csv", "val_acc.png", "acc_vs_throughput.png")
SHIFT_FILES = ("shift_robustness.csv", "shift_robustness.png")  # when a counted run logged the curves
BENCH_CSV = "bench.csv"  # when bench runs with a bench.json are below the directory

# The columns of the arm table that the command prints (those the table has).
CONSOLE_COLUMNS = (
    "arm",
    "n",
    "test acc %",
    "Δ vs baseline, pp [95% CI]",
    "p Holm",
    "TTA test acc %",
    "TTA Δ, pp [95% CI]",
    "TTA p Holm",
    "shift consistency %",
    "train images/s",
)


def build_report(root: Path, out: Path | None = None, keep_degenerate: bool = False) -> Report:
    """Read every run below ``root``, write report.md, results.csv, runs.csv and the plots to ``out`` (with no
    training run below it, report.md alone, and bench.csv for bench runs).

    A completed run whose model collapsed (:func:`~downsample_lab.report.read.degenerate_reason`) is left out
    of the statistics with the reason (status ``degenerate``); ``keep_degenerate`` counts it, without its shift
    consistency (a constant predictor is perfectly consistent).

    Raises:
        UserError: ``root`` is not a directory, no run directory is below it, or ``out`` is not a directory.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(
            f"{root} is not a directory; pass a sweep directory (outputs/train-multirun/<time>) or outputs/"
        )
    out = Path(out).expanduser() if out is not None else root
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a directory (it is created if missing)")
    dirs = find_run_dirs(root)
    if not dirs:
        raise UserError(
            f"no run directories below {root} (a run directory has status.json, .hydra/config.yaml or tb/); "
            "pass the directory of a sweep or outputs/"
        )
    loaded = [load_run(d) for d in dirs]
    runs = [r for r in loaded if is_training_run(r)]
    for run in runs:
        flag_degenerate(run, keep_degenerate)
    skipped = [r for r in loaded if not is_training_run(r)]
    arms = group_runs(runs)
    keys = arm_keys([r for r in runs if r.status in ("completed", DEGENERATE)])
    results = summarize(arms)
    labels = run_labels(runs, arms)
    shift = shift_summary(arms)
    records, bench_left_out = read_bench_runs(skipped)
    bench = bench_summary(bench_frame(records))
    rep = Report(
        root=root,
        out=out,
        runs=runs,
        skipped=skipped,
        arms=arms,
        keys=keys,
        labels=labels,
        results=results,
        table=display_table(results),
        shift=shift,
        shift_table=shift_table(shift, [a.label for a in arms]),
        bench=bench,
        bench_table=bench_table(bench),
        bench_count=len(records),
        bench_left_out=bench_left_out,
    )

    out.mkdir(parents=True, exist_ok=True)
    if runs:  # the ablation's files; a directory of bench or eval runs only gets report.md (and bench.csv)
        results.to_csv(out / "results.csv", index=False)
        runs_table(runs, root, labels).to_csv(out / "runs.csv", index=False)
        plot_val_curves(arms, out / "val_acc.png")
        plot_acc_vs_throughput(results, out / "acc_vs_throughput.png", warmup_excluded(arms))
    if not bench.empty:
        bench.to_csv(out / BENCH_CSV, index=False)
    if not shift.empty:
        shift.to_csv(out / "shift_robustness.csv", index=False)
        plot_shift_robustness(shift, out / "shift_robustness.png")
    rep.path.write_text(report_markdown(rep))
    return rep


def flag_degenerate(run: Run, keep: bool) -> None:
    """Mark a completed run whose model collapsed: ``degenerate`` (not counted), or, with ``keep``, counted with
    the reason noted and its consistency dropped."""
    why = degenerate_reason(run) if run.status == "completed" else ""
    if not why:
        return
    if not keep:
        run.status, run.reason = DEGENERATE, why
        return
    run.reason = f"degenerate, counted (--keep-degenerate): {why}"
    run.consistency = None
    run.shift = {tag: points for tag, points in run.shift.items() if not tag.endswith("/consistency")}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m downsample_lab.report DIR [--out OUT]``: write the report, print where and a short table."""
    freeze_at_exit()
    parser = argparse.ArgumentParser(
        prog="python -m downsample_lab.report",
        description="Compare the arms of a sweep: mean ± std, 95% CI and Welch's t-test of the test "
        "accuracy, throughput, model cost, and plots, from the TensorBoard files of every run below DIR.",
    )
    parser.add_argument(
        "dir", type=Path, help="a sweep directory (outputs/train-multirun/<time>) or outputs/"
    )
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: DIR)")
    parser.add_argument(
        "--keep-degenerate",
        action="store_true",
        help="count runs whose model collapsed (test accuracy at chance, a non-finite or exploded loss, one "
        "predicted class) in their arm's statistics; by default they are listed apart, not counted",
    )
    args = parser.parse_args(argv)
    try:
        rep = build_report(args.dir, args.out, keep_degenerate=args.keep_degenerate)
    except UserError as err:
        exit_with_error(err)
    print(f"Report: {rep.path}")
    counts = {
        s: sum(r.status == s for r in rep.runs)
        for s in ("completed", DEGENERATE, "failed", INTERRUPTED, "running", "incomplete")
    }
    n_refused = sum(r.status == NOT_STARTED for r in rep.runs)
    print(
        (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no")
        + " training runs"
        + (f"; {n_refused} stopped at start-up" if n_refused else "")
        + (
            f"; {counted(len(rep.skipped), 'run')} of other tools (eval, bench) not compared as arms"
            if rep.skipped
            else ""
        )
    )
    if rep.table.empty and counts[DEGENERATE]:
        print(f"All {counts[DEGENERATE]} completed runs collapsed (degenerate): nothing to compare; "
              "--keep-degenerate counts them.")  # fmt: skip
    elif rep.table.empty:
        if rep.runs:  # (no training run at all: the line above said so)
            print(NOTHING_TO_COMPARE)
    else:
        print(plain_table(rep.table, CONSOLE_COLUMNS))
        for line in baseline_caveats(rep.arms):
            print("Note: " + line.replace("`", ""))
    if rep.bench_count:
        print(f"\nBenchmark runs ({counted(rep.bench_count, 'run')}; all numbers in {BENCH_CSV}):")
        print(plain_table(rep.bench_table))
        if busy := busy_bench(rep):
            print("Note: " + busy)

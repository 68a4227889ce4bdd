"""Per-arm hyperparameter selection: ``python -m downsample_lab.selection TUNE_DIR [--final FINAL_DIR] [--out DIR]``.

The protocol that keeps an ablation fair when the recipe was tuned for one arm (README, "A fair comparison"):

1. a tuning sweep (``experiment=ablation_fast_tune``) runs every arm over a grid of settings (lr, weight decay)
   and a few seeds on the 45,000/5,000 train/validation split;
2. per arm, the setting with the best mean ``val/acc_best`` wins. The test set plays no part in the choice:
   test accuracies of the tuning runs are not even read;
3. each arm's winning setting is trained again on fresh seeds (the commands are printed and written), and
   ``--final`` reports those runs' test accuracy: mean ± std, 95% CI, Welch's p against max-pooling, and the
   accuracy with test-time augmentation when logged.

The arm is ``model.downsample``; the settings are the other keys that differ between the tuning runs (besides
the seed and bookkeeping keys). Writes ``selection.md`` and ``selection.csv`` to ``--out`` (default: TUNE_DIR).
Reads files only, through :mod:`downsample_lab.report`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from downsample_lab.errors import UserError, exit_with_error
from downsample_lab.report import read, render, stats

ARM_KEY = stats.BASELINE_KEY  # model.downsample
FINAL_COMMAND = "python -m downsample_lab.train -m experiment=ablation_fast"
FINAL_SEEDS = "0,1,2,3,4,5,6,7,8,9"


@dataclass
class Choice:
    """One arm's winning setting in the tuning sweep."""

    arm: str  # the value of model.downsample
    setting: dict[str, Any]  # setting key → value
    val_mean: float
    val_std: float
    n: int
    tried: int  # settings of this arm with at least one completed run
    runner_up: float  # the second-best mean val/acc_best (NaN if only one setting)
    tune_seeds: set[str]


def _completed(root: Path) -> list[read.Run]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{root} is not a directory; pass a sweep directory (outputs/train-multirun/<time>)")
    runs = [read.load_run(d) for d in read.find_run_dirs(root)]
    done = [r for r in runs if read.is_training_run(r) and r.status == "completed"]
    if not done:
        raise UserError(f"no completed training runs below {root}; pass the directory of a finished sweep")
    return done


def select(tune_runs: Sequence[read.Run]) -> tuple[list[str], list[Choice]]:
    """The setting keys and, per arm, the setting with the best mean ``val/acc_best``; arms in report order."""
    keys = stats.arm_keys(tune_runs)
    if ARM_KEY not in keys:
        raise UserError(f"the tuning runs do not differ in {ARM_KEY}; pass a sweep over the strategies")
    setting_keys = [k for k in keys if k != ARM_KEY]
    cells: dict[Any, dict[tuple, list[read.Run]]] = {}
    for run in tune_runs:
        arm = run.hparams.get(ARM_KEY)
        setting = tuple(read.canonical(run.hparams.get(k)) for k in setting_keys)
        cells.setdefault(arm, {}).setdefault(setting, []).append(run)
    choices = []
    for arm, settings in cells.items():
        scored = []
        for setting, runs in settings.items():
            vals = [r.val_acc_best for r in runs if r.val_acc_best is not None]
            if vals:
                mean, std, _, _ = stats.mean_std_ci(vals)
                scored.append((mean, std, len(vals), setting, runs))
        if not scored:
            raise UserError(
                f"no val/acc_best logged for {ARM_KEY}={arm}; the tuning runs need a validation split"
            )
        scored.sort(key=lambda s: -s[0])
        mean, std, n, setting, runs = scored[0]
        choices.append(
            Choice(
                arm=str(arm),
                setting={k: runs[0].hparams.get(k) for k in setting_keys},
                val_mean=mean,
                val_std=std,
                n=n,
                tried=len(scored),
                runner_up=scored[1][0] if len(scored) > 1 else float("nan"),
                tune_seeds={r.seed for s in scored for r in s[4]},
            )
        )
    choices.sort(key=lambda c: stats.arm_order({ARM_KEY: c.arm}, [ARM_KEY]))
    return setting_keys, choices


def final_commands(choices: Sequence[Choice], sweep_dir: str, command: str = FINAL_COMMAND) -> list[str]:
    """One sweep command per arm: its winning setting on fresh seeds, all into ``sweep_dir``."""
    lines = []
    for c in choices:
        setting = " ".join(f"{k}={read.value_text(v)}" for k, v in c.setting.items())
        lines.append(
            f"{command} {ARM_KEY}={c.arm} {setting} seed={FINAL_SEEDS} hydra.sweep.dir={sweep_dir}".replace(
                "  ", " "
            )
        )
    return lines


def final_results(choices: Sequence[Choice], final_runs: Sequence[read.Run]) -> pd.DataFrame:
    """Per arm: the test accuracy of the final runs that used its winning setting (fresh seeds only)."""
    by_arm: dict[str, list[read.Run]] = {}
    for c in choices:
        by_arm[c.arm] = [
            r
            for r in final_runs
            if str(r.hparams.get(ARM_KEY)) == c.arm
            and all(read.canonical(r.hparams.get(k)) == read.canonical(v) for k, v in c.setting.items())
            and r.seed not in c.tune_seeds
        ]
    baseline = by_arm.get(stats.BASELINE_VALUE, [])
    base_acc = [r.test_acc for r in baseline]
    rows = []
    for c in choices:
        runs = by_arm[c.arm]
        acc = [r.test_acc for r in runs]
        mean, std, low, high = stats.mean_std_ci(acc)
        tta = [r.test_acc_tta for r in runs if r.test_acc_tta is not None]
        tta_mean, tta_std, _, _ = stats.mean_std_ci(tta)
        p = stats.welch_p(acc, base_acc) if c.arm != stats.BASELINE_VALUE else float("nan")
        rows.append(
            {"arm": c.arm, "n": len(runs), "seeds": " ".join(sorted((r.seed for r in runs), key=_seed_order)),
             "test_acc_mean": mean, "test_acc_std": std, "test_acc_ci95_low": low, "test_acc_ci95_high": high,
             "p_vs_maxpool": p, "test_acc_tta_mean": tta_mean, "test_acc_tta_std": tta_std}
        )  # fmt: skip
    return pd.DataFrame(rows)


def _seed_order(seed: str) -> tuple:
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def _setting_text(setting: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={read.value_text(v)}" for k, v in setting.items()) or "(one setting)"


def selection_table(choices: Sequence[Choice], final: pd.DataFrame | None) -> pd.DataFrame:
    """The table of ``selection.md``: the winning setting per arm, and its final test accuracy if any."""
    rows = []
    final_rows = final.set_index("arm") if final is not None else None
    for c in choices:
        row = {
            "arm": f"{ARM_KEY}={c.arm}",
            "chosen setting": _setting_text(c.setting),
            "val acc_best % (tuning)": render.fmt_mean_std(c.val_mean, c.val_std) + f" (n={c.n})",
            "settings tried": c.tried,
            "runner-up val %": read.DASH if np.isnan(c.runner_up) else f"{100 * c.runner_up:.2f}",
        }
        if final_rows is not None:
            f = final_rows.loc[c.arm]
            row["n"] = int(f.n)
            row["test acc %"] = render.fmt_mean_std(f.test_acc_mean, f.test_acc_std) if f.n else read.DASH
            row["95% CI"] = render.fmt_ci(f.test_acc_ci95_low, f.test_acc_ci95_high)
            row["p vs maxpool"] = render.fmt_p(f.p_vs_maxpool)
            row["test acc TTA %"] = (
                render.fmt_mean_std(f.test_acc_tta_mean, f.test_acc_tta_std) if f.n else read.DASH
            )
        rows.append(row)
    return pd.DataFrame(rows)


def build_selection(
    tune_dir: Path, final_dir: Path | None = None, out: Path | None = None, command: str = FINAL_COMMAND
) -> tuple[Path, pd.DataFrame, list[str]]:
    """Select per arm from ``tune_dir``, report ``final_dir`` if given; write selection.md/.csv; return the
    markdown path, the table and the final sweep's commands."""
    tune_dir = Path(tune_dir).expanduser()
    keys, choices = select(_completed(tune_dir))
    final = final_results(choices, _completed(final_dir)) if final_dir is not None else None
    final_dir_text = str(final_dir) if final_dir is not None else "outputs/train-multirun/final"
    commands = final_commands(choices, final_dir_text, command)
    table = selection_table(choices, final)
    out = Path(out).expanduser() if out is not None else tune_dir
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "selection.csv", index=False)
    lines = [
        f"# Per-arm selection: {tune_dir}",
        "",
        f"Per arm ({ARM_KEY}), the setting of {', '.join(keys) or '(none)'} with the best mean val/acc_best over "
        "the tuning seeds (validation split only; test accuracy plays no part in the choice)"
        + (f"; then its test accuracy over fresh seeds from {final_dir}." if final is not None else "."),
        "",
        render.markdown_table(table),
        "",
    ]
    if final is not None:
        lines += ["p: Welch's t-test of test accuracy against the maxpool arm's final runs, uncorrected.", ""]
    lines += ["Final runs (each arm's winning setting, fresh seeds):", "", "```bash", *commands, "```", ""]
    path = out / "selection.md"
    path.write_text("\n".join(lines))
    return path, table, commands


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m downsample_lab.selection",
        description="Per arm, pick the setting with the best mean val/acc_best in a tuning sweep (never test "
        "accuracy), print the final runs' commands, and with --final report those runs' test accuracy.",
    )
    parser.add_argument("tune_dir", type=Path, help="the tuning sweep (experiment=ablation_fast_tune)")
    parser.add_argument(
        "--final", type=Path, default=None, help="the sweep of the winning settings, fresh seeds"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write selection.md (default: TUNE_DIR)"
    )
    parser.add_argument(
        "--command", default=FINAL_COMMAND, help=f"the final runs' command (default: {FINAL_COMMAND})"
    )
    args = parser.parse_args(argv)
    try:
        path, table, commands = build_selection(args.tune_dir, args.final, args.out, args.command)
    except UserError as err:
        exit_with_error(err)
    print(f"Selection: {path}")
    print(render.plain_table(table))
    if args.final is None:
        print("\nNext, the final runs:\n" + "\n".join(commands))


if __name__ == "__main__":
    main()

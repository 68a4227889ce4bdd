"""Per-arm hyperparameter selection: ``python -m downsample_lab.report.selection TUNE_DIR [--final FINAL_DIR] [--weights
final|best] [--out DIR]``.

The protocol that keeps an ablation fair when the recipe was tuned for one arm (docs/studies.md, "A fair comparison"):

1. a tuning sweep (``experiment=ablation_fast_tune``) runs every arm over a grid of settings (lr, weight decay)
   and a few seeds on the 45,000/5,000 train/validation split;
2. per arm, the setting with the best mean validation accuracy wins, measured on the same weights that the
   final runs will report (``--weights``): ``final`` (the default) ranks by the last ``val/acc``, the weights at
   the end of training, which the final runs test with ``data.val_size=0`` (``eval.test_weights=auto`` →
   final); ``best`` ranks by ``val/acc_best``, for final runs that test their best checkpoint. The test set
   plays no part in the choice: test accuracies of the tuning runs are not even read;
3. each arm's winning setting is trained again on fresh seeds (the commands are printed and written), and
   ``--final`` reports those runs' test accuracy: mean ± std, 95% CI, the difference to max-pooling with its
   Welch 95% CI, Welch's p and its Holm-adjusted value over the arms, and the same with test-time augmentation
   when logged.

The arm is ``model.downsample``; the settings are the other keys that differ between the tuning runs (besides
the seed and bookkeeping keys). Writes ``selection.md``, ``selection.csv`` and ``final_commands.txt`` (one line
per arm) to ``--out`` (default: TUNE_DIR).
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
from downsample_lab.report import arms, read, render, stats
from downsample_lab.run.exit import freeze_at_exit
from downsample_lab.study import DATA_DIGEST

ARM_KEY = arms.BASELINE_KEY  # model.downsample
FINAL_COMMAND = "python -m downsample_lab.train -m experiment=ablation_fast"
FINAL_SEEDS = "0,1,2,3,4,5,6,7,8,9"
WEIGHTS = {
    "final": ("val_acc_final", "val/acc of the final weights (the last validation)"),
    "best": ("val_acc_best", "val/acc_best (the best epoch's checkpoint)"),
}
"""``--weights``: which validation accuracy ranks the settings (the Run attribute, and how selection.md says it)."""


@dataclass
class Choice:
    """One arm's winning setting in the tuning sweep."""

    arm: str  # the value of model.downsample
    setting: dict[str, Any]  # setting key → value
    val_mean: float
    val_std: float
    n: int
    tried: int  # settings of this arm with at least one completed run
    runner_up: float  # the second-best mean validation accuracy (NaN if only one setting)
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


def select(tune_runs: Sequence[read.Run], weights: str = "final") -> tuple[list[str], list[Choice]]:
    """The setting keys and, per arm, the setting with the best mean validation accuracy of ``weights``
    (:data:`WEIGHTS`: ``final`` or ``best``); arms in report order."""
    attribute = WEIGHTS[weights][0]
    keys = arms.arm_keys(tune_runs)
    if ARM_KEY not in keys:
        raise UserError(f"the tuning runs do not differ in {ARM_KEY}; pass a sweep over the strategies")
    _check_one_copy("tuning", tune_runs)
    # (what follows from the downsampling, e.g. model.effective_widths, and the data digest are no settings: no
    # command sets them)
    setting_keys = [k for k in keys if k not in {ARM_KEY, DATA_DIGEST, *arms.FOLLOWS_DOWNSAMPLE}]
    cells: dict[Any, dict[tuple, list[read.Run]]] = {}
    for run in tune_runs:
        arm = run.hparams.get(ARM_KEY)
        setting = tuple(read.canonical(run.hparams.get(k)) for k in setting_keys)
        cells.setdefault(arm, {}).setdefault(setting, []).append(run)
    choices = []
    for arm, settings in cells.items():
        scored = []
        for setting, runs in settings.items():
            vals = [getattr(r, attribute) for r in runs if getattr(r, attribute) is not None]
            if vals:
                mean, std, _, _ = stats.mean_std_ci(vals)
                scored.append((mean, std, len(vals), setting, runs))
        if not scored:
            raise UserError(
                f"no validation accuracy logged for {ARM_KEY}={arm}; the tuning runs need a validation split"
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
    choices.sort(key=lambda c: arms.arm_order({ARM_KEY: c.arm}, [ARM_KEY]))
    return setting_keys, choices


def final_commands(
    choices: Sequence[Choice], sweep_dir: str, command: str = FINAL_COMMAND, seeds: str = FINAL_SEEDS
) -> list[str]:
    """One sweep command per arm: its winning setting on the fresh ``seeds``, into ``sweep_dir/<arm>`` (one
    sweep directory per arm, so that each can be resumed from its own ``multirun.yaml``)."""
    lines = []
    for c in choices:
        setting = " ".join(f"{k}={read.value_text(v)}" for k, v in c.setting.items())
        line = f"{command} {ARM_KEY}={c.arm} {setting} seed={seeds} hydra.sweep.dir={sweep_dir}/{c.arm}"
        lines.append(" ".join(line.split()))
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
            and not read.degenerate_reason(
                r
            )  # a collapsed model says nothing about its arm (report.md lists it)
        ]
    baseline = by_arm.get(arms.BASELINE_VALUE, [])

    def versus_maxpool(arm: str, values: list[float], attribute: str, name: str) -> dict[str, float]:
        base = [getattr(r, attribute) for r in baseline if getattr(r, attribute) is not None]
        diff, low, high, p = stats.effect(values, base) if arm != arms.BASELINE_VALUE else (float("nan"),) * 4
        note = (
            stats.unsupported_ci(min(len(values), len(base)), low, high, (-1.0, 1.0))
            if values and base
            else ""
        )
        if note:
            low = high = float("nan")
        return {f"{name}_diff": diff, f"{name}_diff_ci95_low": low, f"{name}_diff_ci95_high": high,
                f"{name}_diff_ci95_note": note, name: p}  # fmt: skip

    rows = []
    for c in choices:
        runs = by_arm[c.arm]
        acc = [r.test_acc for r in runs]
        mean, std, low, high = stats.mean_std_ci(acc)
        note = stats.unsupported_ci(len(acc), low, high) if acc else ""
        if note:
            low = high = float("nan")
        tta = [r.test_acc_tta for r in runs if r.test_acc_tta is not None]
        tta_mean, tta_std, _, _ = stats.mean_std_ci(tta)
        rows.append(
            {"arm": c.arm, "n": len(runs), "seeds": " ".join(sorted((r.seed for r in runs), key=_seed_order)),
             "test_acc_mean": mean, "test_acc_std": std, "test_acc_ci95_low": low, "test_acc_ci95_high": high,
             "test_acc_ci95_note": note,
             **versus_maxpool(c.arm, acc, "test_acc", "p_vs_maxpool"),
             "test_acc_tta_mean": tta_mean, "test_acc_tta_std": tta_std,
             **versus_maxpool(c.arm, tta, "test_acc_tta", "p_tta_vs_maxpool")}
        )  # fmt: skip
    final = pd.DataFrame(rows)
    if not final.empty:  # one Holm family per accuracy: every arm against maxpool
        final["p_vs_maxpool_holm"] = stats.holm(final["p_vs_maxpool"])
        final["p_tta_vs_maxpool_holm"] = stats.holm(final["p_tta_vs_maxpool"])
    return final


def _seed_order(seed: str) -> tuple:
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def _setting_text(setting: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={read.value_text(v)}" for k, v in setting.items()) or "(one setting)"


def selection_table(
    choices: Sequence[Choice], final: pd.DataFrame | None, weights: str = "final"
) -> pd.DataFrame:
    """The table of ``selection.md``: the winning setting per arm, and its final test accuracy if any."""
    rows = []
    final_rows = final.set_index("arm") if final is not None else None
    for c in choices:
        row = {
            "arm": f"{ARM_KEY}={c.arm}",
            "chosen setting": _setting_text(c.setting),
            f"val {'acc' if weights == 'final' else 'acc_best'} % (tuning)": render.fmt_mean_std(
                c.val_mean, c.val_std
            )
            + f" (n={c.n})",
            "settings tried": c.tried,
            "runner-up val %": read.DASH if np.isnan(c.runner_up) else f"{100 * c.runner_up:.2f}",
        }
        if final_rows is not None:
            f = final_rows.loc[c.arm]
            row["n"] = int(f.n)
            row["test acc %"] = render.fmt_mean_std(f.test_acc_mean, f.test_acc_std) if f.n else read.DASH
            row["95% CI"] = render.fmt_ci_or_note(
                f.test_acc_ci95_low, f.test_acc_ci95_high, f.test_acc_ci95_note
            )
            row["Δ vs maxpool, pp [95% CI]"] = render.fmt_diff(
                f.p_vs_maxpool_diff, f.p_vs_maxpool_diff_ci95_low, f.p_vs_maxpool_diff_ci95_high,
                f.p_vs_maxpool_diff_ci95_note,
            )  # fmt: skip
            row["p vs maxpool"] = render.fmt_p(f.p_vs_maxpool)
            row["p Holm"] = render.fmt_p(f.p_vs_maxpool_holm)
            row["test acc TTA %"] = (
                render.fmt_mean_std(f.test_acc_tta_mean, f.test_acc_tta_std) if f.n else read.DASH
            )
            row["TTA Δ, pp [95% CI]"] = render.fmt_diff(
                f.p_tta_vs_maxpool_diff, f.p_tta_vs_maxpool_diff_ci95_low, f.p_tta_vs_maxpool_diff_ci95_high,
                f.p_tta_vs_maxpool_diff_ci95_note,
            )  # fmt: skip
            row["TTA p Holm"] = render.fmt_p(f.p_tta_vs_maxpool_holm)
        rows.append(row)
    return pd.DataFrame(rows)


def _check_weights(weights: str, final_runs: Sequence[read.Run]) -> None:
    """Refuse a ranking by other weights than those the final runs tested (``eval.test_weights``)."""
    tested = set()
    for r in final_runs:
        mode, val_size = str(r.hparams.get("eval.test_weights", "auto")), r.hparams.get("data.val_size")
        tested.add("final" if mode == "final" or (mode == "auto" and val_size in (0, 0.0)) else "best")
    if tested and tested != {weights}:
        raise UserError(
            f"--weights {weights} ranks the tuning runs by other weights than the final runs tested "
            f"({', '.join(sorted(tested))}: eval.test_weights, data.val_size); use --weights {' or '.join(sorted(tested))}"
        )


def _check_one_copy(which: str, runs: Sequence[read.Run]) -> None:
    """Refuse runs that recorded two or more data digests (two copies of CIFAR-10, e.g. the JPEG and the PNG)."""
    digests: dict[str, list[read.Run]] = {}
    for run in (r for r in runs if DATA_DIGEST in r.hparams):
        digests.setdefault(str(run.hparams[DATA_DIGEST]), []).append(run)
    if len(digests) > 1:
        each = "; ".join(f"{d}: {len(rs)} run(s), e.g. {rs[0].path}" for d, rs in sorted(digests.items()))
        raise UserError(
            f"the {which} runs read different data ({DATA_DIGEST} {each}); pass a directory whose runs all read "
            "one copy of CIFAR-10"
        )


def build_selection(
    tune_dir: Path,
    final_dir: Path | None = None,
    out: Path | None = None,
    command: str = FINAL_COMMAND,
    weights: str = "final",
    seeds: str = FINAL_SEEDS,
    sweep_dir: Path | None = None,
) -> tuple[Path, pd.DataFrame, list[str]]:
    """Select per arm from ``tune_dir`` by the validation accuracy of ``weights`` (:data:`WEIGHTS`), report
    ``final_dir`` if given; write selection.md/.csv and final_commands.txt (one final sweep command per arm, on
    ``seeds``, into ``sweep_dir/<arm>``; default ``final_dir`` or outputs/train-multirun/final); return the
    markdown path, the table and the final sweeps' commands."""
    tune_dir = Path(tune_dir).expanduser()
    keys, choices = select(_completed(tune_dir), weights)
    final = None
    if final_dir is not None:
        final_runs = _completed(final_dir)
        _check_one_copy("final", final_runs)
        _check_weights(weights, final_runs)
        final = final_results(choices, final_runs)
    target = sweep_dir if sweep_dir is not None else final_dir
    commands = final_commands(choices, str(target or "outputs/train-multirun/final"), command, seeds)
    table = selection_table(choices, final, weights)
    out = Path(out).expanduser() if out is not None else tune_dir
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "selection.csv", index=False)
    lines = [
        f"# Per-arm selection: {tune_dir}",
        "",
        f"Per arm ({ARM_KEY}), the setting of {', '.join(keys) or '(none)'} with the best mean "
        f"{WEIGHTS[weights][1]} over the tuning seeds (validation split only; test accuracy plays no part in "
        f"the choice). Ranked by these weights (`--weights {weights}`) because they are the ones the final runs "
        "test"
        + (f"; then its test accuracy over fresh seeds from {final_dir}." if final is not None else "."),
        "",
        render.markdown_table(table),
        "",
    ]
    if final is not None:
        n_tests = int(final["p_vs_maxpool"].notna().sum())
        lines += [
            "Δ: the arm's mean test accuracy minus the maxpool arm's (final runs), in percentage points, with the "
            "95% Welch confidence interval of the difference. p: two-sided Welch's t-test of the same comparison, "
            f"uncorrected; p Holm: adjusted by the Holm–Bonferroni method over the {n_tests} arms tested against "
            "maxpool (statsmodels' multipletests); the TTA columns are a family of their own.",
            "",
        ]
    lines += ["Final runs (each arm's winning setting, fresh seeds):", "", "```bash", *commands, "```", ""]
    path = out / "selection.md"
    path.write_text("\n".join(lines))
    (out / "final_commands.txt").write_text("".join(f"{c}\n" for c in commands))
    return path, table, commands


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    freeze_at_exit()
    parser = argparse.ArgumentParser(
        prog="python -m downsample_lab.report.selection",
        description="Per arm, pick the setting with the best mean validation accuracy in a tuning sweep (never "
        "test accuracy), print the final runs' commands, and with --final report those runs' test accuracy.",
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
    parser.add_argument(
        "--seeds", default=FINAL_SEEDS, help=f"the final runs' fresh seeds (default: {FINAL_SEEDS})"
    )
    parser.add_argument(
        "--sweep-dir",
        type=Path,
        default=None,
        help="where the final commands write their sweeps, one folder per arm (default: --final if given, "
        "else outputs/train-multirun/final)",
    )
    parser.add_argument(
        "--weights",
        choices=tuple(WEIGHTS),
        default="final",
        help="rank by the validation accuracy of the weights the final runs test: final (the last val/acc; "
        "final runs with data.val_size=0, the default) or best (val/acc_best; final runs that test the best "
        "checkpoint)",
    )
    args = parser.parse_args(argv)
    try:
        path, table, commands = build_selection(
            args.tune_dir, args.final, args.out, args.command, args.weights, args.seeds, args.sweep_dir
        )
    except UserError as err:
        exit_with_error(err)
    print(f"Selection: {path}")
    print(render.plain_table(table))
    if args.final is None:
        print("\nNext, the final runs:\n" + "\n".join(commands))


if __name__ == "__main__":
    main()

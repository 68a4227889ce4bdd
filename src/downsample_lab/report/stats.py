"""Statistics over the arms (:mod:`~downsample_lab.report.arms`): per arm the mean, sample std and t confidence
interval of each final number; against the baseline, the difference of means with its Welch 95% CI, Welch's
t-test p and its Holm-adjusted value over the arms of one report.

:func:`summarize` computes the numbers of ``results.csv`` from the tidy table of :func:`read.runs_frame`;
:func:`shift_summary` the shift-robustness curves of ``shift_robustness.csv``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from downsample_lab.report.arms import Arm
from downsample_lab.report.read import runs_frame, value_text

HOLM = "holm"  # the multiple-comparison correction: Holm–Bonferroni (statsmodels' multipletests)

# CIFAR-10 test error (%) without augmentation, Table 3 of Springenberg et al. 2014, "Striving for Simplicity:
# The All Convolutional Net"; shown beside an arm whose `model.name` hyperparameter is one of these keys.
PAPER_TABLE3_TEST_ERROR = {"model_c": 9.74, "strided_cnn_c": 10.19, "convpool_cnn_c": 9.31, "all_cnn_c": 9.08}
PAPER_KEY = "model.name"


def mean_std_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample std (ddof=1) and the t-distribution confidence interval; std and CI are NaN for n < 2."""
    import scipy.stats  # here: scipy takes half a second to import, --help none

    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return (math.nan,) * 4
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    if std == 0:
        return mean, 0.0, mean, mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = scipy.stats.t.interval(confidence, len(x) - 1, loc=mean, scale=std / math.sqrt(len(x)))
    return mean, std, float(low), float(high)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch's t-test p-value of ``a`` against ``b``; NaN when either has fewer than 2 values or neither
    varies."""
    import scipy.stats  # here: scipy takes half a second to import, --help none

    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return math.nan  # (no spread on either side: the t statistic is undefined, not infinite)
    # Nearly identical values (an arm whose seeds all score alike, common in short sweeps) make scipy warn
    # about precision loss in the variance; the p-value it returns (or NaN) is what the table shows.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy.stats.ttest_ind(a, b, equal_var=False).pvalue)


def effect(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """Difference of means ``mean(a) - mean(b)``, its Welch confidence interval and the two-sided Welch p-value.

    The interval and p come from scipy's Welch t-test (unequal variances, Welch–Satterthwaite degrees of
    freedom); all but the difference are NaN when either side has fewer than 2 values or neither varies.
    """
    import scipy.stats  # here: scipy takes half a second to import, --help none

    if len(a) == 0 or len(b) == 0:
        return (math.nan,) * 4
    diff = float(np.mean(a) - np.mean(b))
    p = welch_p(a, b)
    if math.isnan(p):
        return diff, math.nan, math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = scipy.stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    return diff, float(ci.low), float(ci.high), p


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values of one family of tests (statsmodels' ``multipletests``); NaN stays NaN and is not
    counted in the family."""
    from statsmodels.stats.multitest import multipletests  # imported here: only the report needs it

    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(p), math.nan)
    defined = ~np.isnan(p)
    if defined.any():
        adjusted[defined] = multipletests(p[defined], method=HOLM)[1]
    return adjusted.tolist()


# A t interval from fewer runs than this is too wide to read (n = 2: 12.7 standard errors each side).
MIN_CI_RUNS = 3


def unsupported_ci(n_runs: int, low: float, high: float, bounds: tuple[float, float] = (0.0, 1.0)) -> str:
    """Why a 95% CI cannot be shown as numbers ('' when it can): fewer than :data:`MIN_CI_RUNS` runs, or an
    interval that leaves the values an accuracy can take (``bounds``: 0–1; a difference of two: -1–1)."""
    if n_runs < MIN_CI_RUNS:
        return f"n < {MIN_CI_RUNS}"
    if not (math.isnan(low) or bounds[0] <= low <= high <= bounds[1]):
        return "outside 0–100" if bounds[0] == 0 else "outside ±100"
    return ""


def spread(
    values: pd.Series, name: str, ci: bool = False, n: bool = False, bounds: tuple[float, float] = (0.0, 1.0)
) -> dict[str, Any]:
    """``<name>_mean``, ``<name>_std`` and, if asked, the 95% CI (with ``<name>_ci95_note``: why it is not shown,
    the interval then NaN; ``bounds``: the values the quantity can take, as :func:`unsupported_ci`) and the count,
    over the logged values."""
    logged = values.dropna().tolist()
    mean, std, low, high = mean_std_ci(logged)
    out: dict[str, Any] = {f"{name}_mean": mean, f"{name}_std": std}
    if ci:
        note = unsupported_ci(len(logged), low, high, bounds) if logged else ""
        if note:
            low = high = math.nan
        out |= {f"{name}_ci95_low": low, f"{name}_ci95_high": high, f"{name}_ci95_note": note}
    if n:
        out[f"{name}_n"] = int(values.notna().sum())
    return out


def summarize(arms: Sequence[Arm]) -> pd.DataFrame:
    """One row per arm: the numbers of ``results.csv`` (accuracies as fractions, NaN where not defined)."""
    frame = runs_frame([r for arm in arms for r in arm.runs])
    position = {id(arm): i for i, arm in enumerate(arms)}
    frame["arm"] = [i for i, arm in enumerate(arms) for _ in arm.runs]

    def logged(arm: Arm, column: str) -> list[float]:
        return frame.loc[frame["arm"] == position[id(arm)], column].dropna().tolist()

    def versus_baseline(arm: Arm, column: str, name: str) -> dict[str, Any]:
        mine, theirs = logged(arm, column), (logged(arm.baseline, column) if arm.baseline else [])
        diff, low, high, p = effect(mine, theirs) if arm.baseline else (math.nan,) * 4
        note = unsupported_ci(min(len(mine), len(theirs)), low, high, (-1.0, 1.0)) if mine and theirs else ""
        if note:
            low = high = math.nan
        return {
            f"{name}_diff": diff,
            f"{name}_diff_ci95_low": low,
            f"{name}_diff_ci95_high": high,
            f"{name}_diff_ci95_note": note,
            name: p,
        }

    rows = []
    for arm in arms:
        runs = frame[frame["arm"] == position[id(arm)]]
        params, flops = logged(arm, "params"), logged(arm, "flops")
        name = str(arm.values.get(PAPER_KEY, arm.runs[0].hparams.get(PAPER_KEY)))
        rows.append(
            {
                "arm": arm.label,
                **{k: value_text(v) for k, v in arm.values.items()},
                "n": len(runs),
                "seeds": " ".join(runs["seed"]),
                **spread(runs["test_acc"], "test_acc", ci=True),
                **spread(runs["val_acc_best"], "val_acc_best"),
                **spread(runs["consistency"], "consistency", n=True),
                **spread(runs["test_acc_tta"], "test_acc_tta", ci=True, n=True),
                **versus_baseline(arm, "test_acc_tta", "welch_p_tta"),
                "params": float(np.mean(params)) if params else math.nan,
                "params_spread": (max(params) - min(params)) if params else math.nan,
                "flops_per_image": float(np.mean(flops)) if flops else math.nan,
                **spread(runs["images_per_sec"], "images_per_sec"),
                "baseline": arm.baseline.label if arm.baseline else "",
                **versus_baseline(arm, "test_acc", "welch_p"),
                "paper_test_error_pct": PAPER_TABLE3_TEST_ERROR.get(name, math.nan),
            }
        )
    results = pd.DataFrame(rows)
    if not results.empty:  # one family per accuracy: every arm's test against its baseline in this report
        results["welch_p_holm"] = holm(results["welch_p"])
        results["welch_p_tta_holm"] = holm(results["welch_p_tta"])
    return results


def shift_summary(arms: Sequence[Arm]) -> pd.DataFrame:
    """The shift-robustness curves per arm, tidy: one row per arm, curve (``circular_diag``, ...), metric
    (``acc``, ``consistency``) and shift in pixels, with mean, sample std and n over the arm's runs that logged it.
    """
    rows = []
    for arm in arms:
        values: dict[tuple[str, str, int], list[float]] = {}
        for run in arm.runs:
            for tag, points in run.shift.items():
                curve, metric = tag.split("/")[1:3]
                for shift, value in points.items():
                    values.setdefault((curve, metric, shift), []).append(value)
        for (curve, metric, shift), vals in sorted(values.items()):
            mean, std, _, _ = mean_std_ci(vals)
            rows.append({"arm": arm.label, "curve": curve, "metric": metric, "shift": shift,
                         "mean": mean, "std": std, "n": len(vals)})  # fmt: skip
    return pd.DataFrame(rows, columns=["arm", "curve", "metric", "shift", "mean", "std", "n"])


def warmup_excluded(arms: Sequence[Arm]) -> bool | None:
    """Whether the counted runs' throughput leaves out their first (warm-up) epoch: True where every run with a
    throughput had at least 2 epochs (or none had a throughput), False where none had, None for a mix."""
    excluded = {r.throughput_epochs >= 2 for arm in arms for r in arm.runs if r.images_per_sec is not None}
    return excluded.pop() if len(excluded) == 1 else (True if not excluded else None)

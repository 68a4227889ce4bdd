"""Arms and their statistics: which hyperparameters define an arm, the arms and their baselines, and per arm the
mean, sample std and t confidence interval of each final number; against the baseline, the difference of means
with its Welch 95% CI, Welch's t-test p and its Holm-adjusted value over the arms of one report.

:func:`summarize` computes the numbers of ``results.csv`` from the tidy table of :func:`read.runs_frame`;
:func:`shift_summary` the shift-robustness curves of ``shift_robustness.csv``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from downsample_lab.report.read import ABSENT, DASH, DEGENERATE, Run, canonical, runs_frame, value_text
from downsample_lab.study import ARM_KEY, BASELINE, BOOKKEEPING_KEYS, DATA_DIGEST

HOLM = "holm"  # the multiple-comparison correction: Holm–Bonferroni (statsmodels' multipletests)

# Config keys that never define an arm: the bookkeeping keys (where files live, how a run reports progress, how
# it was resumed), and `seed`, because seeds are an arm's replicates.
IGNORED_KEYS = BOOKKEEPING_KEYS | {"seed"}

# The arm every other arm is tested against: the one with this value of this key (else the first arm).
BASELINE_KEY = ARM_KEY
BASELINE_VALUE = BASELINE

# CIFAR-10 test error (%) without augmentation, Table 3 of Springenberg et al. 2014, "Striving for Simplicity:
# The All Convolutional Net"; shown beside an arm whose `model.name` hyperparameter is one of these keys.
PAPER_TABLE3_TEST_ERROR = {"model_c": 9.74, "strided_cnn_c": 10.19, "convpool_cnn_c": 9.31, "all_cnn_c": 9.08}
PAPER_KEY = "model.name"


@dataclass
class Arm:
    """Completed runs that share every arm-defining hyperparameter; ``values`` maps each arm key to its value."""

    label: str
    values: dict[str, Any]
    runs: list[Run]
    baseline: Arm | None = None  # the arm this one is tested against; None for a baseline arm
    # no baseline, because every candidate was tested on images from another source: the keys that say so
    other_images: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------
# Arms


# Keys that do nothing in a run unless another key has a value: (key prefix, that key, its value).
APPLIES_ONLY = (("data.synthetic_", "data.source", "synthetic"),)
NOT_APPLICABLE = "(not used)"


def arm_value(hparams: Mapping[str, Any], key: str) -> Any:
    """A run's value of ``key`` as an arm sees it: :data:`NOT_APPLICABLE` where the key does nothing in that run
    (``data.synthetic_train_size`` of a ``data.source=folder`` run), :data:`ABSENT` where the run lacks it."""
    for prefix, needs, value in APPLIES_ONLY:
        if key.startswith(prefix) and hparams.get(needs) != value:
            return NOT_APPLICABLE
    return hparams.get(key, ABSENT)


def arm_keys(runs: Sequence[Run]) -> list[str]:
    """The hyperparameters whose values differ between the ``runs`` they apply to, less :data:`IGNORED_KEYS`;
    baseline key first."""
    keys = set().union(*(r.hparams for r in runs)) - IGNORED_KEYS if runs else set()
    differing = {
        k for k in keys if len({canonical(arm_value(r.hparams, k)) for r in runs} - {NOT_APPLICABLE}) > 1
    }
    return sorted(differing, key=lambda k: (k != BASELINE_KEY, k))


def arm_label(hparams: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``model.downsample=conv, model.kernel_size=5`` (the keys that apply to the arm); ``all runs`` when no key
    differs."""
    values = {k: arm_value(hparams, k) for k in keys}
    return ", ".join(f"{k}={value_text(v)}" for k, v in values.items() if v != NOT_APPLICABLE) or "all runs"


def run_labels(runs: Sequence[Run], arms: Sequence[Arm]) -> dict[Path, str]:
    """Each run's arm label: a counted run's arm; for a run left out, its values of the keys that differ among
    all runs (so a conv run still running in a sweep whose completed runs are all max-pool still says conv).

    Runs whose HParams never reached TensorBoard (failed early) do not choose the keys: their config says
    ``trainer.precision=auto`` where the others record the precision that ran.
    """
    labels = {run.path: arm.label for arm in arms for run in arm.runs}
    keys = arm_keys([r for r in runs if r.hparams_in_tb] or [r for r in runs if r.hparams])
    for run in runs:
        if run.path not in labels:
            labels[run.path] = arm_label(run.hparams, keys) if run.hparams else DASH
    return labels


def is_baseline(values: Mapping[str, Any]) -> bool:
    """Whether an arm with these values is a baseline (``model.downsample=maxpool``)."""
    return values.get(BASELINE_KEY) == BASELINE_VALUE


def arm_order(values: Mapping[str, Any], keys: Sequence[str]) -> tuple:
    """The sort key of an arm: baseline first, then by each key's value, numbers numerically, else as text."""
    parts = []
    for k in keys:
        v = canonical(values.get(k, ABSENT))
        parts.append((0, v, "") if isinstance(v, float) else (1, 0.0, str(v)))
    return (not is_baseline(values), *parts)


# Keys that tell the test images apart: an arm is never tested against a baseline that read others. (Two copies
# of one source differ in the data digest the runs record; runs older than it only in ``data.root``, which is
# bookkeeping: :func:`data_roots` points them out.)
TEST_SET_KEYS = ("data.source", "data.synthetic_test_size", DATA_DIGEST)


# Arm keys that follow from the downsampling itself: what ``model.match_params=true`` built for each strategy.
FOLLOWS_DOWNSAMPLE = {"model.effective_widths"}


def _differing(arm: Arm, other: Arm, keys: Sequence[str]) -> list[str]:
    """The ``keys`` whose values differ between two arms, as arms see them; the baseline key and the keys that
    follow from it (:data:`FOLLOWS_DOWNSAMPLE`) aside."""
    return [
        k
        for k in keys
        if k != BASELINE_KEY
        and k not in FOLLOWS_DOWNSAMPLE
        and k in arm.values
        and canonical(arm.values[k]) != canonical(other.values[k])
    ]


def group_runs(runs: Sequence[Run]) -> list[Arm]:
    """Group the completed ``runs`` into arms and pair each arm with its baseline.

    The baseline of an arm is the max-pool arm (``model.downsample=maxpool``) that agrees with it on every
    other arm key (in a downsample × kernel-size sweep, conv k=5 is tested against maxpool k=5); failing that,
    the max-pool arm that agrees on the most keys (the fair study's arms each keep their own tuned lr), first
    in arm order on a tie; when the sweep has no max-pool run, the first arm. Only an arm tested on the same
    images (:data:`TEST_SET_KEYS`: source, size, data digest) can be a baseline: an arm with none has no baseline (its
    ``other_images`` names the keys), and :func:`baseline_differences` names what else an arm and its baseline
    differ in. When the sweep has max-pool runs but every one collapsed (degenerate), no arm has a baseline:
    :func:`lost_baseline` says so. The keys that tell arms apart come from the degenerate runs too, so an arm
    whose every run collapsed still names the others as they are.
    """
    done = [r for r in runs if r.status == "completed"]
    keys = arm_keys([r for r in runs if r.status in ("completed", DEGENERATE)])
    groups: dict[tuple, list[Run]] = {}
    for run in done:
        groups.setdefault(tuple(canonical(arm_value(run.hparams, k)) for k in keys), []).append(run)
    arms = []
    for members in groups.values():
        values = {k: arm_value(members[0].hparams, k) for k in keys}
        arms.append(Arm(arm_label(members[0].hparams, keys), values, members))
    arms.sort(key=lambda a: arm_order(a.values, keys))

    pools = [a for a in arms if is_baseline(a.values)]
    if not pools and lost_baseline(runs):
        return arms  # nothing to test against: not another arm in its place
    for i, arm in enumerate(arms):
        if is_baseline(arm.values):
            continue
        candidates = pools or arms[:i]  # no max-pool arm: an earlier arm, the first on the same images
        same_images = [a for a in candidates if not _differing(arm, a, TEST_SET_KEYS)]
        if not pools:
            arm.baseline = same_images[0] if same_images else None
        else:  # max() keeps the first of the arms that differ in the fewest keys
            arm.baseline = max(same_images, key=lambda a: -len(_differing(arm, a, keys)), default=None)
        if arm.baseline is None and candidates:
            arm.other_images = sorted({k for a in candidates for k in _differing(arm, a, TEST_SET_KEYS)})
    return arms


def baseline_differences(arm: Arm) -> list[str]:
    """The arm keys other than ``model.downsample`` in which ``arm`` and its max-pool baseline differ ([] without
    one; and in a sweep with no max-pool arm, whose arms are all tested against the first by design)."""
    if arm.baseline is None or not is_baseline(arm.baseline.values):
        return []
    return _differing(arm, arm.baseline, list(arm.values))


def data_roots(arm: Arm) -> set[str]:
    """The image folders (``data.root`` of ``data.source=folder``) that an arm's runs without a data digest
    (:data:`~downsample_lab.study.DATA_DIGEST`: runs written before it existed) read, ``~`` expanded. The key is
    bookkeeping (a copy may move), so such runs on two copies, say the JPEG and the PNG one, share an arm: the
    report can only say so. Runs with a digest are split by it. (A relative root is as the run's command gave
    it. The torchvision source's files are the same checksummed archive under any root.)"""
    return {
        os.path.expanduser(str(r.hparams["data.root"]))
        for r in arm.runs
        if r.hparams.get("data.source") == "folder"
        and r.hparams.get("data.root") is not None
        and DATA_DIGEST not in r.hparams
    }


def lost_baseline(runs: Sequence[Run]) -> list[Run]:
    """The max-pool runs of a sweep none of whose max-pool runs is counted (every one degenerate); else []."""
    pool = [
        r
        for r in runs
        if r.status in ("completed", DEGENERATE) and r.hparams.get(BASELINE_KEY) == BASELINE_VALUE
    ]
    return pool if pool and all(r.status == DEGENERATE for r in pool) else []


# ----------------------------------------------------------------------------------------------------------
# Statistics


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

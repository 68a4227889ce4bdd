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
  ``acc_vs_throughput.png`` (test accuracy against training images/s, ± std error bars).

This module reads files only; it imports neither torch nor Lightning, so it starts in about a second.
"""

from __future__ import annotations

import argparse
import json
import math
import textwrap
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from downsample_lab import runs
from downsample_lab.errors import UserError, exit_with_error

# Config keys that never define an arm: the bookkeeping keys (where files live, how a run reports progress, how
# it was resumed), and `seed`, because seeds are an arm's replicates.
IGNORED_KEYS = runs.BOOKKEEPING_KEYS | {"seed"}

# The arm every other arm is tested against: the one with this value of this key (else the first arm).
BASELINE_KEY = "model.downsample"
BASELINE_VALUE = "maxpool"

# CIFAR-10 test error (%) without augmentation, Table 3 of Springenberg et al. 2014, "Striving for Simplicity:
# The All Convolutional Net"; shown beside an arm whose `model.name` hyperparameter is one of these keys.
PAPER_TABLE3_TEST_ERROR = {"model_c": 9.74, "strided_cnn_c": 10.19, "convpool_cnn_c": 9.31, "all_cnn_c": 9.08}
PAPER_KEY = "model.name"

# Scalar tags written by train.py (Classifier, EpochThroughput).
TEST_ACC = "test/acc"
VAL_ACC = "val/acc"
VAL_ACC_BEST = "val/acc_best"
CONSISTENCY = "test/consistency"
TEST_ACC_TTA = "test/acc_tta"
PARAMS = "model/params"
FLOPS = "model/flops_per_image"
IMAGES_PER_SEC = "train/images_per_sec"
EPOCH = "epoch"  # Lightning's epoch counter, in runs written before train.py stopped logging it
EPOCH_TIME = "train/epoch_time"

NOT_STARTED = "not started"  # the status of a run that failed before its TensorBoard run existed
REPORT_FILES = ("report.md", "results.csv", "runs.csv", "val_acc.png", "acc_vs_throughput.png")
DASH = "—"
_ABSENT = "(unset)"  # the value of a key that a run's config does not have (e.g. a key added later)


@dataclass
class Run:
    """One run directory as the report sees it.

    ``status`` is ``completed`` (counted in the statistics), ``failed``, ``not started`` (failed before
    training began, e.g. a config or resume refused at start-up: no TensorBoard run), ``running`` or
    ``incomplete``; ``reason`` says why a run is not counted. ``task`` is the tool that wrote the run (Hydra's
    job name: ``train``, ``eval``, ``bench``), None when unknown. Accuracies are fractions;
    ``images_per_sec`` is the mean of the per-epoch throughput without the first (warm-up) epoch when there
    are at least two (``throughput_epochs`` counts the epochs it has).
    """

    path: Path
    status: str
    reason: str = ""
    task: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    hparams_in_tb: bool = False  # False: read from .hydra/config.yaml alone (precision "auto", not what ran)
    test_acc: float | None = None
    val_acc_best: float | None = None
    consistency: float | None = None
    test_acc_tta: float | None = None  # with test-time augmentation (eval.tta_level > 0)
    params: float | None = None
    flops: float | None = None
    images_per_sec: float | None = None
    throughput_epochs: int = 0
    val_curve: dict[int, float] = field(default_factory=dict)  # epoch (1-based) → val/acc

    @property
    def seed(self) -> str:
        """The run's seed as text, or the dash when unknown."""
        return _display(self.hparams["seed"]) if "seed" in self.hparams else DASH


@dataclass
class Arm:
    """Completed runs that share every arm-defining hyperparameter; ``values`` maps each arm key to its value."""

    label: str
    values: dict[str, Any]
    runs: list[Run]
    baseline: Arm | None = None  # the arm this one is tested against; None for a baseline arm


# ----------------------------------------------------------------------------------------------------------
# Finding and reading runs


def is_run_dir(path: Path) -> bool:
    """A run directory holds ``status.json``, ``.hydra/config.yaml`` or a ``tb/`` folder."""
    return (
        (path / "status.json").is_file()
        or (path / ".hydra" / "config.yaml").is_file()
        or (path / "tb").is_dir()
    )


def find_run_dirs(root: Path) -> list[Path]:
    """Every run directory at or below ``root``, sorted; the search does not descend into a run directory."""
    if is_run_dir(root):
        return [root]
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += find_run_dirs(child)
    return found


def _canonical(value: Any) -> Any:
    """A value as TensorBoard's HParams plugin stores it: numbers as floats, lists as JSON, None as "null"."""
    if isinstance(value, bool | int | float):
        return float(value)
    if value is None:
        return "null"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return value


def _display(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return json.dumps(value)
    return "null" if value is None else str(value)


def _read_config(path: Path) -> dict[str, Any]:
    """``.hydra/config.yaml`` flattened, or {} when it is absent or unreadable."""
    from omegaconf import OmegaConf  # only needed here; Hydra saved the file, OmegaConf reads it back

    file = path / ".hydra" / "config.yaml"
    if not file.is_file():
        return {}
    try:
        return runs.flatten(OmegaConf.to_container(OmegaConf.load(file), resolve=True))
    except Exception:
        return {}


def merge_hparams(tb: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's hyperparameters: TensorBoard's HParams (what ran, e.g. the resolved precision) over the config.

    Where both agree, the config's typed value is kept (TensorBoard stores ``true`` as 1.0 and lists as JSON).
    """
    merged = dict(config)
    for key, value in tb.items():
        if key not in merged or _canonical(merged[key]) != _canonical(value):
            merged[key] = value
    return merged


def _last(scalars: pd.DataFrame, tag: str) -> float | None:
    rows = scalars[scalars["tag"] == tag]
    return None if rows.empty else float(rows["value"].iloc[-1])


def _read_events(tb_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Scalars (tag, step, value; one row per tag and step, in step order) and HParams of every event file."""
    from tbparse import SummaryReader

    reader = SummaryReader(str(tb_dir), extra_columns={"wall_time"})
    scalars = reader.scalars
    if scalars.empty:
        scalars = pd.DataFrame(columns=["step", "tag", "value", "wall_time"])
    # A resumed run logs some steps twice: keep the latest write of each.
    scalars = scalars.sort_values(["wall_time"], kind="stable").drop_duplicates(["tag", "step"], keep="last")
    scalars = scalars.sort_values(["step", "wall_time"], kind="stable").reset_index(drop=True)
    hp = reader.hparams
    hparams = {} if hp.empty else dict(zip(hp["tag"], hp["value"], strict=True))
    return scalars, hparams


def _val_curve(scalars: pd.DataFrame) -> dict[int, float]:
    """val/acc per epoch (1-based).

    The epoch is the number of ``train/epoch_time`` points (one per finished training epoch, logged at the
    step of that epoch's validation) up to the step; runs written before the project stopped logging
    Lightning's ``epoch`` scalar have that (0-based) instead; else the validation's index.
    """
    val = scalars[scalars["tag"] == VAL_ACC]
    epochs = scalars[scalars["tag"] == EPOCH].drop_duplicates("step", keep="last").set_index("step")["value"]
    ends = np.sort(scalars.loc[scalars["tag"] == EPOCH_TIME, "step"].to_numpy())
    curve = {}
    for i, (step, value) in enumerate(zip(val["step"], val["value"], strict=True)):
        if step in epochs.index:
            epoch = int(epochs[step]) + 1
        elif len(ends):
            epoch = max(int(np.searchsorted(ends, step, side="right")), 1)
        else:
            epoch = i + 1
        curve[epoch] = float(value)
    return curve


def _mean_throughput(scalars: pd.DataFrame) -> float | None:
    """Mean of the per-epoch images/s, leaving out the first epoch (warm-up) when there are at least two."""
    values = scalars.loc[scalars["tag"] == IMAGES_PER_SEC, "value"].to_numpy(dtype=float)
    if len(values) >= 2:
        values = values[1:]
    return float(values.mean()) if len(values) else None


def load_run(path: Path) -> Run:
    """Read one run directory: status.json, ``.hydra/config.yaml`` and the event files under ``tb/``.

    Never raises for a broken run: an unreadable file makes the run ``incomplete`` with the reason.
    """
    record, status_problem = runs.read_status(path)
    config = _read_config(path)
    scalars, tb_hparams, tb_problem = pd.DataFrame(columns=["step", "tag", "value"]), {}, ""
    if (path / "tb").is_dir():
        try:
            scalars, tb_hparams = _read_events(path / "tb")
        except Exception as err:
            tb_problem = f"event files unreadable ({type(err).__name__}: {err})"
    else:
        tb_problem = "no tb/ folder"
    metrics = (record or {}).get("metrics") or {}
    test_acc = _last(scalars, TEST_ACC)
    if test_acc is None and isinstance(metrics.get(TEST_ACC), int | float):
        test_acc = float(metrics[TEST_ACC])  # event file lost, status.json kept the final metrics
    run = Run(
        path=path,
        status="completed",
        hparams=merge_hparams(tb_hparams, config),
        hparams_in_tb=bool(tb_hparams),
        test_acc=test_acc,
        val_acc_best=_last(scalars, VAL_ACC_BEST),
        consistency=_last(scalars, CONSISTENCY),
        test_acc_tta=_last(scalars, TEST_ACC_TTA),
        params=_last(scalars, PARAMS),
        flops=_last(scalars, FLOPS),
        images_per_sec=_mean_throughput(scalars),
        throughput_epochs=int((scalars["tag"] == IMAGES_PER_SEC).sum()),
        task=_read_task(path),
        val_curve=_val_curve(scalars),
    )
    if run.val_acc_best is None and run.val_curve:
        run.val_acc_best = max(run.val_curve.values())
    if run.consistency is None and isinstance(metrics.get(CONSISTENCY), int | float):
        run.consistency = float(metrics[CONSISTENCY])

    state = (record or {}).get("status")
    if state == "failed" and not (path / "tb").is_dir():
        # stopped before its TensorBoard run existed: a config, resume or data error at start-up
        run.status, run.reason = NOT_STARTED, str(record.get("error") or "no error recorded")
    elif state == "failed":
        run.status, run.reason = "failed", str(record.get("error") or "no error recorded")
    elif state == "running":
        run.status = "running"
        run.reason = "status.json says running (still training, or killed before it could record a failure)"
    elif test_acc is None:
        problems = "; ".join(p for p in (status_problem, tb_problem) if p)
        run.status, run.reason = (
            "incomplete",
            f"no {TEST_ACC} logged" + (f" ({problems})" if problems else ""),
        )
    elif not run.hparams:
        run.status, run.reason = "incomplete", "no hyperparameters (no HParams in tb/, no .hydra/config.yaml)"
    return run


def _read_task(path: Path) -> str | None:
    """The tool that wrote the run: Hydra's job name in ``.hydra/hydra.yaml`` (``train``, ``eval``, ``bench``)."""
    import yaml  # a plain read: the file's interpolations need not resolve

    try:
        name = yaml.safe_load((path / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["name"]
    except Exception:  # absent or unreadable: decided from the config below
        return None
    return str(name) if name else None


def is_training_run(run: Run) -> bool:
    """A run of ``python -m downsample_lab.train``: by the job name Hydra recorded, else by its config.

    Bench runs have a model config too, so the job name decides where it is known; without it, eval runs are
    told apart by having no model config. (Training runs have a ``ckpt_path`` too, null unless resumed.)
    """
    if run.task is not None:
        return run.task == "train"
    return any(key.startswith("model.") for key in run.hparams)


# ----------------------------------------------------------------------------------------------------------
# Arms and statistics


def arm_keys(runs: Sequence[Run]) -> list[str]:
    """The hyperparameters whose values differ between ``runs``, less :data:`IGNORED_KEYS`; baseline key first."""
    keys = set().union(*(r.hparams for r in runs)) - IGNORED_KEYS if runs else set()
    differing = {k for k in keys if len({_canonical(r.hparams.get(k, _ABSENT)) for r in runs}) > 1}
    return sorted(differing, key=lambda k: (k != BASELINE_KEY, k))


def arm_label(hparams: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``model.downsample=conv, model.kernel_size=5``; ``all runs`` when no key differs."""
    return ", ".join(f"{k}={_display(hparams.get(k, _ABSENT))}" for k in keys) or "all runs"


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


def _is_baseline(values: Mapping[str, Any]) -> bool:
    return values.get(BASELINE_KEY) == BASELINE_VALUE


def _sort_key(values: Mapping[str, Any], keys: Sequence[str]) -> tuple:
    # Baseline first, then by each key's value: numbers numerically, everything else as text.
    parts = []
    for k in keys:
        v = _canonical(values.get(k, _ABSENT))
        parts.append((0, v, "") if isinstance(v, float) else (1, 0.0, str(v)))
    return (not _is_baseline(values), *parts)


def group_runs(runs: Sequence[Run]) -> list[Arm]:
    """Group the completed ``runs`` into arms and pair each arm with its baseline.

    The baseline of an arm is the max-pool arm (``model.downsample=maxpool``) that agrees with it on every
    other arm key (in a downsample × kernel-size sweep, conv k=5 is tested against maxpool k=5); failing that,
    the first max-pool arm; when no arm is max-pool, the first arm.
    """
    done = [r for r in runs if r.status == "completed"]
    keys = arm_keys(done)
    groups: dict[tuple, list[Run]] = {}
    for run in done:
        groups.setdefault(tuple(_canonical(run.hparams.get(k, _ABSENT)) for k in keys), []).append(run)
    arms = []
    for members in groups.values():
        values = {k: members[0].hparams.get(k, _ABSENT) for k in keys}
        arms.append(Arm(arm_label(values, keys), values, members))
    arms.sort(key=lambda a: _sort_key(a.values, keys))

    pools = [a for a in arms if _is_baseline(a.values)]
    for arm in arms:
        if _is_baseline(arm.values) or (not pools and arm is arms[0]):
            continue
        if not pools:
            arm.baseline = arms[0]
            continue
        others = [k for k in keys if k != BASELINE_KEY]
        matched = [
            p for p in pools if all(_canonical(p.values[k]) == _canonical(arm.values[k]) for k in others)
        ]
        arm.baseline = (matched or pools)[0]
    return arms


def mean_std_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample std (ddof=1) and the t-distribution confidence interval; std and CI are NaN for n < 2."""
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
        low, high = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=std / math.sqrt(len(x)))
    return mean, std, float(low), float(high)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch's t-test p-value of ``a`` against ``b``; NaN when either has fewer than 2 values or neither
    varies."""
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return math.nan  # (no spread on either side: the t statistic is undefined, not infinite)
    # Nearly identical values (an arm whose seeds all score alike, common in short sweeps) make scipy warn
    # about precision loss in the variance; the p-value it returns (or NaN) is what the table shows.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _values(runs: Iterable[Run], attr: str) -> list[float]:
    return [getattr(r, attr) for r in runs if getattr(r, attr) is not None]


def summarize(arms: Sequence[Arm]) -> pd.DataFrame:
    """One row per arm: the numbers of ``results.csv`` (accuracies as fractions, NaN where not defined)."""
    rows = []
    for arm in arms:
        acc = _values(arm.runs, "test_acc")
        mean, std, low, high = mean_std_ci(acc)
        val_mean, val_std, _, _ = mean_std_ci(_values(arm.runs, "val_acc_best"))
        cons_mean, cons_std, _, _ = mean_std_ci(_values(arm.runs, "consistency"))
        tta = _values(arm.runs, "test_acc_tta")
        tta_mean, tta_std, tta_low, tta_high = mean_std_ci(tta)
        ips_mean, ips_std, _, _ = mean_std_ci(_values(arm.runs, "images_per_sec"))
        params, flops = _values(arm.runs, "params"), _values(arm.runs, "flops")
        name = str(arm.values.get(PAPER_KEY, arm.runs[0].hparams.get(PAPER_KEY)))
        rows.append(
            {
                "arm": arm.label,
                **{k: _display(v) for k, v in arm.values.items()},
                "n": len(arm.runs),
                "seeds": " ".join(r.seed for r in arm.runs),
                "test_acc_mean": mean,
                "test_acc_std": std,
                "test_acc_ci95_low": low,
                "test_acc_ci95_high": high,
                "val_acc_best_mean": val_mean,
                "val_acc_best_std": val_std,
                "consistency_mean": cons_mean,
                "consistency_std": cons_std,
                "consistency_n": len(_values(arm.runs, "consistency")),
                "test_acc_tta_mean": tta_mean,
                "test_acc_tta_std": tta_std,
                "test_acc_tta_ci95_low": tta_low,
                "test_acc_tta_ci95_high": tta_high,
                "test_acc_tta_n": len(tta),
                "welch_p_tta": welch_p(tta, _values(arm.baseline.runs, "test_acc_tta"))
                if arm.baseline
                else math.nan,
                "params": float(np.mean(params)) if params else math.nan,
                "params_spread": (max(params) - min(params)) if params else math.nan,
                "flops_per_image": float(np.mean(flops)) if flops else math.nan,
                "images_per_sec_mean": ips_mean,
                "images_per_sec_std": ips_std,
                "baseline": arm.baseline.label if arm.baseline else "",
                "welch_p": welch_p(acc, _values(arm.baseline.runs, "test_acc")) if arm.baseline else math.nan,
                "paper_test_error_pct": PAPER_TABLE3_TEST_ERROR.get(name, math.nan),
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------
# Formatting


def _ok(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _pm(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    if not _ok(mean):
        return DASH
    if not _ok(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _ci(low: float, high: float) -> str:
    return f"[{low * 100:.2f}, {high * 100:.2f}]" if _ok(low) else DASH


def _p(p: float) -> str:
    return f"{p:.3g}" if _ok(p) else DASH


def _count(x: float, spread: float = 0.0) -> str:
    if not _ok(x):
        return DASH
    return f"{x:,.0f}" + (" (varies)" if _ok(spread) and spread > 0 else "")


def _mega(x: float) -> str:
    return f"{x / 1e6:,.1f} M" if _ok(x) else DASH


def _ips(mean: float, std: float) -> str:
    if not _ok(mean):
        return DASH
    return f"{mean:,.0f}" + (f" ± {std:,.0f}" if _ok(std) else "")


def display_table(results: pd.DataFrame) -> pd.DataFrame:
    """The arm table of ``report.md``, as text: accuracies in %, '—' where a number is not defined."""
    if results.empty:
        return pd.DataFrame()
    table = pd.DataFrame({"arm": results["arm"], "n": results["n"]})
    table["test acc %"] = [
        _pm(m, s) for m, s in zip(results["test_acc_mean"], results["test_acc_std"], strict=True)
    ]
    table["95% CI"] = [
        _ci(lo, hi)
        for lo, hi in zip(results["test_acc_ci95_low"], results["test_acc_ci95_high"], strict=True)
    ]
    table["p vs baseline"] = [_p(p) for p in results["welch_p"]]
    if (results["test_acc_tta_n"] > 0).any():
        table["TTA test acc %"] = [
            _pm(m, s) for m, s in zip(results["test_acc_tta_mean"], results["test_acc_tta_std"], strict=True)
        ]
        table["TTA 95% CI"] = [
            _ci(lo, hi)
            for lo, hi in zip(
                results["test_acc_tta_ci95_low"], results["test_acc_tta_ci95_high"], strict=True
            )
        ]
        table["TTA p vs baseline"] = [_p(p) for p in results["welch_p_tta"]]
    if results["paper_test_error_pct"].notna().any():
        table["test error %"] = [f"{(1 - m) * 100:.2f}" if _ok(m) else DASH for m in results["test_acc_mean"]]
        table["paper error % (Table 3)"] = [
            f"{e:.2f}" if _ok(e) else DASH for e in results["paper_test_error_pct"]
        ]
    table["best val acc %"] = [
        _pm(m, s) for m, s in zip(results["val_acc_best_mean"], results["val_acc_best_std"], strict=True)
    ]
    if (results["consistency_n"] > 0).any():
        table["shift consistency %"] = [
            _pm(m, s) for m, s in zip(results["consistency_mean"], results["consistency_std"], strict=True)
        ]
    table["params"] = [_count(p, s) for p, s in zip(results["params"], results["params_spread"], strict=True)]
    table["FLOPs/image"] = [_mega(f) for f in results["flops_per_image"]]
    table["train images/s"] = [
        _ips(m, s) for m, s in zip(results["images_per_sec_mean"], results["images_per_sec_std"], strict=True)
    ]
    if results.loc[results["baseline"] != "", "baseline"].nunique() > 1:
        table.insert(5, "baseline", [b or DASH for b in results["baseline"]])
    return table


def _markdown(table: pd.DataFrame) -> str:
    # pandas' to_markdown needs the optional `tabulate`; a pipe table is a few lines.
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _plain(table: pd.DataFrame, columns: Sequence[str]) -> str:
    cols = [c for c in columns if c in table.columns]
    widths = {c: max(len(c), *(len(str(x)) for x in table[c])) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += [
        "  ".join(str(x).ljust(widths[c]) for c, x in zip(cols, row, strict=True))
        for row in table[cols].itertuples(index=False)
    ]
    return "\n".join(lines)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def runs_table(runs: Sequence[Run], root: Path, labels: Mapping[Path, str]) -> pd.DataFrame:
    """One row per run found (``runs.csv``): path, status, reason, arm, seed and final numbers."""
    return pd.DataFrame(
        [
            {
                "run": _rel(r.path, root),
                "status": r.status,
                "reason": r.reason,
                "arm": labels[r.path],
                "seed": r.seed,
                "test_acc": r.test_acc,
                "val_acc_best": r.val_acc_best,
                "consistency": r.consistency,
                "test_acc_tta": r.test_acc_tta,
                "params": r.params,
                "flops_per_image": r.flops,
                "images_per_sec": r.images_per_sec,
                "epochs": len(r.val_curve),
            }
            for r in runs
        ],
        columns=[
            "run",
            "status",
            "reason",
            "arm",
            "seed",
            "test_acc",
            "val_acc_best",
            "consistency",
            "test_acc_tta",
            "params",
            "flops_per_image",
            "images_per_sec",
            "epochs",
        ],
    )


# ----------------------------------------------------------------------------------------------------------
# Plots


def _figure(n_labels: int) -> Any:
    # The object API with an explicit Agg canvas: no pyplot global state, no display needed. Arm labels can be
    # long, so the legend goes below the axes and the figure grows with it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 4.5 + 0.25 * n_labels), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Any, ax: Any, path: Path, ylabel: str, title: str) -> Any:
    """The y label, title, grid and legend every plot has; saved to ``path``."""
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    fig.savefig(path, dpi=120)
    return fig


def _legend(fig: Any, ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        labels = ["\n".join(textwrap.wrap(label, 100)) for label in labels]
        fig.legend(handles, labels, loc="outside lower center", fontsize="small", frameon=False)


def plot_val_curves(arms: Sequence[Arm], path: Path) -> Any:
    """Validation accuracy per epoch: each arm's mean over its runs, with a min–max band across runs.

    Returns the matplotlib figure it saved to ``path``.
    """
    fig = _figure(sum(len(a.label) // 100 + 1 for a in arms))
    ax = fig.add_subplot()
    for arm in arms:
        curve = pd.DataFrame([r.val_curve for r in arm.runs]).sort_index(axis=1)
        if curve.empty:
            continue
        epochs = curve.columns.to_numpy()
        mean = curve.mean() * 100
        (line,) = ax.plot(epochs, mean, marker="o", markersize=3, label=f"{arm.label} (n={len(arm.runs)})")
        ax.fill_between(epochs, curve.min() * 100, curve.max() * 100, color=line.get_color(), alpha=0.2)
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    # whole epochs only, also for a sweep of one or two epochs (matplotlib would tick 0.96, 0.98, ...)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    epochs = [e for arm in arms for r in arm.runs for e in r.val_curve]
    if epochs and max(epochs) - min(epochs) < 2:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    return _finish(
        fig, ax, path, "validation accuracy (%)", "Validation accuracy: mean over seeds, band = min–max"
    )


def plot_acc_vs_throughput(results: pd.DataFrame, path: Path, warmup_excluded: bool | None = True) -> Any:
    """Test accuracy against training images/s, one point per arm with ± std error bars on both axes.

    ``warmup_excluded``: whether the runs' first epoch was left out of their throughput (True: all of them,
    False: none, as in one-epoch sweeps, None: some); the axis label says which.
    """
    fig = _figure(sum(len(label) // 100 + 1 for label in results.get("arm", [])))
    ax = fig.add_subplot()
    for row in results.itertuples(index=False):
        if not (_ok(row.test_acc_mean) and _ok(row.images_per_sec_mean)):
            continue
        ax.errorbar(
            row.images_per_sec_mean,
            row.test_acc_mean * 100,
            xerr=row.images_per_sec_std if _ok(row.images_per_sec_std) else None,
            yerr=row.test_acc_std * 100 if _ok(row.test_acc_std) else None,
            fmt="o",
            capsize=4,
            label=f"{row.arm} (n={row.n})",
        )
    note = {True: "first epoch excluded", False: "one epoch, warm-up included",
            None: "first epoch excluded where a run had more"}[warmup_excluded]  # fmt: skip
    ax.set_xlabel(f"training images/s ({note})")
    return _finish(
        fig, ax, path, "test accuracy (%)", "Accuracy against training throughput (mean ± std over seeds)"
    )


# ----------------------------------------------------------------------------------------------------------
# The report


@dataclass
class Report:
    """What :func:`build_report` read and wrote: the runs, the arms, the results table and the files."""

    root: Path
    out: Path
    runs: list[Run]
    skipped: list[Run]
    arms: list[Arm]
    keys: list[str]
    labels: dict[Path, str]
    results: pd.DataFrame
    table: pd.DataFrame

    @property
    def path(self) -> Path:
        """``report.md``."""
        return self.out / "report.md"


def _common_settings(runs: Sequence[Run], keys: Sequence[str]) -> list[str]:
    done = [r for r in runs if r.status == "completed"]
    if not done:
        return []
    shared = set.intersection(*(set(r.hparams) for r in done)) - set(keys) - IGNORED_KEYS
    return [f"{k}={_display(done[0].hparams[k])}" for k in sorted(shared)]


def _markdown_report(rep: Report) -> str:
    started = [r for r in rep.runs if r.status != NOT_STARTED]
    done = [r for r in started if r.status == "completed"]
    left_out = [r for r in started if r.status != "completed"]
    not_started = [r for r in rep.runs if r.status == NOT_STARTED]
    apart = (
        f" {len(not_started)} more stopped at start-up, before training (listed apart)."
        if not_started
        else ""
    )
    lines = [
        "# Ablation report",
        "",
        f"Runs below `{rep.root}`: {len(started)} training runs found, {len(done)} completed and counted, "
        f"{sum(r.status == 'failed' for r in started)} failed, "
        f"{sum(r.status in ('running', 'incomplete') for r in started)} running or incomplete "
        f"(listed below, not counted).{apart} Written {time.strftime('%Y-%m-%d %H:%M:%S %z')} by "
        "`python -m downsample_lab.report`.",
        "",
        "## Results",
        "",
    ]
    if rep.table.empty:
        lines += ["No completed run yet: nothing to compare.", ""]
    else:
        arm_desc = ", ".join(f"`{k}`" for k in rep.keys) or "none (every run has the same settings)"
        baselines = sorted({a.baseline.label for a in rep.arms if a.baseline})
        lines += [
            f"Arms differ in: {arm_desc}. The seed (an arm's replicates) and the keys that say where files "
            "are, how progress is shown or how a run was resumed do not define an arm: "
            + ", ".join(f"`{k}`" for k in sorted(IGNORED_KEYS - {"seed"}))
            + ".",
            "",
            _markdown(rep.table),
            "",
            "- **test acc %**: test accuracy of the weights each run tested (its best checkpoint by val/acc, or its final weights with `eval.test_weights`), mean ± sample std (ddof=1) "
            "over the completed runs; **95% CI**: t-distribution interval of the mean (n − 1 degrees of "
            f"freedom). With n = 1 there is no std or CI ({DASH}).",
            "- **p vs baseline**: two-sided Welch's t-test (unequal variances) of the arm's test accuracies "
            f"against its baseline's ({', '.join(f'`{b}`' for b in baselines) or DASH}); {DASH} for a "
            "baseline itself and where either side has fewer than 2 runs. Not corrected for multiple comparisons.",
            "- **best val acc %**: each run's final `val/acc_best` (best validation accuracy over its epochs).",
            "- **train images/s**: per run, the mean of the per-epoch `train/images_per_sec` (global "
            "training throughput, evaluation excluded) leaving out the first epoch, which includes warm-up, "
            "when the run has at least 2 epochs; then mean ± std over runs. Throughput is only comparable between runs on "
            "the same machine under the same load.",
            "- **params**, **FLOPs/image**: `model/params` and `model/flops_per_image` (forward pass, "
            "`torch.utils.flop_counter`), mean over the arm's runs.",
        ]
        if "TTA test acc %" in rep.table:
            lines.append(
                f"- **TTA test acc %**, **TTA 95% CI**, **TTA p vs baseline**: the same for the final "
                f"`{TEST_ACC_TTA}` (test-time augmentation, `eval.tta_level`), over the runs that logged it."
            )
        if "shift consistency %" in rep.table:
            lines.append(
                f"- **shift consistency %**: final `{CONSISTENCY}`, mean ± std over the runs that logged "
                f"it; {DASH} for arms whose runs predate it."
            )
        if "paper error % (Table 3)" in rep.table:
            lines.append(
                "- **paper error % (Table 3)**: CIFAR-10 test error without augmentation reported by "
                "Springenberg et al. 2014 (Striving for Simplicity: The All Convolutional Net), "
                f"keyed by `{PAPER_KEY}`; **test error %** is ours, 100 − test acc."
            )
        lines += [
            "",
            "![Validation accuracy per epoch](val_acc.png)",
            "",
            "![Test accuracy against training throughput](acc_vs_throughput.png)",
            "",
            "Unrounded numbers: `results.csv` (one row per arm, accuracies as fractions) and `runs.csv` "
            "(one row per run).",
        ]
        common = _common_settings(rep.runs, rep.keys)
        if common:
            lines += ["", "Settings shared by every completed run:", "", "`" + "`, `".join(common) + "`"]

    lines += ["", "## Runs not counted", ""]
    if not left_out:
        lines.append("None: every run found completed.")
    for title, states in (("Failed", ("failed",)), ("Running or incomplete", ("running", "incomplete"))):
        chosen = [r for r in left_out if r.status in states]
        if chosen:
            listed = pd.DataFrame(
                {
                    "run": [f"`{_rel(r.path, rep.root)}`" for r in chosen],
                    "arm": [rep.labels[r.path] for r in chosen],
                    "seed": [r.seed for r in chosen],
                    "status": [r.status for r in chosen],
                    "reason": [" ".join(r.reason.split()) for r in chosen],
                }
            )
            lines += [f"### {title} ({len(chosen)})", "", _markdown(listed), ""]
    if not_started:
        lines += [
            "",
            f"## Stopped at start-up ({len(not_started)})",
            "",
            "Command lines refused before training began (a config, resume or data error): no run to count.",
            "",
        ]
        lines += [f"- `{_rel(r.path, rep.root)}`: {' '.join(r.reason.split())}" for r in not_started]
    if rep.skipped:
        lines += [
            "",
            f"## Runs of other tools ({len(rep.skipped)})",
            "",
            "Evaluation and benchmark runs are not arms of the ablation:",
            "",
        ]
        lines += [f"- `{_rel(r.path, rep.root)}` ({r.task or 'eval'}, {r.status})" for r in rep.skipped]
    return "\n".join(lines).rstrip() + "\n"


def _warmup_excluded(arms: Sequence[Arm]) -> bool | None:
    excluded = {r.throughput_epochs >= 2 for arm in arms for r in arm.runs if r.images_per_sec is not None}
    return excluded.pop() if len(excluded) == 1 else (True if not excluded else None)


def build_report(root: Path, out: Path | None = None) -> Report:
    """Read every run below ``root``, write report.md, results.csv, runs.csv and the plots to ``out``.

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
    skipped = [r for r in loaded if not is_training_run(r)]
    arms = group_runs(runs)
    keys = arm_keys([r for r in runs if r.status == "completed"])
    results = summarize(arms)
    labels = run_labels(runs, arms)
    rep = Report(root, out, runs, skipped, arms, keys, labels, results, display_table(results))

    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "results.csv", index=False)
    runs_table(runs, root, labels).to_csv(out / "runs.csv", index=False)
    plot_val_curves(arms, out / "val_acc.png")
    plot_acc_vs_throughput(results, out / "acc_vs_throughput.png", _warmup_excluded(arms))
    rep.path.write_text(_markdown_report(rep))
    return rep


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m downsample_lab.report DIR [--out OUT]``: write the report, print where and a short table."""
    parser = argparse.ArgumentParser(
        prog="python -m downsample_lab.report",
        description="Compare the arms of a sweep: mean ± std, 95% CI and Welch's t-test of the test "
        "accuracy, throughput, model cost, and plots, from the TensorBoard files of every run below DIR.",
    )
    parser.add_argument(
        "dir", type=Path, help="a sweep directory (outputs/train-multirun/<time>) or outputs/"
    )
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: DIR)")
    args = parser.parse_args(argv)
    try:
        rep = build_report(args.dir, args.out)
    except UserError as err:
        exit_with_error(err)
    print(f"Report: {rep.path}")
    counts = {
        s: sum(r.status == s for r in rep.runs) for s in ("completed", "failed", "running", "incomplete")
    }
    n_refused = sum(r.status == NOT_STARTED for r in rep.runs)
    print(
        (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no")
        + " training runs"
        + (f"; {n_refused} stopped at start-up" if n_refused else "")
        + (f"; {len(rep.skipped)} runs of other tools (eval, bench) skipped" if rep.skipped else "")
    )
    if rep.table.empty:
        print("No completed run yet: nothing to compare.")
    else:
        print(
            _plain(
                rep.table,
                [
                    c
                    for c in [
                        "arm",
                        "n",
                        "test acc %",
                        "p vs baseline",
                        "TTA test acc %",
                        "shift consistency %",
                        "train images/s",
                    ]
                    if c in rep.table
                ],
            )
        )


if __name__ == "__main__":
    main()

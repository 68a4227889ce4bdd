"""The bench runs below a directory in one table: ``bench.csv`` and the "Benchmark runs" section of report.md.

Each run of ``python -m downsample_lab.bench`` writes ``bench.json``: per strategy, the images/s of the raw loop
and of the Lightning path (medians of their windows) and their ratio. Runs that differ only by their seed repeat
one *setting* (the keys the bench runs differ in, named as the arms of the ablation are; plus the device and
precision that ran): the table gives each setting and strategy the mean over its runs, the sample std, a 95% t
interval of the Lightning/raw ratio from :data:`~downsample_lab.report.stats.MIN_CI_RUNS` runs on, and the
difference of the Lightning path's images/s against the setting's max-pooling strategy (Welch), in % of the
max-pooling mean.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from downsample_lab.report.read import DASH, Run
from downsample_lab.report.render import is_defined, markdown_table
from downsample_lab.report.stats import MIN_CI_RUNS, arm_keys, arm_label, effect, mean_std_ci
from downsample_lab.study import BASELINE

BENCH_FILE = "bench.json"
BENCH_TASK = "bench"
NOT_SETTINGS = {"bench.out"}  # a key that says where the record went, not what was measured


def bench_runs(runs: Sequence[Run]) -> list[Run]:
    """The runs of the bench tool among ``runs`` (the report's runs of other tools)."""
    return [r for r in runs if r.task == BENCH_TASK]


def read_bench(run: Run) -> dict[str, Any] | None:
    """The run's ``bench.json`` (its config's ``bench.out`` when that is an absolute path, else in the run
    directory); None when it is missing, unreadable or has no results (a bench run that failed or still runs)."""
    out = run.hparams.get("bench.out")
    path = Path(out) if isinstance(out, str) and Path(out).is_absolute() else run.path / BENCH_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("results"), dict) else None


def _device(record: dict[str, Any]) -> str:
    hw = record.get("hardware") or {}
    name = hw.get("gpu") or hw.get("cpu_model") or hw.get("device") or DASH
    return f"{name}, {record.get('precision', DASH)}"


def bench_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per bench run and strategy: its setting, device, strategy and measured figures."""
    read = [(r, rec) for r in bench_runs(runs) if (rec := read_bench(r)) is not None]
    keys = [k for k in arm_keys([r for r, _ in read]) if k not in NOT_SETTINGS]
    rows = []
    for run, record in read:
        for strategy, res in record["results"].items():
            raw, lightning = res.get("raw") or {}, res.get("lightning") or {}
            rows.append(
                {
                    "setting": arm_label(run.hparams, keys),
                    "device": _device(record),
                    "strategy": strategy,
                    "run": str(run.path),
                    "raw_images_per_sec": raw.get("images_per_sec", math.nan),
                    "lightning_images_per_sec": lightning.get("images_per_sec", math.nan),
                    "ratio": res.get("ratio", math.nan),
                    "raw_host_us_per_step": raw.get("host_us_per_step", math.nan),
                    "lightning_host_us_per_step": lightning.get("host_us_per_step", math.nan),
                    "params": res.get("params", math.nan),
                }
            )
    return pd.DataFrame(rows)


def bench_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per setting, device and strategy (in the order first seen): the runs, each figure's mean and std, the
    ratio's 95% CI (NaN below :data:`MIN_CI_RUNS` runs) and the Lightning path's images/s against max-pooling's
    in the same setting (difference of means and its Welch 95% CI, in % of max-pooling's mean)."""
    if frame.empty:
        return pd.DataFrame()
    rows = []
    groups = frame.groupby(["setting", "device", "strategy"], sort=False)
    for (setting, device, strategy), g in groups:
        row: dict[str, Any] = {"setting": setting, "device": device, "strategy": strategy, "n": len(g)}
        for name in (
            "raw_images_per_sec",
            "lightning_images_per_sec",
            "raw_host_us_per_step",
            "lightning_host_us_per_step",
        ):
            row[f"{name}_mean"], row[f"{name}_std"], _, _ = mean_std_ci(g[name].dropna().tolist())
        mean, std, low, high = mean_std_ci(g["ratio"].dropna().tolist())
        enough = len(g["ratio"].dropna()) >= MIN_CI_RUNS
        row |= {"ratio_mean": mean, "ratio_std": std}
        row |= {
            "ratio_ci95_low": low if enough else math.nan,
            "ratio_ci95_high": high if enough else math.nan,
        }
        row["params"] = g["params"].iloc[0]
        base = frame[(frame.setting == setting) & (frame.device == device) & (frame.strategy == BASELINE)]
        speed = g["lightning_images_per_sec"].dropna().tolist()
        reference = base["lightning_images_per_sec"].dropna().tolist()
        diff = low = high = math.nan
        if strategy != BASELINE and reference:
            d, lo, hi, _ = effect(speed, reference)
            scale = 100 / (sum(reference) / len(reference))
            diff, low, high = d * scale, lo * scale, hi * scale
        row |= {"vs_maxpool_pct": diff, "vs_maxpool_ci95_low": low, "vs_maxpool_ci95_high": high}
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(mean: float, std: float, digits: int = 0) -> str:
    if not is_defined(mean):
        return DASH
    return f"{mean:,.{digits}f}" + (f" ± {std:,.{digits}f}" if is_defined(std) else "")


def _interval(low: float, high: float, n: int) -> str:
    if is_defined(low):
        return f"[{low:.3f}, {high:.3f}]"
    return f"{DASH} (n < {MIN_CI_RUNS})" if n < MIN_CI_RUNS else DASH


def _column(summary: pd.DataFrame, fmt: Callable[..., str], *names: str) -> list[str]:
    return [fmt(*values) for values in zip(*(summary[n] for n in names), strict=True)]


def _vs_maxpool(diff: float, low: float, high: float) -> str:
    if not is_defined(diff):
        return DASH
    return f"{diff:+.1f}" + (f" [{low:+.1f}, {high:+.1f}]" if is_defined(low) else " (CI: n < 2)")


def bench_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as the text of report.md's table (the device column only when the runs used several)."""
    if summary.empty:
        return pd.DataFrame()
    ips, host = "images_per_sec", "host_us_per_step"
    table = pd.DataFrame(
        {
            "setting": summary["setting"],
            "device, precision": summary["device"],
            "strategy": summary["strategy"],
            "n": summary["n"],
            "raw img/s": _column(summary, _mean_std, f"raw_{ips}_mean", f"raw_{ips}_std"),
            "Lightning img/s": _column(summary, _mean_std, f"lightning_{ips}_mean", f"lightning_{ips}_std"),
            "Lightning/raw": _column(summary, lambda m, s: _mean_std(m, s, 3), "ratio_mean", "ratio_std"),
            "ratio 95% CI": _column(summary, _interval, "ratio_ci95_low", "ratio_ci95_high", "n"),
            "Lightning img/s vs maxpool, % [95% CI]": _column(
                summary, _vs_maxpool, "vs_maxpool_pct", "vs_maxpool_ci95_low", "vs_maxpool_ci95_high"
            ),
            "host µs/step raw / Lightning": _column(
                summary, lambda r, li: f"{r:,.0f} / {li:,.0f}", f"raw_{host}_mean", f"lightning_{host}_mean"
            ),
        }
    )
    if summary["device"].nunique() == 1:
        table = table.drop(columns="device, precision")
    return table


def bench_section(table: pd.DataFrame, summary: pd.DataFrame, n_runs: int) -> list[str]:
    """The lines of report.md's "Benchmark runs" section ([] without bench results)."""
    if table.empty:
        return []
    device = summary["device"].iloc[0] if summary["device"].nunique() == 1 else "see the table"
    return [
        "",
        f"## Benchmark runs ({n_runs})",
        "",
        f"`python -m downsample_lab.bench` runs ({device}), from their `bench.json`: per setting and strategy the "
        "mean ± std over the runs of each path's images/s (a run's figure is the median of its windows) and of "
        f"their ratio, with a 95% t interval from {MIN_CI_RUNS} runs on; the Lightning path's images/s against "
        "max-pooling's in the same setting: difference of the means in % of max-pooling's mean, Welch 95% CI of "
        "the difference scaled alike (max-pooling's own spread in the denominator is not counted). Host µs: the "
        "process's CPU time per step, mean over the runs. All figures in `bench.csv`.",
        "",
        markdown_table(table),
    ]

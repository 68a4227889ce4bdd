"""The bench runs below a directory, summed up: ``bench.csv`` and the "Benchmark runs" section of report.md.

Each run of ``python -m downsample_lab.bench`` writes ``bench.json``: the config that ran, the machine, the
versions and, per strategy, the images/s of the raw loop and of the Lightning path (medians of their windows),
their ratio and each path's host CPU time per step. Runs repeat one *setting* when their configs differ only in
the seed (and in where the record went, or in the strategies they timed: each strategy is a row), on the same
machine, precision and versions. Per setting and strategy, :func:`bench_summary` gives the mean ± std over the
runs, a 95% t interval of the Lightning/raw ratio, and the Lightning path's images/s against max-pooling's
*in the same runs* (each run times every strategy it has in one process, one after the other: a paired design),
as exp(mean log ratio) − 1 with a t interval of the mean log ratio. Intervals from fewer than
:data:`~downsample_lab.report.stats.MIN_CI_RUNS` runs are not shown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from downsample_lab.console import counted
from downsample_lab.report.arms import IGNORED_KEYS, arm_keys, arm_label
from downsample_lab.report.read import DASH, Run
from downsample_lab.report.stats import mean_std_ci, spread
from downsample_lab.study import BASELINE, flatten

BENCH_FILE = "bench.json"
BENCH_TASK = "bench"
# Keys that never tell settings apart: where the record went, and the strategies timed (each one is a row).
NOT_SETTINGS = IGNORED_KEYS | {"bench.out", "bench.strategies"}
# What a strategy's entry in bench.json gives, per path.
FIGURES = ("images_per_sec", "host_us_per_step")


@dataclass
class BenchRecord:
    """One bench run's ``bench.json``, read defensively (a figure it lacks is NaN)."""

    run: Path
    config: dict[str, Any]  # the config that ran, flattened
    machine: str
    precision: str
    versions: str
    results: dict[str, dict[str, float]]  # strategy → raw_/lightning_ + FIGURES, "ratio" and "others"


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _machine(hardware: Mapping[str, Any]) -> str:
    """``NVIDIA H200`` (``× 8`` for several GPUs), or the CPU model with its usable cores and torch threads."""
    gpu = _dict(hardware.get("gpu"))
    if gpu.get("name"):
        count = gpu.get("count")
        return str(gpu["name"]) + (f" × {count}" if isinstance(count, int) and count > 1 else "")
    parts = [str(hardware.get("cpu_model") or DASH)]
    for key, noun in (("cpus_usable", "CPU"), ("torch_threads", "torch thread")):
        if isinstance(hardware.get(key), int):
            parts.append(counted(hardware[key], noun))
    return ", ".join(parts)


def _hydra_record(run: Path, name: str) -> dict[str, Any]:
    """``.hydra/<name>.yaml`` of the run as plain YAML (interpolations unresolved), or {}."""
    import yaml

    try:
        return _dict(yaml.safe_load((run / ".hydra" / f"{name}.yaml").read_text()))
    except Exception:  # absent or unreadable
        return {}


def _record_path(run: Run) -> Path:
    """Where the run wrote ``bench.json``: its config's ``bench.out`` (relative to the directory it was started
    in, ``hydra.runtime.cwd``), else the run directory."""
    out = _dict(_hydra_record(run.path, "config").get("bench")).get("out")
    if not isinstance(out, str) or not out:
        return run.path / BENCH_FILE
    if Path(out).is_absolute():
        return Path(out)
    hydra = _dict(_hydra_record(run.path, "hydra").get("hydra"))
    return Path(str(_dict(hydra.get("runtime")).get("cwd") or run.path)) / out


def read_bench(run: Run, path: Path | None = None) -> BenchRecord | str:
    """The run's record (from ``path``, default :func:`_record_path`), or why there is none (missing, unreadable,
    no results)."""
    path = path or _record_path(run)
    try:
        record = json.loads(path.read_text())
    except OSError:
        return f"no {path.name} (the bench did not finish)"
    except ValueError as err:
        return f"{path.name} unreadable ({err})"
    results = _dict(_dict(record).get("results"))
    if not results:
        return f"{path.name} has no results"
    figures = {}
    for strategy, entry in results.items():
        entry = _dict(entry)
        row = {f"{p}_{f}": _number(_dict(entry.get(p)).get(f)) for p in ("raw", "lightning") for f in FIGURES}
        row["others"] = _number(entry.get("other_cpu_cores"))  # CPU cores other processes kept busy meanwhile
        ratio = _number(entry.get("ratio"))
        row["ratio"] = (
            ratio if not math.isnan(ratio) else row["lightning_images_per_sec"] / row["raw_images_per_sec"]
        )
        figures[str(strategy)] = row
    versions = _dict(record.get("versions"))
    return BenchRecord(
        run=run.path,
        config=flatten(_dict(record.get("config"))) or run.hparams,
        machine=_machine(_dict(record.get("hardware"))),
        precision=str(record.get("precision") or DASH),
        versions=", ".join(f"{k} {versions[k]}" for k in ("torch", "lightning") if versions.get(k)) or DASH,
        results=figures,
    )


def read_bench_runs(runs: Sequence[Run]) -> tuple[list[BenchRecord], list[tuple[Path, str]]]:
    """The records of the bench runs among ``runs``, and the bench runs left out with the reason (no record, or
    one another run already gave: several runs with the same ``bench.out`` overwrite one file)."""
    records, left_out, seen = [], [], {}
    for run in (r for r in runs if r.task == BENCH_TASK):
        path = _record_path(run).resolve()
        if path in seen:
            left_out.append(
                (run.path, f"its bench.out, {path}, is {seen[path].name}'s record too (overwritten)")
            )
            continue
        record = read_bench(run, path)
        if isinstance(record, str):
            left_out.append((run.path, record))
        else:
            seen[path] = run.path
            records.append(record)
    return records, left_out


def bench_frame(records: Sequence[BenchRecord]) -> pd.DataFrame:
    """One row per run and strategy: the run's setting (the keys the runs' configs differ in, less
    :data:`NOT_SETTINGS`), machine, precision, versions, strategy and figures."""
    as_runs = [Run(path=r.run, status="completed", hparams=r.config) for r in records]
    keys = [k for k in arm_keys(as_runs) if k not in NOT_SETTINGS]
    rows = [
        {
            "setting": arm_label(run.hparams, keys),
            "machine": record.machine,
            "precision": record.precision,
            "versions": record.versions,
            "strategy": strategy,
            "run": str(record.run),
            **figures,
        }
        for record, run in zip(records, as_runs, strict=True)
        for strategy, figures in record.results.items()
    ]
    return pd.DataFrame(rows)


GROUP = ["setting", "machine", "precision", "versions"]


def bench_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per setting (with its machine, precision and versions) and strategy, in the order first seen: ``n`` runs,
    each figure's mean and std, the ratio's 95% CI, and ``vs_maxpool``: the Lightning path's images/s against
    max-pooling's in the same runs (``vs_maxpool_n`` pairs), a fraction, with its 95% CI (NaN, and a
    ``_ci95_note``, where the runs cannot support one)."""
    if frame.empty:
        return pd.DataFrame()
    rows = []
    for (*setting, strategy), g in frame.groupby([*GROUP, "strategy"], sort=False):
        row: dict[str, Any] = dict(zip([*GROUP, "strategy"], [*setting, strategy], strict=True)) | {
            "n": len(g)
        }
        for name in [f"{p}_{f}" for p in ("raw", "lightning") for f in FIGURES]:
            row[f"{name}_mean"], row[f"{name}_std"], _, _ = mean_std_ci(g[name].dropna().tolist())
        row |= spread(g["ratio"], "ratio", ci=True, bounds=(0.0, math.inf))
        row["others_max"] = g["others"].max()  # NaN where no run recorded it
        same = frame[(frame[GROUP] == pd.Series(dict(zip(GROUP, setting, strict=True)))).all(axis=1)]
        row |= _vs_maxpool(g, same[same.strategy == BASELINE]) if strategy != BASELINE else {}
        rows.append(row)
    return pd.DataFrame(rows)


def _vs_maxpool(strategy: pd.DataFrame, maxpool: pd.DataFrame) -> dict[str, Any]:
    """The strategy's Lightning images/s against max-pooling's, paired by run: exp(mean log ratio) − 1."""
    base = maxpool.set_index("run")["lightning_images_per_sec"]
    pairs = [
        math.log(speed / base[run])
        for run, speed in zip(strategy["run"], strategy["lightning_images_per_sec"], strict=True)
        if run in base.index and speed > 0 and base[run] > 0
    ]
    if not pairs:
        return {"vs_maxpool_n": 0, "vs_maxpool_ci95_note": "no maxpool in its runs"}
    out = spread(pd.Series(pairs), "vs_maxpool", ci=True, bounds=(-math.inf, math.inf))
    out = {k: math.expm1(v) if k in ("vs_maxpool_mean", "vs_maxpool_ci95_low", "vs_maxpool_ci95_high") else v
           for k, v in out.items()}  # fmt: skip
    out.pop("vs_maxpool_std")  # of the log ratios: not a figure of the table
    return out | {"vs_maxpool_n": len(pairs)}

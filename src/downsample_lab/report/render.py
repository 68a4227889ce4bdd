"""Numbers and tables as text: the arm table of ``report.md``, the run table of ``runs.csv``, and the markdown and
console forms of a table (also used by :mod:`downsample_lab.report.selection`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from downsample_lab.report.read import DASH, METRICS, Run, runs_frame

# runs.csv: the run's place and arm, then its final numbers (read.METRICS, flops named per image), then epochs
RUNS_CSV_COLUMNS = [
    "run",
    "status",
    "reason",
    "arm",
    "seed",
    *("flops_per_image" if m == "flops" else m for m in METRICS),
    "epochs",
]


def is_defined(x: Any) -> bool:
    """Neither None nor NaN."""
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def fmt_mean_std(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    """``81.00 ± 1.00`` (a fraction as %); the mean alone without a std; the dash without a mean."""
    if not is_defined(mean):
        return DASH
    if not is_defined(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def fmt_ci(low: float, high: float) -> str:
    """``[78.52, 83.48]``: a confidence interval of fractions, in %."""
    return f"[{low * 100:.2f}, {high * 100:.2f}]" if is_defined(low) else DASH


def fmt_ci_or_note(low: float, high: float, note: Any = "") -> str:
    """:func:`fmt_ci`, or ``— (n < 3)`` where the report judged the interval unsupported (``note``)."""
    return f"{DASH} ({note})" if isinstance(note, str) and note else fmt_ci(low, high)


def fmt_diff(diff: float, low: float, high: float, note: Any = "") -> str:
    """``+1.23 [+0.50, +1.96]``: a difference of fractions and its confidence interval, in percentage points;
    the difference alone without an interval, with the reason (``+1.23 (CI: n < 3)``) where there is one."""
    if not is_defined(diff):
        return DASH
    text = f"{diff * 100:+.2f}"
    if isinstance(note, str) and note:
        return f"{text} (CI: {note})"
    return text + (f" [{low * 100:+.2f}, {high * 100:+.2f}]" if is_defined(low) else "")


def fmt_p(p: float) -> str:
    """A p-value to 3 significant digits."""
    return f"{p:.3g}" if is_defined(p) else DASH


def _count(x: float, spread: float = 0.0) -> str:
    if not is_defined(x):
        return DASH
    return f"{x:,.0f}" + (" (varies)" if is_defined(spread) and spread > 0 else "")


def _mega(x: float) -> str:
    return f"{x / 1e6:,.1f} M" if is_defined(x) else DASH


def _rate(mean: float, std: float) -> str:
    if not is_defined(mean):
        return DASH
    return f"{mean:,.0f}" + (f" ± {std:,.0f}" if is_defined(std) else "")


def column(results: pd.DataFrame, fmt: Callable[..., str], *names: str) -> list[str]:
    """``fmt`` applied to each row's values of the columns ``names``."""
    return [fmt(*values) for values in zip(*(results[n] for n in names), strict=True)]


def display_table(results: pd.DataFrame) -> pd.DataFrame:
    """The arm table of ``report.md``, as text: accuracies in %, '—' where a number is not defined."""
    if results.empty:
        return pd.DataFrame()
    table = pd.DataFrame({"arm": results["arm"], "n": results["n"]})
    table["test acc %"] = column(results, fmt_mean_std, "test_acc_mean", "test_acc_std")
    table["95% CI"] = column(
        results, fmt_ci_or_note, "test_acc_ci95_low", "test_acc_ci95_high", "test_acc_ci95_note"
    )
    table["Δ vs baseline, pp [95% CI]"] = column(
        results, fmt_diff, "welch_p_diff", "welch_p_diff_ci95_low", "welch_p_diff_ci95_high",
        "welch_p_diff_ci95_note",
    )  # fmt: skip
    table["p vs baseline"] = column(results, fmt_p, "welch_p")
    table["p Holm"] = column(results, fmt_p, "welch_p_holm")
    if (results["test_acc_tta_n"] > 0).any():
        table["TTA test acc %"] = column(results, fmt_mean_std, "test_acc_tta_mean", "test_acc_tta_std")
        table["TTA 95% CI"] = column(
            results,
            fmt_ci_or_note,
            "test_acc_tta_ci95_low",
            "test_acc_tta_ci95_high",
            "test_acc_tta_ci95_note",
        )
        table["TTA Δ, pp [95% CI]"] = column(
            results, fmt_diff, "welch_p_tta_diff", "welch_p_tta_diff_ci95_low", "welch_p_tta_diff_ci95_high",
            "welch_p_tta_diff_ci95_note",
        )  # fmt: skip
        table["TTA p vs baseline"] = column(results, fmt_p, "welch_p_tta")
        table["TTA p Holm"] = column(results, fmt_p, "welch_p_tta_holm")
    if results["paper_test_error_pct"].notna().any():
        table["test error %"] = [
            f"{(1 - m) * 100:.2f}" if is_defined(m) else DASH for m in results["test_acc_mean"]
        ]
        table["paper error % (Table 3)"] = [
            f"{e:.2f}" if is_defined(e) else DASH for e in results["paper_test_error_pct"]
        ]
    table["best val acc %"] = column(results, fmt_mean_std, "val_acc_best_mean", "val_acc_best_std")
    if (results["consistency_n"] > 0).any():
        table["shift consistency %"] = column(results, fmt_mean_std, "consistency_mean", "consistency_std")
    table["params"] = column(results, _count, "params", "params_spread")
    table["FLOPs/image"] = column(results, _mega, "flops_per_image")
    table["train images/s"] = column(results, _rate, "images_per_sec_mean", "images_per_sec_std")
    if results.loc[results["baseline"] != "", "baseline"].nunique() > 1:
        table.insert(4, "baseline", [b or DASH for b in results["baseline"]])
    return table


def markdown_table(table: pd.DataFrame) -> str:
    """A pipe table; ``|`` in a cell is escaped.

    Written by hand: pandas' ``to_markdown`` needs the optional ``tabulate``, and a pipe table is a few lines.
    """

    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def plain_table(table: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """The table for a terminal: the ``columns`` it has (default: all), aligned, without the index."""
    cols = [c for c in (columns if columns is not None else table.columns) if c in table.columns]
    return table.to_string(columns=cols, index=False)


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (``.`` for root itself), or as is when it is not below ``root``."""
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def runs_table(runs: Sequence[Run], root: Path, labels: Mapping[Path, str]) -> pd.DataFrame:
    """One row per run found (``runs.csv``): path, status, reason, arm, seed and final numbers."""
    frame = runs_frame(runs).rename(columns={"flops": "flops_per_image"})
    frame["run"] = [relative(p, root) for p in frame["path"]]
    frame["arm"] = [labels[p] for p in frame["path"]]
    return frame[RUNS_CSV_COLUMNS]


def shift_table(shift: pd.DataFrame, arms: Sequence[str]) -> pd.DataFrame:
    """The shift-robustness table of ``report.md``: per arm, mean consistency with the unshifted prediction (%)
    at each diagonal shift, circular and linear, and the accuracy at the largest linear shift."""
    if shift.empty:
        return pd.DataFrame()
    diag = shift[shift["curve"].str.endswith("_diag")]
    shifts = sorted(s for s in diag["shift"].unique() if s > 0)
    rows = []
    for arm in arms:
        mine = diag[diag["arm"] == arm]
        if mine.empty:
            continue
        row: dict[str, Any] = {"arm": arm}
        for mode in ("circular", "linear"):
            for s in shifts:
                hit = mine[
                    (mine["curve"] == f"{mode}_diag")
                    & (mine["metric"] == "consistency")
                    & (mine["shift"] == s)
                ]
                row[f"{mode} {s} px"] = f"{hit['mean'].iloc[0] * 100:.2f}" if len(hit) else DASH
        for s in (0, shifts[-1] if shifts else 0):
            hit = mine[(mine["curve"] == "linear_diag") & (mine["metric"] == "acc") & (mine["shift"] == s)]
            row[f"acc {s} px %"] = f"{hit['mean'].iloc[0] * 100:.2f}" if len(hit) else DASH
        rows.append(row)
    return pd.DataFrame(rows)


def _ratio(mean: float, std: float) -> str:
    if not is_defined(mean):
        return DASH
    return f"{mean:.3f}" + (f" ± {std:.3f}" if is_defined(std) else "")


def _ratio_ci(low: float, high: float, note: Any) -> str:
    if isinstance(note, str) and note:
        return f"{DASH} ({note})"
    return f"[{low:.3f}, {high:.3f}]" if is_defined(low) else DASH


def _host(raw: float, lightning: float) -> str:
    return " / ".join(f"{x:,.0f}" if is_defined(x) else DASH for x in (raw, lightning))


def _vs_maxpool(diff: float, low: float, high: float, note: Any) -> str:
    if not is_defined(diff) and isinstance(note, str) and note:
        return f"{DASH} ({note})"
    return fmt_diff(diff, low, high, note)


def bench_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The bench table of ``report.md`` (:func:`downsample_lab.report.bench.bench_summary` as text); machine,
    precision and versions as columns only where the rows differ in them (else the section names them once)."""
    if summary.empty:
        return pd.DataFrame()
    table = summary[["setting", "machine", "precision", "versions", "strategy", "n"]].copy()
    table = table.drop(columns=[c for c in ("machine", "precision", "versions") if summary[c].nunique() == 1])
    ips = "images_per_sec"
    table["raw img/s"] = column(summary, _rate, f"raw_{ips}_mean", f"raw_{ips}_std")
    table["Lightning img/s"] = column(summary, _rate, f"lightning_{ips}_mean", f"lightning_{ips}_std")
    table["Lightning/raw"] = column(summary, _ratio, "ratio_mean", "ratio_std")
    table["ratio 95% CI"] = column(summary, _ratio_ci, "ratio_ci95_low", "ratio_ci95_high", "ratio_ci95_note")
    vs = [f"vs_maxpool{s}" for s in ("_mean", "_ci95_low", "_ci95_high", "_ci95_note")]
    for name in vs:
        if name not in summary:  # every row is max-pooling's own
            summary = summary.assign(**{name: math.nan})
    table["Lightning img/s vs maxpool, % [95% CI]"] = column(summary, _vs_maxpool, *vs)
    table["host µs/step, raw / Lightning"] = column(
        summary, _host, "raw_host_us_per_step_mean", "lightning_host_us_per_step_mean"
    )
    if "others_max" in summary:
        table["others, max"] = [DASH if math.isnan(v) else f"{v:.2f}" for v in summary["others_max"]]
    return table

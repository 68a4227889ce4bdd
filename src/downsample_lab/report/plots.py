"""The report's plots: validation accuracy per epoch (``val_acc.png``) and test accuracy against training
throughput (``acc_vs_throughput.png``), drawn with matplotlib's object API (no pyplot state, no display)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from downsample_lab.report.arms import Arm
from downsample_lab.report.render import is_defined


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


def short_labels(labels: Sequence[str]) -> list[str]:
    """Legend labels without the keys' groups where the key's last part names it alone among the labels:
    ``downsample=conv, lr=5.75`` for ``model.downsample=conv, optim.lr=5.75``; one line each for a few keys."""
    keys = {k for label in labels for k in re.findall(r"([\w.]+)=", label)}
    last = [k.rsplit(".", 1)[-1] for k in keys]
    unique = {k for k in keys if last.count(k.rsplit(".", 1)[-1]) == 1}
    return [re.sub(r"([\w.]+)=", lambda m: (m[1].rsplit(".", 1)[-1] if m[1] in unique else m[1]) + "=", label)
            for label in labels]  # fmt: skip


def _legend(fig: Any, ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        labels = ["\n".join(textwrap.wrap(label, 100)) for label in short_labels(labels)]
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
        if not (is_defined(row.test_acc_mean) and is_defined(row.images_per_sec_mean)):
            continue
        ax.errorbar(
            row.images_per_sec_mean,
            row.test_acc_mean * 100,
            xerr=row.images_per_sec_std if is_defined(row.images_per_sec_std) else None,
            yerr=row.test_acc_std * 100 if is_defined(row.test_acc_std) else None,
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


def plot_shift_robustness(shift: pd.DataFrame, path: Path) -> Any:
    """Accuracy (top) and consistency with the unshifted prediction (bottom) against the diagonal shift in
    pixels, circular (left) and linear (right): each arm's mean over its runs, band = ± std. Returns the figure
    it saved to ``path``."""
    arms = list(dict.fromkeys(shift["arm"]))
    fig = _figure(sum(len(a) // 100 + 1 for a in arms) + 6)
    axes = fig.subplots(2, 2, sharex=True, sharey="row")  # circular and linear on one scale
    for col, mode in enumerate(("circular", "linear")):
        for row, (metric, label) in enumerate((("acc", "accuracy (%)"), ("consistency", "consistency (%)"))):
            ax = axes[row][col]
            for arm in arms:
                points = shift[
                    (shift["arm"] == arm) & (shift["curve"] == f"{mode}_diag") & (shift["metric"] == metric)
                ].sort_values("shift")
                if points.empty:
                    continue
                mean, std = points["mean"] * 100, points["std"].fillna(0) * 100
                (line,) = ax.plot(points["shift"], mean, marker="o", markersize=3, label=arm)
                ax.fill_between(points["shift"], mean - std, mean + std, color=line.get_color(), alpha=0.15)
            ax.set_title(f"{mode} shift, diagonal", fontsize="medium")
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel(label)
            if row == 1:
                ax.set_xlabel("shift (pixels, down and right)")
    fig.suptitle("Shift robustness: mean over seeds, band = ± std (consistency: same class as unshifted)")
    _legend(fig, axes[0][0])
    fig.savefig(path, dpi=120)
    return fig

"""A bench run's record: each strategy's JSON entry (both paths' windows, medians, FLOP/s, memory, the ratio)
and the printed table."""

from __future__ import annotations

import statistics
from typing import Any

from downsample_lab.bench.lightning import PathResult


def strategy_record(runs: dict[str, PathResult], params: int, flops_per_image: int) -> dict[str, Any]:
    """The JSON record of one strategy: both paths' windows, medians, FLOP/s and memory, and the ratio."""
    record: dict[str, Any] = {"params": params, "flops_per_image": flops_per_image}
    for path, r in runs.items():
        record[path] = {
            "images_per_sec": r.images_per_sec,
            "best_images_per_sec": max(r.window_images_per_sec),
            "window_images_per_sec": r.window_images_per_sec,
            "flops_per_sec": 3 * flops_per_image * r.images_per_sec,
            "host_us_per_step": r.host_us_per_step,
            "window_host_us_per_step": r.window_host_us_per_step,
            "peak_memory_bytes": r.peak_memory_bytes,
            "losses": r.losses,
        }
    raw, lit = runs["raw"], runs["lightning"]
    record["ratio"] = lit.images_per_sec / raw.images_per_sec
    # Load from other processes only ever slows a window down: on a shared machine the fastest windows are the
    # closest to the paths' own speeds, and their ratio a cross-check of the median's.
    record["best_ratio"] = max(lit.window_images_per_sec) / max(raw.window_images_per_sec)
    pairs = zip(lit.window_images_per_sec, raw.window_images_per_sec, strict=True)
    record["window_ratios"] = [lw / rw for lw, rw in pairs]
    # Each Lightning window and the raw window right after it ran under the same load: the median of their
    # ratios resists a machine whose speed drifts or comes in bursts better than the ratio of the medians.
    record["paired_ratio"] = statistics.median(record["window_ratios"])
    record["host_ratio"] = raw.host_us_per_step / lit.host_us_per_step  # raw/lightning: 1 = no host overhead
    return record


def format_table(results: dict[str, dict[str, Any]], memory_label: str) -> str:
    """The printed table: one row per strategy."""
    head = (
        f"{'strategy':<9} {'raw img/s':>17} {'lightning img/s':>17} {'ratio':>6} {'paired':>6} {'best':>6} "
        f"{'params':>9} {'MFLOP/img':>9} {'raw GFLOP/s':>11} {'L GFLOP/s':>9} {'raw MiB':>7} {'L MiB':>7} "
        f"{'others':>6} {'raw host µs':>11} {'L host µs':>9}"
    )
    lines = [head, "-" * len(head)]

    def rate(p: dict[str, Any]) -> str:
        w = p["window_images_per_sec"]
        return f"{p['images_per_sec']:.0f} ({min(w):.0f}-{max(w):.0f})"

    for name, r in results.items():
        raw, lit = r["raw"], r["lightning"]
        lines.append(
            f"{name:<9} {rate(raw):>17} {rate(lit):>17} {r['ratio']:>6.3f} {r['paired_ratio']:>6.3f} "
            f"{r['best_ratio']:>6.3f} {r['params']:>9,} {r['flops_per_image'] / 1e6:>9.1f} "
            f"{raw['flops_per_sec'] / 1e9:>11.1f} {lit['flops_per_sec'] / 1e9:>9.1f} "
            f"{raw['peak_memory_bytes'] / 2**20:>7.0f} {lit['peak_memory_bytes'] / 2**20:>7.0f} "
            f"{'-' if r.get('other_cpu_cores') is None else format(r['other_cpu_cores'], '.2f'):>6} "
            f"{raw['host_us_per_step']:>11,.0f} {lit['host_us_per_step']:>9,.0f}"
        )
    lines += [
        "img/s: median of the windows (min-max); ratio: lightning/raw of the medians; paired: median of the",
        "ratios of each Lightning window to the raw window after it (steadier on a noisy machine); best:",
        "lightning/raw of each path's fastest window; GFLOP/s: 3 x forward FLOPs x median img/s; others: CPU",
        "cores other processes kept busy meanwhile (near 0 on a quiet machine; more makes the figures noisy);",
        "host µs: CPU time of the process per step (median of the windows), the host work a GPU run waits on;",
        f"MiB: {memory_label}.",
        "(The Lightning path's epoch line, logged above the table, counts the raw windows' time too.)",
    ]
    return "\n".join(lines)

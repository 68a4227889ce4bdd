"""Training throughput: ``python -m downsample_lab.bench [overrides]``.

For each downsampling strategy of ``bench.strategies``, in one process, this measures training images per second
of two paths that do the same work per step:

(a) **raw** (``rawloop.RawLoop``): a minimal hand-written PyTorch loop over the in-memory uint8 training
    tensor: slices of a seeded permutation, batched crop/flip and normalisation, forward and loss in the
    training-step context of the precision plugin Lightning builds for the precision (the same autocast),
    backward, optimiser step and LR-schedule step;
(b) **lightning** (``interleave.run_lightning``): the project's own training path: a ``lightning.Trainer`` from
    ``trainer.build_trainer`` with the TensorBoard logger and the ``EpochThroughput`` callback, fitting the
    ``Classifier`` on the ``CIFAR10DataModule``, with validation, its sanity check and checkpointing off (timing
    excludes evaluation).

Both build the network through ``Classifier`` from the same seed (same weights, ``channels_last`` and
``compile``), take the optimiser and schedule from ``optim.build_optimizer``, and draw the same batches and
augmentation: for the same config their losses agree step for step (``tests/test_bench.py`` checks it).

Timing. The two paths run interleaved, window by window, so that a machine whose load changes (other jobs on a
shared CPU, clocks) slows both alike: the Lightning path runs ``bench.warmup_steps`` untimed steps (the raw loop
ran its own before), then ``bench.windows`` times: a window of ``bench.window_steps`` Lightning steps, then,
from inside the Lightning callback and with its own RNG state, a window of as many raw steps. Each window is
timed from a device sync to a device sync; a path's throughput is the median of its windows' images/s and the
ratio is lightning/raw of those medians (the JSON also keeps every window and each pair's ratio). The bench's
own TensorBoard ``train/images_per_sec`` includes the interleaved raw windows: read the JSON instead.

Results: a table on stdout and a JSON file (``<run dir>/bench.json`` unless ``bench.out`` names another) with
every window, the ratio, forward FLOPs per image, achieved FLOP/s (training ≈ 3 × forward FLOPs × images/s),
peak memory, the hardware, the library versions and the whole config. Peak memory is measured over each path's
warm-up steps (steady-state steps allocate nothing new): on a GPU ``torch.cuda.max_memory_allocated`` less what
the other path holds; on a CPU the peak resident set size of the whole process (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``), which includes the Python runtime, the libraries and the data set (``machine``
reads these, the hardware and the versions).

This module is the entry point: the config and its checks, both paths of one strategy, the table and the JSON.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import os
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from downsample_lab import cli
from downsample_lab.callbacks import synchronize
from downsample_lab.classifier import Classifier
from downsample_lab.config import BenchConfig, Downsample, ModelConfig, config_dir, plain, validate
from downsample_lab.data import CIFAR10DataModule
from downsample_lab.data.sources import Split
from downsample_lab.entry import run_dir, run_task
from downsample_lab.errors import ConfigError
from downsample_lab.interleave import PathResult, Plan, run_lightning
from downsample_lab.machine import (
    OtherCpuLoad,
    bench_device,
    hardware,
    memory_kind,
    peak_memory,
    reset_peak_memory,
    versions,
)
from downsample_lab.rawloop import RawLoop
from downsample_lab.trainer import distributed_job, resolve_precision, uses_cuda

log = logging.getLogger(__name__)

# The precisions both paths run the same way: plain float32, or autocast (with a GradScaler for float16).
BENCH_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


def validate_bench(cfg: DictConfig) -> DictConfig:
    """Check the bench config (model, data, optim, trainer and ``bench``), and that it is one the bench can run
    here (one device, a precision both paths run alike); return it typed or raise ConfigError."""
    cfg = validate(cfg, BenchConfig)
    t = cfg.trainer
    if cfg.model.name != "cnn":
        raise ConfigError(
            f"model.name={cfg.model.name} is not valid for the bench; bench.strategies are model.downsample "
            "values of model.name=cnn"
        )
    devices = t.devices
    one = devices == 1 or (OmegaConf.is_list(devices) and len(devices) == 1)
    one = one or (devices == "auto" and not (uses_cuda(t) and torch.cuda.device_count() > 1))
    if not one or t.num_nodes != 1:
        raise ConfigError(
            f"trainer.devices={t.devices} trainer.num_nodes={t.num_nodes} is not valid for the bench; it compares "
            "single-device loops, so use trainer.devices=1 trainer.num_nodes=1"
        )
    if t.fast_dev_run:
        raise ConfigError(
            f"trainer.fast_dev_run={t.fast_dev_run} is not valid for the bench; shorten it with "
            "bench.windows and bench.window_steps instead"
        )
    precision, _ = resolve_precision(t)
    if precision not in BENCH_PRECISIONS:
        raise ConfigError(
            f"trainer.precision={t.precision} (runs as {precision}) is not supported by the bench; "
            f"use auto, {', '.join(BENCH_PRECISIONS)}"
        )
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# Both paths of one strategy
# ---------------------------------------------------------------------------------------------------------------


def build_classifier(cfg: DictConfig, downsample: str) -> Classifier:
    """The project's LightningModule for ``downsample``, seeded: both paths start from the same weights and RNG."""
    model: ModelConfig = OmegaConf.to_object(cfg.model)
    model.downsample = Downsample(downsample)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return Classifier(
        model, OmegaConf.to_object(cfg.optim), max_shift=0, tta_level=0, batch_size=cfg.data.batch_size
    )


def bench_strategy(
    cfg: DictConfig, name: str, train: Split, device: torch.device, precision: str, out: Path
) -> dict[str, Any]:
    """Both paths for one strategy: the raw loop's warm-up, then the interleaved windows; its record."""
    b = cfg.bench
    plan = Plan(b.warmup_steps, b.window_steps, b.windows)
    gc.collect()  # the previous strategy's trainer and models hold memory through reference cycles
    if device.type == "cuda":
        torch.cuda.empty_cache()
    clf = build_classifier(cfg, name)
    raw = RawLoop(clf, train, cfg, device, precision, plan.total_steps)
    synchronize(device)
    reset_peak_memory(device)
    raw.run(plan.warmup_steps)
    synchronize(device)
    raw_peak = peak_memory(device)
    lightning, raw_result = run_lightning(
        build_classifier(cfg, name), cfg, out, f"bench,downsample={name}", plan, raw
    )
    raw_result.peak_memory_bytes = raw_peak
    return strategy_record({"raw": raw_result, "lightning": lightning}, clf.n_params, clf.flops_per_image)


# ---------------------------------------------------------------------------------------------------------------
# The table, the JSON
# ---------------------------------------------------------------------------------------------------------------


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
    record["host_ratio"] = raw.host_us_per_step / lit.host_us_per_step  # raw/lightning: 1 = no host overhead
    return record


def format_table(results: dict[str, dict[str, Any]], memory_label: str) -> str:
    """The printed table: one row per strategy."""
    head = (
        f"{'strategy':<9} {'raw img/s':>17} {'lightning img/s':>17} {'ratio':>6} {'best':>6} {'params':>9} "
        f"{'MFLOP/img':>9} {'raw GFLOP/s':>11} {'L GFLOP/s':>9} {'raw MiB':>7} {'L MiB':>7} {'others':>6} "
        f"{'raw host µs':>11} {'L host µs':>9}"
    )
    lines = [head, "-" * len(head)]

    def rate(p: dict[str, Any]) -> str:
        w = p["window_images_per_sec"]
        return f"{p['images_per_sec']:.0f} ({min(w):.0f}-{max(w):.0f})"

    for name, r in results.items():
        raw, lit = r["raw"], r["lightning"]
        lines.append(
            f"{name:<9} {rate(raw):>17} {rate(lit):>17} {r['ratio']:>6.3f} {r['best_ratio']:>6.3f} "
            f"{r['params']:>9,} {r['flops_per_image'] / 1e6:>9.1f} "
            f"{raw['flops_per_sec'] / 1e9:>11.1f} {lit['flops_per_sec'] / 1e9:>9.1f} "
            f"{raw['peak_memory_bytes'] / 2**20:>7.0f} {lit['peak_memory_bytes'] / 2**20:>7.0f} "
            f"{'-' if r.get('other_cpu_cores') is None else format(r['other_cpu_cores'], '.2f'):>6} "
            f"{raw['host_us_per_step']:>11,.0f} {lit['host_us_per_step']:>9,.0f}"
        )
    lines += [
        "img/s: median of the windows (min-max); ratio: lightning/raw of the medians; best: of the fastest",
        "windows; GFLOP/s: 3 x forward FLOPs x median img/s; others: CPU cores other processes kept busy",
        "meanwhile (near 0 on a quiet machine; more makes the figures noisy); host µs: CPU time of the process",
        "per step (median of the windows), the host work a GPU run waits on; MiB: " + memory_label,
    ]
    return "\n".join(lines)


def bench(cfg: DictConfig) -> dict[str, float]:
    """Measure every strategy's raw and Lightning throughput, print the table, write the JSON; return the ratios."""
    cfg = validate_bench(cfg)
    out = run_dir()
    b = cfg.bench
    device = bench_device(cfg.trainer)
    if b.threads is not None:
        torch.set_num_threads(b.threads)
    precision, why = resolve_precision(cfg.trainer)
    load_start = os.getloadavg()
    steps = Plan(b.warmup_steps, b.window_steps, b.windows).total_steps
    log.info("Bench on %s, precision %s (%s): %d strategies x 2 paths x %d steps of batch %d.",
             device, precision, why, len(b.strategies), steps, cfg.data.batch_size)  # fmt: skip

    datamodule = CIFAR10DataModule(
        OmegaConf.to_object(cfg.data), channels_last=cfg.model.channels_last, seed=cfg.seed
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.train_set is not None

    results: dict[str, dict[str, Any]] = {}
    for name in b.strategies:
        log.info("Benchmarking %s.", name)
        others = OtherCpuLoad()
        results[name] = bench_strategy(cfg, name, datamodule.train_set, device, precision, out)
        results[name]["other_cpu_cores"] = others.cores()

    label = memory_kind(device)
    table = format_table(results, label)
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    record = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python -m downsample_lab.bench", *overrides]),
        "hardware": hardware(device),
        "versions": versions(),
        "precision": precision,
        "precision_reason": why,
        "memory_kind": label,
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "results": results,
        "config": plain(cfg),
    }
    path = Path(b.out).expanduser() if b.out else out / "bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(table, flush=True)
    log.info("Results written to %s", path)
    return {f"{name}/ratio": r["ratio"] for name, r in results.items()}


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="bench")
def _main(cfg: DictConfig) -> None:
    with distributed_job():
        run_task(bench, cfg, metric=None)


def main() -> None:
    """Console-script and ``python -m`` entry point."""
    cli.run(_main, "bench", BenchConfig)


if __name__ == "__main__":
    main()

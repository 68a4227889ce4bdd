"""Training throughput: ``python -m downsample_lab.bench [overrides]``.

For each downsampling strategy of ``bench.strategies``, in one process, this measures training images per second
of two paths that do the same work per step:

(a) **raw** (``bench.rawloop.RawLoop``): a minimal hand-written PyTorch loop over the in-memory uint8 training
    tensor: slices of a seeded permutation, batched crop/flip and normalisation, forward and loss in the
    training-step context of the precision plugin Lightning builds for the precision (the same autocast),
    backward, optimiser step and LR-schedule step;
(b) **lightning** (``bench.lightning.run_lightning``): the project's own training path: a ``lightning.Trainer`` from
    ``engine.trainer.build_trainer`` with the TensorBoard logger and the callbacks ``train`` fits with
    (``engine.callbacks.fit_callbacks``, and the recipe's lookahead), fitting the
    ``Classifier`` on the ``CIFAR10DataModule``, with validation, its sanity check and checkpointing off (timing
    excludes evaluation).

Both build the network through ``Classifier`` from the same seed (same weights, ``channels_last`` and
``compile``), take the optimiser and schedule from ``optim.build.build_optimizer``, and draw the same batches and
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

This module is the entry point: the config and its checks, the loop over the strategies, the JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from downsample_lab.config import BenchConfig, config_dir, plain, validate
from downsample_lab.console import counted, quiet_libraries
from downsample_lab.data.config import check_data_files
from downsample_lab.device import check_accelerator, cuda_device_count, resolve_precision, uses_cuda
from downsample_lab.errors import ConfigError
from downsample_lab.run import argv, resolvers
from downsample_lab.run.ddp import distributed_job
from downsample_lab.run.job import run_dir, run_task

log = logging.getLogger(__name__)

# The YAML configs call these resolvers: registered where the entry point is loaded (see downsample_lab.train).
resolvers.register()

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
    check_accelerator(t)
    check_data_files(cfg.data)
    if cfg.model.name != "cnn":
        raise ConfigError(
            f"model.name={cfg.model.name} is not valid for the bench; bench.strategies are model.downsample "
            "values of model.name=cnn"
        )
    devices = t.devices
    one = devices == 1 or (OmegaConf.is_list(devices) and len(devices) == 1)
    one = one or (devices == "auto" and not (uses_cuda(t) and cuda_device_count() > 1))
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


def bench(cfg: DictConfig) -> dict[str, float]:
    """Measure every strategy's raw and Lightning throughput, print the table, write the JSON; return the ratios."""
    cfg = validate_bench(cfg)
    import torch  # once the config is valid: --help and a typo answer without it

    from downsample_lab.bench.lightning import Plan
    from downsample_lab.bench.machine import OtherCpuLoad, hardware, memory_kind, versions
    from downsample_lab.bench.record import format_table
    from downsample_lab.bench.strategy import bench_strategy
    from downsample_lab.data import CIFAR10DataModule
    from downsample_lab.device import training_device

    quiet_libraries()  # again: importing Lightning just now set its loggers back to INFO

    out = run_dir()
    b = cfg.bench
    device = training_device(cfg.trainer)
    if b.threads is not None:
        torch.set_num_threads(b.threads)
    precision, why = resolve_precision(cfg.trainer)
    load_start = os.getloadavg()
    steps = Plan(b.warmup_steps, b.window_steps, b.windows).total_steps
    log.info("Bench on %s, precision %s (%s): %s x 2 paths x %d steps of batch %d.", device, precision, why,
             counted(len(b.strategies), "strategy", "strategies"), steps, cfg.data.batch_size)  # fmt: skip

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
    argv.run(_main, "bench", BenchConfig)


if __name__ == "__main__":
    main()

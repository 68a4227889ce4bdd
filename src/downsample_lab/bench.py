"""Training throughput: ``python -m downsample_lab.bench [overrides]``.

For each downsampling strategy of ``bench.strategies``, in one process, this measures training images per second
of two paths that do the same work per step:

(a) **raw**: a minimal hand-written PyTorch loop over the in-memory uint8 training tensor: slices of a seeded
    permutation, batched crop/flip and normalisation, forward and loss under the same autocast, backward,
    optimiser step and LR-schedule step;
(b) **lightning**: the project's own training path: a ``lightning.Trainer`` from ``trainer.build_trainer``
    with the TensorBoard logger and the ``EpochThroughput`` callback, fitting the ``Classifier`` on the
    ``CIFAR10DataModule``, with validation, its sanity check and checkpointing off (timing excludes evaluation).

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
``/proc/self/clear_refs``), which includes the Python runtime, the libraries and the data set.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from downsample_lab import compat
from downsample_lab.callbacks import EpochThroughput, synchronize
from downsample_lab.classifier import Classifier
from downsample_lab.config import BenchConfig, Downsample, ModelConfig, config_dir, plain, validate
from downsample_lab.data import CIFAR10DataModule
from downsample_lab.data.augment import normalize, random_crop_flip
from downsample_lab.data.cifar10 import epoch_batches
from downsample_lab.data.sources import Split
from downsample_lab.entry import run_dir, run_task
from downsample_lab.errors import ConfigError
from downsample_lab.models import DOWNSAMPLE_NAMES
from downsample_lab.optim import build_optimizer
from downsample_lab.trainer import (
    build_trainer,
    distributed_job,
    resolve_precision,
    tensorboard_logger,
    uses_cuda,
)

log = logging.getLogger(__name__)

# The precisions both paths run the same way: plain float32, or autocast (with a GradScaler for float16).
BENCH_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
LIGHTNING_MAX_EPOCHS = -1  # no epoch limit: max_steps ends the Lightning path's run


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


def validate_bench(cfg: DictConfig) -> DictConfig:
    """Check the bench config (model, data, optim, trainer and ``bench``); return it typed or raise ConfigError."""
    cfg = validate(cfg, BenchConfig)
    b, t = cfg.bench, cfg.trainer
    if cfg.model.name != "cnn":
        raise ConfigError(
            f"model.name={cfg.model.name} is not valid for the bench; bench.strategies are model.downsample "
            "values of model.name=cnn"
        )
    if not b.strategies:
        raise ConfigError(
            f"bench.strategies={list(b.strategies)} is not valid; list one or more of {', '.join(DOWNSAMPLE_NAMES)}"
        )
    for key in ("warmup_steps", "window_steps", "windows"):
        if b[key] < 1:
            raise ConfigError(f"bench.{key}={b[key]} is not valid; use an integer >= 1")
    if b.threads is not None and b.threads < 1:
        raise ConfigError(
            f"bench.threads={b.threads} is not valid; use null (torch's default) or an integer >= 1"
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


@dataclass(frozen=True)
class Plan:
    """Untimed warm-up steps, then ``windows`` timed windows of ``window_steps`` steps, per path."""

    warmup_steps: int
    window_steps: int
    windows: int

    @property
    def total_steps(self) -> int:
        """Every step one path runs."""
        return self.warmup_steps + self.windows * self.window_steps

    def is_boundary(self, steps_done: int) -> bool:
        """True at the end of the warm-up and of each window."""
        after = steps_done - self.warmup_steps
        return after >= 0 and after % self.window_steps == 0


@dataclass
class PathResult:
    """What the bench measured of one path."""

    window_images_per_sec: list[float] = field(default_factory=list)
    # CPU seconds the process spent per step (all its threads), per window: the host work of a step, which a
    # GPU run waits on when its kernels are short. Unlike wall time, other processes' load hardly changes it.
    window_host_us_per_step: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # at the end of each window: a check that it trains
    peak_memory_bytes: int = 0

    @property
    def images_per_sec(self) -> float:
        """Median over the windows."""
        return statistics.median(self.window_images_per_sec)

    @property
    def host_us_per_step(self) -> float:
        """Median over the windows."""
        return statistics.median(self.window_host_us_per_step)


# ---------------------------------------------------------------------------------------------------------------
# Devices: sync and memory
# ---------------------------------------------------------------------------------------------------------------


def bench_device(trainer_cfg: DictConfig) -> torch.device:
    """The device Lightning trains on for this ``trainer`` group; the raw loop uses the same."""
    if uses_cuda(trainer_cfg):
        devices = trainer_cfg.devices
        return torch.device("cuda", int(devices[0]) if OmegaConf.is_list(devices) else 0)
    if trainer_cfg.accelerator == "mps" or (
        trainer_cfg.accelerator == "auto" and torch.backends.mps.is_available()
    ):
        return torch.device("mps")
    return torch.device("cpu")


def _can_reset_rss_peak() -> bool:
    return os.access("/proc/self/clear_refs", os.W_OK) and Path("/proc/self/status").is_file()


def memory_kind(device: torch.device) -> str:
    """What ``peak_memory_bytes`` means on ``device``."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated over the path's warm-up, less what the other path holds"
    if _can_reset_rss_peak():
        return (
            "peak RSS of the whole process over the path's warm-up (VmHWM, reset via /proc/self/clear_refs)"
        )
    return "peak RSS of the whole process since it started (getrusage ru_maxrss; cannot be reset here)"


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak reading (see :func:`memory_kind`)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif _can_reset_rss_peak():
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS


def allocated_memory(device: torch.device) -> int:
    """Bytes of live tensors on a GPU (what another path holds); 0 elsewhere, where it is not told apart."""
    return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else 0


def peak_memory(device: torch.device, baseline: int = 0) -> int:
    """Bytes at the peak since :func:`reset_peak_memory` (see :func:`memory_kind`), less ``baseline``."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)) - baseline
    if _can_reset_rss_peak():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


# ---------------------------------------------------------------------------------------------------------------
# (a) the raw loop
# ---------------------------------------------------------------------------------------------------------------


def build_classifier(cfg: DictConfig, downsample: str) -> Classifier:
    """The project's LightningModule for ``downsample``, seeded: both paths start from the same weights and RNG."""
    model: ModelConfig = OmegaConf.to_object(cfg.model)
    model.downsample = Downsample(downsample)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return Classifier(
        model, OmegaConf.to_object(cfg.optim), max_shift=0, tta_level=0, batch_size=cfg.data.batch_size
    )


def autocast_context(precision: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """What Lightning's precision plugin runs ``training_step`` in, for ``precision``."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    if dtype is None:
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def limited_batches(batches: list[torch.Tensor], limit: Any) -> list[torch.Tensor]:
    """``batches`` cut to ``trainer.limit_train_batches`` as Lightning applies it."""
    if isinstance(limit, float):
        return batches[: max(1, int(len(batches) * limit))]
    if isinstance(limit, int):
        return batches[:limit]
    return batches


class RawLoop:
    """Path (a): a hand-written training loop over ``clf.net``, run a given number of steps at a time.

    The optimiser and LR schedule come from :func:`downsample_lab.optim.build_optimizer`, as the Lightning
    path's ``configure_optimizers`` builds them (``total_steps`` steps, ``max_epochs=-1``). The data is ``train``
    held where the data module holds it (``data.on_device``: on the GPU by default, in host memory on a CPU).
    The loop keeps its own global-RNG state, so the steps it draws are the same whether or not other work runs
    between its calls.
    """

    def __init__(
        self,
        clf: Classifier,
        train: Split,
        cfg: DictConfig,
        device: torch.device,
        precision: str,
        total_steps: int,
    ) -> None:
        self.device, self.cfg = device, cfg
        self.net = clf.net.to(device).train()
        self.opt, self.sched = build_optimizer(
            self.net, clf.optim_cfg, total_steps, LIGHTNING_MAX_EPOCHS, cfg.data.batch_size
        )
        on_device = cfg.data.on_device if cfg.data.on_device is not None else device.type == "cuda"
        self.data_device = device if on_device else torch.device("cpu")
        self.images, self.labels = train.images.to(self.data_device), train.labels.to(self.data_device)
        self.autocast = autocast_context(precision, device)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
        self.total_steps, self.steps_done = total_steps, 0
        self.last_loss: torch.Tensor | None = None
        self._batches = self._batch_indices()
        # The RNG state right after the seeded model build: where the Lightning path's draws start too.
        self._rng = self._get_rng()

    def _get_rng(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def _set_rng(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)

    @contextmanager
    def _own_rng(self) -> Iterator[None]:
        outer = self._get_rng()
        self._set_rng(self._rng)
        try:
            yield
        finally:
            self._rng = self._get_rng()
            self._set_rng(outer)

    def _batch_indices(self) -> Iterator[torch.Tensor]:
        c, epoch = self.cfg, 0
        while True:
            batches = epoch_batches(len(self.labels), c.data.batch_size, c.seed + epoch, self.data_device)
            yield from limited_batches(batches, c.trainer.limit_train_batches)
            epoch += 1

    def run(self, steps: int) -> int:
        """Train ``steps`` more steps (without a final device sync); returns the number of images trained on."""
        if self.steps_done + steps > self.total_steps:
            raise ValueError(f"the schedule has {self.total_steps} steps; {self.steps_done} are done")
        c = self.cfg
        smoothing, clip = c.optim.label_smoothing, c.trainer.gradient_clip_val
        images = 0
        with self._own_rng():
            for _ in range(steps):
                idx = next(self._batches)
                x = self.images.index_select(0, idx).to(self.device, non_blocking=True)
                y = self.labels.index_select(0, idx).to(self.device, non_blocking=True)
                if c.data.augment:
                    x = random_crop_flip(x)
                x = normalize(x, c.model.channels_last)
                with self.autocast():
                    loss = F.cross_entropy(self.net(x), y, label_smoothing=smoothing)
                self.opt.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    if clip:
                        self.scaler.unscale_(self.opt)
                        torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
                    self.scaler.step(self.opt)
                    self.scaler.update()
                else:
                    loss.backward()
                    if clip:
                        torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
                    self.opt.step()
                self.sched.step()
                images += len(y)
        self.steps_done += steps
        self.last_loss = loss.detach()
        return images


def time_raw_window(raw: RawLoop, steps: int) -> tuple[float, float]:
    """Images per second and host CPU µs per step of ``steps`` raw steps, from a device sync to a device sync."""
    synchronize(raw.device)
    t0, c0 = time.perf_counter(), time.process_time()
    images = raw.run(steps)
    synchronize(raw.device)
    return images / (time.perf_counter() - t0), (time.process_time() - c0) / steps * 1e6


# ---------------------------------------------------------------------------------------------------------------
# (b) the Lightning path, with the raw windows interleaved
# ---------------------------------------------------------------------------------------------------------------


class InterleavedTimer(L.Callback):
    """Times the Lightning path's windows and runs a timed raw window after each (see the module docstring).

    At every plan boundary (read at ``on_train_batch_end``, after the optimiser step): sync, close the Lightning
    window, run the raw window, then open the next Lightning window. Whatever Lightning does between two
    boundaries, including the hooks after this one, falls inside a Lightning window.
    """

    def __init__(self, plan: Plan, raw: RawLoop | None, other_bytes: int = 0) -> None:
        self.plan, self.raw, self.other_bytes = plan, raw, other_bytes
        self.lightning, self.raw_result = PathResult(), PathResult()
        self._t0, self._c0, self._images = 0.0, 0.0, 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        reset_peak_memory(pl_module.device)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[1])
        step = trainer.global_step  # counts this batch's optimiser step already
        if not self.plan.is_boundary(step):
            return
        device = pl_module.device
        synchronize(device)
        now, cpu = time.perf_counter(), time.process_time()
        if step == self.plan.warmup_steps:
            self.lightning.peak_memory_bytes = peak_memory(device, self.other_bytes)
        else:
            self.lightning.window_images_per_sec.append(self._images / (now - self._t0))
            self.lightning.window_host_us_per_step.append((cpu - self._c0) / self.plan.window_steps * 1e6)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.lightning.losses.append(float(loss))
            if self.raw is not None:
                rate, host_us = time_raw_window(self.raw, self.plan.window_steps)
                self.raw_result.window_images_per_sec.append(rate)
                self.raw_result.window_host_us_per_step.append(host_us)
                self.raw_result.losses.append(float(self.raw.last_loss))
        self._images = 0
        self._t0, self._c0 = time.perf_counter(), time.process_time()


def run_lightning(
    clf: Classifier, cfg: DictConfig, out: Path, name: str, plan: Plan, raw: RawLoop | None = None
) -> tuple[PathResult, PathResult]:
    """Path (b): fit ``clf`` as ``train`` does, ``plan.total_steps`` steps without evaluation, timing its windows.

    With ``raw``, a raw window runs after each Lightning window. Returns the Lightning and the raw results (the
    raw one is empty without ``raw``; its peak memory is measured by the caller, over its own warm-up).
    """
    other_bytes = allocated_memory(bench_device(cfg.trainer))  # the raw loop's model and data, on a GPU
    datamodule = CIFAR10DataModule(
        OmegaConf.to_object(cfg.data), channels_last=cfg.model.channels_last, seed=cfg.seed
    )
    trainer_cfg = OmegaConf.create(plain(cfg.trainer))
    trainer_cfg.max_epochs = LIGHTNING_MAX_EPOCHS
    trainer_cfg.max_steps = plan.total_steps
    trainer_cfg.limit_val_batches = 0  # no validation loop and no sanity check: timing excludes evaluation
    trainer_cfg.num_sanity_val_steps = 0
    trainer_cfg.enable_checkpointing = False  # train's checkpoints are written after validation
    timer = InterleavedTimer(plan, raw, other_bytes)
    trainer = build_trainer(
        trainer_cfg, run_dir=out, callbacks=[EpochThroughput(), timer], logger=tensorboard_logger(out, name)
    )
    trainer.fit(clf, datamodule=datamodule)
    if len(timer.lightning.window_images_per_sec) != plan.windows:
        raise RuntimeError(
            f"the Lightning path stopped after {trainer.global_step} of {plan.total_steps} steps"
        )
    return timer.lightning, timer.raw_result


def bench_strategy(
    cfg: DictConfig, name: str, train: Split, device: torch.device, precision: str, out: Path
) -> dict[str, PathResult]:
    """Both paths for one strategy: the raw loop's warm-up, then the interleaved windows."""
    b = cfg.bench
    plan = Plan(b.warmup_steps, b.window_steps, b.windows)
    gc.collect()  # the previous strategy's trainer and models hold memory through reference cycles
    if device.type == "cuda":
        torch.cuda.empty_cache()
    raw = RawLoop(build_classifier(cfg, name), train, cfg, device, precision, plan.total_steps)
    synchronize(device)
    reset_peak_memory(device)
    raw.run(plan.warmup_steps)
    synchronize(device)
    raw_peak = peak_memory(device)
    lightning, raw_result = run_lightning(
        build_classifier(cfg, name), cfg, out, f"bench,downsample={name}", plan, raw
    )
    raw_result.peak_memory_bytes = raw_peak
    return {"raw": raw_result, "lightning": lightning}


# ---------------------------------------------------------------------------------------------------------------
# The machine, the table, the JSON
# ---------------------------------------------------------------------------------------------------------------


class OtherCpuLoad:
    """How many CPU cores other processes kept busy, on average, between two readings (Linux; else None).

    The machine's busy time (``/proc/stat``) less this process's own CPU time, over the wall time: on a shared
    machine it says how much of a result is other people's work. Hand-written: ``os.getloadavg`` counts this
    process too and averages over minutes.
    """

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
        own = os.times()
        return time.monotonic(), busy, own.user + own.system

    def cores(self) -> float | None:
        """Average cores used by other processes since this object was made."""
        end = self._read()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        wall, busy, own = (e - s for e, s in zip(end, self._start, strict=True))
        return max(0.0, (busy - own) / wall)


def hardware(device: torch.device) -> dict[str, Any]:
    """CPU model, core counts, bf16 support, and the GPU when the bench runs on one."""
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "device": str(device),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **{f"cpu_{k}": v for k, v in compat.cpu_bf16_features().items()},
        "platform": platform.platform(),
        "gpu": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {
            "name": props.name,
            "memory_bytes": props.total_memory,
            "capability": f"{props.major}.{props.minor}",
            "count": torch.cuda.device_count(),
        }
    return info


def versions() -> dict[str, str | None]:
    """Python, torch (with its CUDA and cuDNN) and Lightning versions."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(cudnn) if cudnn else None,
        "lightning": L.__version__,
    }


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
    steps = b.warmup_steps + b.windows * b.window_steps
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
        probe = build_classifier(cfg, name)
        others = OtherCpuLoad()
        runs = bench_strategy(cfg, name, datamodule.train_set, device, precision, out)
        results[name] = strategy_record(runs, probe.n_params, probe.flops_per_image)
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
def main(cfg: DictConfig) -> None:
    """``python -m`` entry point."""
    with distributed_job():
        run_task(bench, cfg, metric=None)


if __name__ == "__main__":
    main()

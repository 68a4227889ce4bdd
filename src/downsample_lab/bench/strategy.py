"""Both paths of one strategy: the same seeded module for each, the raw loop's warm-up, then the windows of the
two paths interleaved (:func:`~downsample_lab.bench.lightning.run_lightning`)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from downsample_lab.bench.lightning import Plan, run_lightning
from downsample_lab.bench.machine import peak_memory, reset_peak_memory
from downsample_lab.bench.rawloop import RawLoop
from downsample_lab.bench.record import strategy_record
from downsample_lab.data.sources import Split
from downsample_lab.device import synchronize
from downsample_lab.engine.classifier import Classifier
from downsample_lab.models.config import Downsample, ModelConfig


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

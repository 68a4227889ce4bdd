"""Build the Lightning Trainer, the loggers and callbacks that every entry point shares."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies.launchers import subprocess_script
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams as hparams_summary

from downsample_lab.callbacks import ProgressBar
from downsample_lab.config import check_accelerator, runs_on_cuda
from downsample_lab.console import quiet_libraries
from downsample_lab.models import effective_widths

log = logging.getLogger(__name__)

# The final metrics that TensorBoard's HParams tab shows beside each run's choices.
HPARAM_METRICS = (
    "val/acc_best",
    "test/acc",
    "test/consistency",
    "train/images_per_sec",
    "model/params",
    "model/flops_per_image",
)


def uses_cuda(trainer_cfg: DictConfig) -> bool:
    """Whether the ``trainer`` config group runs on a CUDA GPU."""
    return runs_on_cuda(trainer_cfg.accelerator)


def resolve_precision(trainer_cfg: DictConfig) -> tuple[str, str]:
    """Turn ``trainer.precision=auto`` into the fastest precision the hardware runs well, and say why."""
    if trainer_cfg.precision != "auto":
        return trainer_cfg.precision, "as configured"
    if uses_cuda(trainer_cfg):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed", "auto: the GPU supports bfloat16"
        return "16-mixed", "auto: the GPU lacks bfloat16"
    # On CPUs with native bf16 (AVX512-BF16 or AMX) autocast roughly doubles the speed of a conv step; on
    # others it emulates bf16 and is slower than float32.
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        return "bf16-mixed", "auto: the CPU has native bfloat16 (AVX512-BF16/AMX)"
    return "32-true", "auto: the CPU has no native bfloat16"


def _hydra_job_command(local_rank: int) -> tuple[list[str], str]:
    """The command that starts DDP process ``local_rank`` of the current Hydra job.

    Lightning's own version re-runs ``sys.argv`` with ``hydra.run.dir``: inside a multirun that re-launches the
    whole sweep in every process, into the wrong directory. This one re-runs only this job's overrides, into
    this job's output directory, with its own log file and without rewriting the job's ``.hydra/`` files.
    """
    import __main__

    hydra_cfg = HydraConfig.get()
    module = __main__.__spec__.name if __main__.__spec__ is not None else "downsample_lab.train"
    command = [sys.executable, "-m", module, *hydra_cfg.overrides.task]
    command += [
        # quoted: a sweep job's directory name holds '=' and ',' from its overrides
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name={hydra_cfg.job.name}_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, hydra_cfg.runtime.cwd


_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "PL_GLOBAL_SEED")


@contextmanager
def distributed_job() -> Iterator[None]:
    """Leave no distributed state behind a job, so the next job of a multirun can start its own processes.

    Lightning keeps the process group alive after ``fit`` (``test`` reuses it) and its launcher leaves
    ``LOCAL_RANK``/``WORLD_SIZE``/... in the environment, from which the next Trainer in the same process would
    conclude that someone else launched it.
    """
    saved = {k: os.environ.get(k) for k in _LAUNCHER_ENV}
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build_trainer(
    trainer_cfg: DictConfig, *, run_dir: Path, callbacks: Iterable[L.Callback], logger: Any
) -> L.Trainer:
    """A ``lightning.Trainer`` from the ``trainer`` config group; every key of the group is a Trainer argument."""
    if HydraConfig.initialized():
        subprocess_script._hydra_subprocess_cmd = _hydra_job_command
    check_accelerator(trainer_cfg)
    kwargs = OmegaConf.to_container(trainer_cfg, resolve=True)
    kwargs["precision"], why = resolve_precision(trainer_cfg)
    log.info("Device %s; precision %s (%s).", describe_device(trainer_cfg), kwargs["precision"], why)
    quiet_libraries()
    callbacks = list(callbacks)
    # A bar only where a person watches it: redirected to a file, tqdm's redraws are noise (EpochSummary's
    # lines say the same). It redraws at the logging interval.
    kwargs["enable_progress_bar"] = trainer_cfg.enable_progress_bar and sys.stderr.isatty()
    if kwargs["enable_progress_bar"]:
        callbacks.append(ProgressBar(refresh_rate=trainer_cfg.log_every_n_steps))
    # The "Model: ..." log line has parameters and FLOPs; Lightning's summary would show 0 FLOPs.
    return L.Trainer(
        **kwargs,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )


def describe_device(trainer_cfg: DictConfig) -> str:
    """Where ``trainer.accelerator`` runs, and why (``auto`` takes a CUDA GPU when there is one)."""
    how = "auto" if trainer_cfg.accelerator == "auto" else "as configured"
    if uses_cuda(trainer_cfg) and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name()}, {how})"
    if uses_cuda(trainer_cfg):
        return f"cuda ({how})"
    if trainer_cfg.accelerator == "auto":
        return "cpu (auto: no CUDA GPU found)"
    return f"{trainer_cfg.accelerator} ({how})"


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"widths": [8, 16]}}`` → ``{"model.widths": "[8, 16]"}``: scalars TensorBoard can show."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)  # lists and null, as the config would write them
    return flat


def tensorboard_logger(run_dir: Path, run_name: str, purge_step: int | None = None) -> TensorBoardLogger:
    """TensorBoard run ``<run_dir>/tb/<run_name>``; ``tensorboard --logdir outputs`` finds every run of every sweep.

    ``purge_step`` (for a resumed run) hides what the interrupted run logged from that step on, so the resumed
    run draws one continuous curve.
    """
    extra = {} if purge_step is None else {"purge_step": purge_step}  # passed on to the SummaryWriter
    return TensorBoardLogger(
        save_dir=str(run_dir), name="tb", version=run_name, default_hp_metric=False, **extra
    )


@rank_zero_only
def log_hparams(
    logger: TensorBoardLogger, cfg: DictConfig, precision: str, metrics: Iterable[str] = HPARAM_METRICS
) -> None:
    """Write the run's whole config to TensorBoard's HParams tab, paired with the final ``metrics``.

    Lightning's ``log_hyperparams(params, metrics)`` would also log each metric as a scalar of value 0 at step
    0, a false point on every accuracy curve; the HParams plugin needs only the metric names, so this writes
    the summary itself. ``precision`` is the one that ran (``trainer.precision=auto`` resolved).
    """
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    flat["trainer.precision"] = precision  # what ran, not "auto"
    if cfg.model.name == "cnn":  # what was built: differs from model.widths with model.match_params=true
        flat["model.effective_widths"] = json.dumps(effective_widths(cfg.model))
    exp, ssi, sei = hparams_summary(flat, dict.fromkeys(metrics, 0.0))
    writer = logger.experiment._get_file_writer()  # as Lightning does for its own hparams
    for summary in (exp, ssi, sei):
        writer.add_summary(summary)

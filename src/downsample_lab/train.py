"""Train one model: ``python -m downsample_lab.train [overrides]`` (or ``-m`` to sweep).

Reads as a straight line: validate the config → find the checkpoint to resume, if any → seed → data → model →
callbacks and logger → trainer → fit → test on the best checkpoint → return ``val/acc_best`` (the metric a
Hydra sweeper would optimise).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from downsample_lab import cli, runs
from downsample_lab.callbacks import (
    EpochSummary,
    EpochThroughput,
    Lookahead,
    MidEpochCheckpoint,
    RunState,
    StopOnNonFiniteLoss,
)
from downsample_lab.classifier import Classifier
from downsample_lab.config import TrainConfig, check_accelerator, check_launcher, config_dir, plain, validate
from downsample_lab.data import CIFAR10DataModule
from downsample_lab.entry import restart_command, run_dir, run_task
from downsample_lab.errors import ConfigError, UserError
from downsample_lab.jobtime import JobTimes, TimedCheckpointIO
from downsample_lab.jobtime import describe as describe_times
from downsample_lab.models import describe_model
from downsample_lab.trainer import build_trainer, distributed_job, log_hparams, tensorboard_logger

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig) -> str:
    """The TensorBoard run's name, short: the choices that tell runs of the study apart and the seed.

    ``maxpool_k3_w64-128-256_seed0``; ``all_cnn_c_w96-192_seed0`` for the All-CNN models.
    """
    m = cfg.model
    widths = "-".join(str(w) for w in m.widths)
    if m.name != "cnn":
        return f"{m.name}_w{widths}_seed{cfg.seed}"
    return f"{m.downsample}_k{m.kernel_size}_w{widths}_seed{cfg.seed}"


def resume_point(cfg: DictConfig, out: Path) -> tuple[Path, int] | None:
    """The checkpoint to continue from and its global step, or None to start afresh.

    ``ckpt_path`` names it; ``resume=true`` means ``<run dir>/checkpoints/last.ckpt``, which a sweep job may
    lack (it never started, or was killed before its first checkpoint) and then starts afresh. The file is read
    here (``weights_only=True``) so that a damaged one, one without training state or one from a run with
    another config stops the run with one sentence before anything is built.
    """
    if cfg.ckpt_path is not None:
        path = Path(cfg.ckpt_path).expanduser()
    elif cfg.resume:
        path = out / "checkpoints" / "last.ckpt"
        if not path.is_file():
            # A sweep job that never started, or was killed before its first checkpoint; or a DDP process
            # (LOCAL_RANK > 0) started by a process that took that decision already.
            if HydraConfig.get().mode == RunMode.MULTIRUN or int(os.environ.get("LOCAL_RANK", 0)) > 0:
                log.info("resume=true: %s holds no checkpoint yet, so this job starts from scratch.", out)
                return None
            if (out / ".hydra" / "overrides.yaml").is_file():
                raise ConfigError(
                    f"resume=true but the run {out} wrote no checkpoint before it stopped, so there is nothing to "
                    f"continue; start it again: {restart_command()}"
                )
            raise ConfigError(
                f"resume=true but {path} does not exist; pass the interrupted run's directory with "
                "hydra.run.dir=<run dir> (or a checkpoint with ckpt_path=<file.ckpt>), or drop resume=true"
            )
    else:
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(
            f"cannot resume from checkpoint {path} ({reason}); it is damaged or not a checkpoint, so pass an "
            "earlier one with ckpt_path=<file.ckpt> or start a new run without resume=true"
        ) from None
    if not isinstance(ckpt, dict) or "loops" not in ckpt or "optimizer_states" not in ckpt:
        raise UserError(
            f"cannot resume from checkpoint {path}: it holds no training state; pass a last.ckpt or "
            "best-*.ckpt written by downsample_lab.train"
        )
    _check_same_run(cfg, ckpt.get("run_config"), path)
    return path, int(ckpt["global_step"])


def _check_same_run(cfg: DictConfig, saved: dict[str, Any] | None, path: Path) -> None:
    # The checkpoint carries the config it was trained with; continuing it under another one would mix two runs.
    if saved is None:
        log.warning("Checkpoint %s records no run config (written by an older version): not compared.", path)
        return
    now, then = runs.flatten_text(plain(cfg)), runs.flatten_text(saved)
    differ = [
        k
        for k in sorted(now.keys() | then.keys())
        if k not in runs.BOOKKEEPING_KEYS and now.get(k) != then.get(k)
    ]
    if differ:
        keys = "; ".join(f"{k}={now.get(k)} here but {then.get(k)} in the run" for k in differ)
        raise ConfigError(
            f"cannot resume from checkpoint {path}: {len(differ)} key(s) differ from the run that wrote it: "
            f"{keys}; drop those overrides (resume=true hydra.run.dir=<run> alone takes the run's own), only "
            f"{', '.join(sorted(runs.BOOKKEEPING_KEYS - {'resume', 'ckpt_path'}))} may change"
        )


def uses_best_checkpoint(cfg: DictConfig) -> bool:
    """``eval.test_weights``: test the val/acc-best checkpoint (True) or the final weights in memory (False).

    ``auto`` is ``final`` when ``data.val_size=0``: the validation set is then the test set, and choosing the
    checkpoint by it would select on the test set (and the final weights are the lookahead's EMA, the ones
    airbench reports); else ``best``.
    """
    choice = cfg.eval.test_weights
    if choice == "auto":
        choice = "final" if cfg.data.val_size == 0 else "best"
    return choice == "best"


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (or continue an interrupted fit), then test the best checkpoint; returns the final metrics."""
    return train_job(cfg)[0]


def train_job(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`train`, with what ``status.json`` records besides the metrics: ``times``, the job's wall seconds
    per phase (:mod:`downsample_lab.jobtime`)."""
    io = TimedCheckpointIO()
    clock = JobTimes(io)
    cfg = validate(cfg)
    out = run_dir()
    resume = resume_point(cfg, out)
    if resume is not None:  # its own checkpoints are there: Lightning's "exists and is not empty" is expected
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    L.seed_everything(cfg.seed, workers=True)

    run: TrainConfig = OmegaConf.to_object(cfg)  # typed objects for the data, the model and the optimiser
    datamodule = CIFAR10DataModule(run.data, channels_last=run.model.channels_last, seed=run.seed)
    model = Classifier(
        run.model, run.optim, max_shift=run.eval.max_shift, tta_level=run.eval.tta_level,
        batch_size=run.data.batch_size, shift_images=run.eval.shift_images,
    )  # fmt: skip
    log.info("Model: %s, %d parameters, %d forward FLOPs per image; channels_last=%s, compile=%s.",
             describe_model(run.model), model.n_params, model.flops_per_image, cfg.model.channels_last,
             cfg.model.compile)  # fmt: skip

    checkpoint = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="best-epoch{epoch:03d}-acc{val/acc:.4f}",
        auto_insert_metric_name=False,
        monitor="val/acc",
        mode="max",
    )
    # last.ckpt at every epoch end and, with checkpoint.every_n_steps, every that many steps: what resume=true
    # continues from. (The best checkpoint's save_last=True would refresh it only when val/acc improves.)
    last = dict(dirpath=out / "checkpoints", filename="last", enable_version_counter=False)
    callbacks = [
        checkpoint,
        ModelCheckpoint(**last, save_on_train_epoch_end=True),
        EpochThroughput(),
        EpochSummary(),
        RunState(plain(cfg)),
        clock,
        StopOnNonFiniteLoss(
            cfg.trainer.log_every_n_steps, cfg.checkpoint.every_n_steps, out / "checkpoints" / "last.ckpt"
        ),
    ]
    callbacks.append(LearningRateMonitor(logging_interval="step"))  # train/lr/<param group>, at logging steps
    if cfg.optim.lookahead:
        callbacks.append(Lookahead())
    if cfg.checkpoint.every_n_steps is not None:
        callbacks.append(MidEpochCheckpoint(**last, every_n_train_steps=cfg.checkpoint.every_n_steps))
    # A resumed run continues the same TensorBoard run (same directory and name) from the checkpoint's step.
    logger = tensorboard_logger(out, run_name(cfg), purge_step=resume[1] if resume else None)
    trainer = build_trainer(cfg.trainer, run_dir=out, callbacks=callbacks, logger=logger, plugins=[io])
    log_hparams(logger, cfg, precision=str(trainer.precision))

    if resume is not None:
        log.info("Resuming from %s (step %d).", *resume)
    clock.mark("fit_start")
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume[0] if resume else None, weights_only=True)
    clock.mark("fit_end")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if "val/acc_best" not in metrics and checkpoint.best_model_score is not None:
        # Resumed from a checkpoint of its last epoch: nothing was logged, but the best score came back with
        # the checkpoint callback's state.
        metrics["val/acc_best"] = float(checkpoint.best_model_score)
    # fast_dev_run writes no checkpoint: test the weights in memory then.
    ckpt = checkpoint.best_model_path or None if uses_best_checkpoint(cfg) else None
    log.info("Testing %s.", ckpt or "the final weights")
    clock.mark("test_start")
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)  # the log's last line has them
    clock.mark("test_end")
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    log.info("Best checkpoint: %s", checkpoint.best_model_path or "(none: fast_dev_run)")
    log.info("Final metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    times = clock.seconds()
    log.info("Time: %s.", describe_times(times))
    return metrics, {"times": times}


def _check_start(cfg: DictConfig) -> None:
    # Before status.json is touched: a refused resume leaves the run's records as they were.
    typed = validate(cfg)
    check_accelerator(typed.trainer)
    check_launcher(typed.trainer)
    resume_point(typed, run_dir())


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _main(cfg: DictConfig) -> float | None:
    with distributed_job():
        return run_task(
            train_job,
            cfg,
            metric="val/acc_best",
            skip_completed=cfg.get("resume") is True,
            check=_check_start,
        )


def main() -> float | None:
    """Console-script and ``python -m`` entry point."""
    return cli.run(_main, "train", TrainConfig)


if __name__ == "__main__":
    main()

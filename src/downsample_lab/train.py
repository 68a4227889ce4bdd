"""Train one model: ``python -m downsample_lab.train [overrides]`` (or ``-m`` to sweep).

Reads as a straight line: prepare (validate the config, check the device, read the checkpoint to resume, if
any: once, before the run's record is touched) → seed → data → model → callbacks and logger → trainer → fit →
test on the best checkpoint → return ``val/acc_best`` (the metric a Hydra sweeper would optimise).

Lightning, torch and the model code are imported inside :func:`train_job`, once the config is valid: ``--help``
and a typo answer before any of them is loaded (docs/BENCHMARKS.md, "Start-up after the floor plan").
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from downsample_lab.config import TrainConfig, config_dir, validate
from downsample_lab.console import quiet_libraries
from downsample_lab.data.config import check_data_files
from downsample_lab.device import check_accelerator
from downsample_lab.run import argv, resolvers
from downsample_lab.run.ddp import distributed_job, use_hydra_job_command
from downsample_lab.run.job import job_started, run_dir, run_task
from downsample_lab.run.resume import resume_point
from downsample_lab.run.sweep import check_launcher, concurrent_jobs, swept_overrides

log = logging.getLogger(__name__)

# The YAML configs call these resolvers. Registered where the entry point is loaded: in the process that runs the
# command, and in each worker process of a parallel sweep, which loads this module to run its jobs.
resolvers.register()


@dataclass
class Prepared:
    """A run ready to start: its validated config, its directory and the checkpoint it continues (and its step)."""

    cfg: DictConfig
    out: Path
    resume: tuple[Path, int] | None


def prepare(cfg: DictConfig) -> Prepared:
    """Validate ``cfg``, check the device and the launcher, and read the checkpoint a resume continues from:
    each once, before ``status.json`` is touched (a refused resume leaves the run's records as they were)."""
    cfg = validate(cfg)
    check_accelerator(cfg.trainer)
    check_data_files(cfg.data)
    check_launcher(cfg.trainer)
    out = run_dir()
    return Prepared(cfg, out, resume_point(cfg, out))


def run_name(cfg: DictConfig) -> str:
    """The TensorBoard run's name, short: the choices that tell runs of the study apart and the seed.

    ``maxpool_k3_w64-128-256_seed0``; ``all_cnn_c_w96-192_seed0`` for the All-CNN models.
    """
    m = cfg.model
    widths = "-".join(str(w) for w in m.widths)
    if m.name != "cnn":
        return f"{m.name}_w{widths}_seed{cfg.seed}"
    return f"{m.downsample}_k{m.kernel_size}_w{widths}_seed{cfg.seed}"


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
    return train_job(prepare(cfg))[0]


def train_job(run: Prepared) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`train` of a prepared run, with what ``status.json`` records besides the metrics: ``times``, the
    job's wall seconds per phase (:mod:`downsample_lab.run.times`)."""
    t0 = job_started()  # the job's start (run_task): until the clock below is made, its first phase, imports
    import lightning as L

    from downsample_lab.data import CIFAR10DataModule
    from downsample_lab.engine.callbacks import fit_callbacks
    from downsample_lab.engine.classifier import Classifier
    from downsample_lab.engine.hparams import log_hparams
    from downsample_lab.engine.trainer import build_trainer, tensorboard_logger
    from downsample_lab.models.factory import describe_model, effective_widths
    from downsample_lab.run.clock import JobTimes, TimedCheckpointIO
    from downsample_lab.run.times import describe as describe_times

    quiet_libraries()  # again: importing Lightning just now set its loggers back to INFO
    cfg, out, resume = run.cfg, run.out, run.resume
    io = TimedCheckpointIO()
    clock = JobTimes(io, t0)
    if resume is not None:  # its own checkpoints are there: Lightning's "exists and is not empty" is expected
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    L.seed_everything(cfg.seed, workers=True)

    typed: TrainConfig = OmegaConf.to_object(cfg)  # typed objects for the data, the model and the optimiser
    datamodule = CIFAR10DataModule(typed.data, channels_last=typed.model.channels_last, seed=typed.seed)
    model = Classifier(
        typed.model, typed.optim, max_shift=typed.eval.max_shift, tta_level=typed.eval.tta_level,
        batch_size=typed.data.batch_size, shift_images=typed.eval.shift_images,
    )  # fmt: skip
    log.info("Model: %s, %d parameters, %d forward FLOPs per image; channels_last=%s, compile=%s.",
             describe_model(typed.model), model.n_params, model.flops_per_image, cfg.model.channels_last,
             cfg.model.compile)  # fmt: skip

    callbacks = [*fit_callbacks(cfg, out / "checkpoints"), clock]
    use_hydra_job_command(
        "downsample_lab.train"
    )  # DDP workers re-run this job, not the command line's whole sweep
    # A resumed run continues the same TensorBoard run (same directory and name) from the checkpoint's step.
    logger = tensorboard_logger(out, run_name(cfg), purge_step=resume[1] if resume else None)
    trainer = build_trainer(
        cfg.trainer, run_dir=out, callbacks=callbacks, logger=logger, plugins=[io],
        progress_bar=concurrent_jobs() == 1,
    )  # fmt: skip
    widths = effective_widths(typed.model) if typed.model.name == "cnn" else list(typed.model.widths)
    log_hparams(logger, cfg, str(trainer.precision), widths, swept_overrides(), data_digest=datamodule.digest)

    if resume is not None:
        log.info("Resuming from %s (step %d).", *resume)
    clock.mark("fit_start")
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume[0] if resume else None, weights_only=True)
    clock.mark("fit_end")
    checkpoint = trainer.checkpoint_callback  # the val/acc-best one: fit_callbacks lists it first
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


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _main(cfg: DictConfig) -> float | None:
    with distributed_job():
        return run_task(
            train_job, cfg, metric="val/acc_best", skip_completed=cfg.get("resume") is True, prepare=prepare
        )


def main() -> float | None:
    """Console-script and ``python -m`` entry point."""
    return argv.run(_main, "train", TrainConfig)


if __name__ == "__main__":
    main()

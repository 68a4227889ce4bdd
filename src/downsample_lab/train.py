"""Train one model: ``python -m downsample_lab.train [overrides]`` (or ``-m`` to sweep).

Reads as a straight line: validate the config → seed → data → model → callbacks and logger → trainer → fit →
test on the best checkpoint → return ``val/acc_best`` (the metric a Hydra sweeper would optimise).
"""

from __future__ import annotations

import logging

import hydra
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from downsample_lab.callbacks import EpochThroughput
from downsample_lab.classifier import Classifier
from downsample_lab.config import config_dir, validate
from downsample_lab.data import CIFAR10DataModule
from downsample_lab.entry import run_dir, run_task
from downsample_lab.trainer import build_trainer, distributed_job, log_hparams, tensorboard_logger

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig) -> str:
    """The TensorBoard run's name: the choices that tell runs of the study apart."""
    m = cfg.model
    widths = "-".join(str(w) for w in m.widths)
    return f"downsample={m.downsample},kernel_size={m.kernel_size},widths={widths},seed={cfg.seed}"


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns the final metrics."""
    cfg = validate(cfg)
    out = run_dir()
    L.seed_everything(cfg.seed, workers=True)

    datamodule = CIFAR10DataModule(**cfg.data, channels_last=cfg.model.channels_last, seed=cfg.seed)
    model = Classifier(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
    )
    log.info("Model: %s downsampling, %d parameters, %d forward FLOPs per image; channels_last=%s, compile=%s.",
             cfg.model.downsample, model.n_params, model.flops_per_image, cfg.model.channels_last,
             cfg.model.compile)  # fmt: skip

    checkpoint = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="best-epoch{epoch:03d}-acc{val/acc:.4f}",
        auto_insert_metric_name=False,
        monitor="val/acc",
        mode="max",
        save_last=True,
    )
    logger = tensorboard_logger(out, run_name(cfg))
    trainer = build_trainer(
        cfg.trainer, run_dir=out, callbacks=[checkpoint, EpochThroughput()], logger=logger
    )
    log_hparams(logger, cfg, precision=str(trainer.precision))

    trainer.fit(model, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # fast_dev_run writes no checkpoint: test the weights in memory then.
    ckpt = "best" if checkpoint.best_model_path else None
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    log.info("Best checkpoint: %s", checkpoint.best_model_path or "(none: fast_dev_run)")
    log.info("Final metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    return metrics


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console-script and ``python -m`` entry point."""
    with distributed_job():
        return run_task(train, cfg, metric="val/acc_best")


if __name__ == "__main__":
    main()

"""Test a checkpoint: ``python -m downsample_lab.eval ckpt_path=<file.ckpt> [data and trainer overrides]``.

The model is rebuilt from the config saved in the checkpoint (so it cannot be paired with the wrong
architecture), and the data keys are the training run's unless given on the command line; the checkpoint
is read with ``weights_only=True``, so a crafted file cannot run code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from downsample_lab.config import EvalConfig, config_dir, validate
from downsample_lab.console import quiet_libraries
from downsample_lab.data.config import DataConfig, check_data_files
from downsample_lab.device import check_accelerator
from downsample_lab.errors import UserError
from downsample_lab.run import argv, resolvers
from downsample_lab.run.ddp import distributed_job, use_hydra_job_command
from downsample_lab.run.job import run_dir, run_task
from downsample_lab.run.sweep import concurrent_jobs

if TYPE_CHECKING:
    from downsample_lab.engine.classifier import Classifier

log = logging.getLogger(__name__)

# The YAML configs call these resolvers: registered where the entry point is loaded (see downsample_lab.train).
resolvers.register()


def checkpoint_file(ckpt_path: str | Path) -> Path:
    """``ckpt_path`` as a path to an existing file; raises UserError naming it otherwise."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt_path={ckpt_path} is not a file; pass a .ckpt from a run's checkpoints/ folder")
    return path


def load_checkpoint(ckpt_path: str | Path) -> tuple[Classifier, dict[str, Any] | None]:
    """The :class:`Classifier` of a training checkpoint and the run config it records (None: an older version),
    read in one ``torch.load``; raises UserError naming the file."""
    path = checkpoint_file(ckpt_path)
    import torch

    from downsample_lab.engine.classifier import Classifier, upgrade_state_dict

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = Classifier(**ckpt["hyper_parameters"])
        model.load_state_dict(upgrade_state_dict(ckpt["state_dict"]))
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot load checkpoint {path} ({reason[:200]}); pass a .ckpt written by downsample_lab.train"
        ) from None
    return model, ckpt.get("run_config")


def data_from_checkpoint(cfg: DictConfig, saved: dict[str, Any] | None) -> DictConfig:
    """``cfg`` with the ``data`` keys of the run that wrote the checkpoint, except those this command sets.

    A run trained on ``data.source=folder`` or ``synthetic`` is tested on the same data without retyping its
    keys; an override on the command line (``data.<key>=...``) still wins.
    """
    if not saved or not isinstance(saved.get("data"), dict):
        log.warning("The checkpoint records no run config (an older version): data keys are this command's.")
        return cfg
    typed = set()
    for override in HydraConfig.get().overrides.task:
        key = override.lstrip("+~").split("=", 1)[0]
        if key == "data":  # a whole group chosen on the command line
            return cfg
        if key.startswith("data."):
            typed.add(key.removeprefix("data."))
    taken = {k: v for k, v in saved["data"].items() if k in cfg.data and k not in typed}
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.data = OmegaConf.merge(cfg.data, taken)
    log.info(
        "Data keys from the checkpoint's run: %s", ", ".join(f"{k}={v}" for k, v in sorted(taken.items()))
    )
    return cfg


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint on the test split; returns ``test/acc`` and ``test/loss``."""
    cfg = validate(cfg, EvalConfig)
    check_accelerator(cfg.trainer)
    checkpoint_file(cfg.ckpt_path)  # a mistyped path answers before the imports below (~5 s)
    import lightning as L  # once the config is valid: --help and a typo answer without it

    from downsample_lab.data import CIFAR10DataModule
    from downsample_lab.engine.trainer import build_trainer, tensorboard_logger

    quiet_libraries()  # again: importing Lightning just now set its loggers back to INFO
    model, saved = load_checkpoint(cfg.ckpt_path)
    cfg = validate(data_from_checkpoint(cfg, saved), EvalConfig)  # the data keys the checkpoint's run had
    check_data_files(cfg.data, splits=("test",))
    model.max_shift, model.shift_images = cfg.eval.max_shift, cfg.eval.shift_images
    L.seed_everything(cfg.seed, workers=True)
    data: DataConfig = OmegaConf.to_object(cfg.data)
    datamodule = CIFAR10DataModule(
        data, channels_last=model.model_cfg.channels_last, seed=cfg.seed, splits=("test",)
    )
    out = run_dir()
    logger = tensorboard_logger(out, f"eval,{Path(cfg.ckpt_path).stem}")
    use_hydra_job_command(
        "downsample_lab.eval"
    )  # DDP workers re-run this job, not the command line's whole sweep
    trainer = build_trainer(
        cfg.trainer, run_dir=out, callbacks=[], logger=logger, progress_bar=concurrent_jobs() == 1
    )
    metrics = {k: float(v) for k, v in trainer.test(model, datamodule=datamodule)[0].items()}
    log.info("Tested %s: %s", cfg.ckpt_path, ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    return metrics


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def _main(cfg: DictConfig) -> float | None:
    with distributed_job():
        return run_task(evaluate, cfg, metric="test/acc")


def main() -> float | None:
    """Console-script and ``python -m`` entry point."""
    return argv.run(_main, "eval", EvalConfig)


if __name__ == "__main__":
    main()

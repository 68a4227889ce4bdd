"""Training, evaluation and sweeps through the Hydra entry points, as a user runs them."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tbparse import SummaryReader

from downsample_lab.config import typed
from downsample_lab.data import CIFAR10DataModule
from downsample_lab.data.config import DataConfig
from downsample_lab.study import DATA_DIGEST
from downsample_lab.train import train

from .conftest import TINY, run_cli

TAGS = {
    "train/loss", "train/acc", "train/lr/weights", "train/lr/norms_biases", "train/images_per_sec", "train/epoch_time",
    "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc", "test/predicted_classes", "model/params", "model/flops_per_image",
}  # fmt: skip
HPARAMS = {"model.downsample", "model.kernel_size", "model.widths", "seed", "optim.lr", "data.batch_size",
           "trainer.max_epochs"}  # fmt: skip


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One two-epoch run on synthetic data through ``python -m downsample_lab.train``."""
    tmp = tmp_path_factory.mktemp("trained")
    result = run_cli(
        "train", *TINY, "trainer.max_epochs=2", "model.downsample=conv", "model.kernel_size=5", "seed=1",
        f"data.cache_dir={tmp / 'cache'}", f"hydra.run.dir={tmp / 'run'}", "trainer.enable_progress_bar=true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (tmp / "console.txt").write_text(result.stdout + result.stderr)
    return tmp / "run"


# Library noise a run used to print (issue 10).
NOISE = ("litlogger", "litmodels", "GPU available", "TPU available", "_pytree", "LeafSpec",
         "not supported by the model summary", "Total Flops", "Trainable params", "v_num", "Seed set to")  # fmt: skip


def test_console_shows_our_model_line_and_no_library_noise(trained_run):
    console = (trained_run.parent / "console.txt").read_text()
    assert "Epoch 1" in console  # the bar was on
    assert "Epoch 0:" not in console and "Epoch 2/2" in console  # the bar counts epochs as the log lines do
    leaked = [n for n in NOISE if n in console]
    assert not leaked, leaked
    assert "Model: cnn with conv downsampling, kernel 5" in console and "forward FLOPs per image" in console


def test_train_loss_lands_at_the_logging_steps_and_is_the_runs_last(trained_run):
    # train/loss goes to the logger from the module (not through self.log): at the steps where Lightning logs
    # the lr (every trainer.log_every_n_steps=2 of the 2 x 4 steps), and the run's final train/loss is the last
    (run,) = (trained_run / "tb").iterdir()
    scalars = SummaryReader(str(run)).scalars
    loss, lr = (scalars[scalars.tag == tag] for tag in ("train/loss", "train/lr/weights"))
    assert loss.step.tolist() == lr.step.tolist() == [1, 3, 5, 7]
    status = json.loads((trained_run / "status.json").read_text())
    assert status["metrics"]["train/loss"] == pytest.approx(loss.value.iloc[-1], rel=1e-6)


def test_a_run_stopped_between_logging_steps_logs_no_stale_loss(tmp_path, tiny_overrides):
    # optim.train_epochs=1.75: the run stops at step 7, off the logging interval (2); Lightning logs at a stop, and
    # self.log("train/loss") used to write step 5's loss again at step 6. The loss keeps the lr's steps.
    from .conftest import compose_config

    train(compose_config("train", [*tiny_overrides, "trainer.max_epochs=2", "optim.train_epochs=1.75"],
                         run_dir=tmp_path / "run"))  # fmt: skip
    (run,) = (tmp_path / "run" / "tb").iterdir()
    scalars = SummaryReader(str(run)).scalars
    loss, lr = (scalars[scalars.tag == tag] for tag in ("train/loss", "train/lr/weights"))
    assert loss.step.tolist() == lr.step.tolist() == [1, 3, 5]


def test_run_directory_holds_config_checkpoints_and_status(trained_run):
    assert (trained_run / ".hydra" / "config.yaml").is_file()
    ckpts = sorted(p.name for p in (trained_run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-epoch") for n in ckpts)
    status = json.loads((trained_run / "status.json").read_text())
    assert status["status"] == "completed"
    assert 0.0 <= status["metrics"]["test/acc"] <= 1.0 and "val/acc_best" in status["metrics"]


def test_tensorboard_run_is_named_and_holds_the_tags(trained_run):
    runs = list((trained_run / "tb").iterdir())
    assert [r.name for r in runs] == ["conv_k5_w4-8_seed1"]
    reader = SummaryReader(str(runs[0]))
    scalars = reader.scalars
    assert set(scalars.tag) >= TAGS, TAGS - set(scalars.tag)
    assert "epoch" not in set(scalars.tag)  # Lightning's counter would lead the Time Series dashboard
    per_epoch = scalars[scalars.tag == "val/acc"]
    assert len(per_epoch) == 2
    best = scalars[scalars.tag == "val/acc_best"].value.tolist()
    assert best[-1] == pytest.approx(max(per_epoch.value), abs=1e-6)
    assert scalars[scalars.tag == "train/images_per_sec"].value.min() > 0
    params = scalars[scalars.tag == "model/params"].value.item()
    assert params == sum(p.numel() for p in _model(trained_run).parameters())
    hparams = dict(zip(reader.hparams.tag, reader.hparams.value, strict=True))
    assert set(hparams) >= HPARAMS
    assert hparams["model.downsample"] == "conv" and hparams["model.widths"] == "[4, 8]"
    assert hparams["trainer.precision"] != "auto"  # the precision that ran
    assert hparams["data.augment"] is True  # a boolean, not 1.0
    # the checksum of the data it read, which the report tells copies apart by
    data = OmegaConf.load(trained_run / ".hydra" / "config.yaml").data
    expected = CIFAR10DataModule(typed(DataConfig, data, "data"), channels_last=False, seed=0).digest()
    assert hparams[DATA_DIGEST] == expected
    assert (
        f"Data: {expected} (digest of its decoded images and labels)."
        in (trained_run / "train.log").read_text()
    )


def _model(run: Path) -> torch.nn.Module:
    from downsample_lab.eval import load_checkpoint

    return load_checkpoint(run / "checkpoints" / "last.ckpt")[0].net


def test_eval_reproduces_the_test_accuracy_of_the_best_checkpoint(trained_run, tmp_path):
    status = json.loads((trained_run / "status.json").read_text())
    best = next((trained_run / "checkpoints").glob("best-epoch*.ckpt"))
    # no data keys: they come from the checkpoint (synthetic data, its sizes, the training run's cache)
    result = run_cli("eval", f"ckpt_path={best}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "status.json").read_text())["metrics"]
    assert evaluated["test/acc"] == pytest.approx(status["metrics"]["test/acc"], abs=1e-6)
    # a data key on the command line wins over the checkpoint's; eval decodes the test split only
    result = run_cli(
        "eval", f"ckpt_path={best}", "data.synthetic_test_size=60", f"data.cache_dir={tmp_path / 'c2'}",
        f"hydra.run.dir={tmp_path / 'e2'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "e2" / "eval.log").read_text()
    assert "synthetic test split (60 images)" in log and "source=synthetic" in log
    assert [p.name.split("-")[1] for p in (tmp_path / "c2").glob("*.pt")] == ["test"]


def test_eval_refuses_a_missing_or_corrupt_checkpoint(tmp_path):
    # a mistyped path answers before torch and Lightning are imported (-X importtime lists every import)
    missing = [sys.executable, "-X", "importtime", "-m", "downsample_lab.eval", f"ckpt_path={tmp_path / 'nope.ckpt'}",
               f"hydra.run.dir={tmp_path / 'e1'}"]  # fmt: skip
    result = subprocess.run(missing, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is not a file" in result.stderr and "Traceback" not in result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "lightning" not in imported
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x80\x04garbage")
    result = run_cli("eval", f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 'e2'}")
    assert result.returncode == 2 and f"cannot load checkpoint {bad}" in result.stderr


def test_fast_dev_runs_started_together_get_their_own_directories(tmp_path):
    cmd = [sys.executable, "-m", "downsample_lab.train", *TINY, "trainer.fast_dev_run=true",
           f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:]
    runs = sorted((tmp_path / "outputs" / "train").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert json.loads((run / "status.json").read_text())["status"] == "completed"


def test_multirun_gives_each_job_its_directory_and_tensorboard_run(tmp_path):
    result = run_cli(
        "train", "-m", "model.downsample=maxpool,conv", *TINY, f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    # the values that vary, and the seed even where the sweep keeps it (TINY's constants are not repeated)
    assert [j.name for j in jobs] == ["0_downsample-maxpool_seed-0", "1_downsample-conv_seed-0"]
    for job, name in zip(jobs, ["maxpool", "conv"], strict=True):
        assert json.loads((job / "status.json").read_text())["status"] == "completed"
        (tb_run,) = (job / "tb").iterdir()
        assert tb_run.name == f"{name}_k3_w4-8_seed0"


def test_train_in_process_returns_the_final_metrics(tiny_cfg, tmp_path):
    metrics = train(tiny_cfg)
    assert {"val/acc_best", "test/acc", "train/images_per_sec"} <= set(metrics)
    scalars = SummaryReader(str(tmp_path / "run" / "tb")).scalars
    logged = {tag: rows["value"].tolist() for tag, rows in scalars.groupby("tag")}
    # the values the run logged last: the best validation accuracy, the test accuracy, the last epoch's speed
    assert metrics["val/acc_best"] == pytest.approx(max(logged["val/acc"]))
    assert metrics["test/acc"] == pytest.approx(logged["test/acc"][-1])
    assert metrics["train/images_per_sec"] == pytest.approx(logged["train/images_per_sec"][-1])
    (best,) = (tmp_path / "run" / "checkpoints").glob("best-*.ckpt")
    assert f"acc{metrics['val/acc_best']:.4f}" in best.name


@pytest.mark.slow
def test_real_cifar10_one_short_epoch_beats_chance(cifar10_jpeg, tmp_path):
    """On real CIFAR-10 images: a small net, one epoch on a 10k subset, tested on all 10,000 test images."""
    result = run_cli(
        "train", "data.source=folder", f"data.root={cifar10_jpeg}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.train_subset=10000", "data.val_size=1000", "data.batch_size=128", "model.widths=[16,32,64]",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "status.json").read_text())["metrics"]
    assert metrics["test/acc"] > 0.3, metrics  # chance is 0.10; this run reaches ~0.39
    # it trained on the JPEG folder: both of its splits were decoded into the cache
    assert sorted(p.name.split("-")[:2] for p in (tmp_path / "cache").glob("folder-*.pt")) == [
        ["folder", "test"],
        ["folder", "train"],
    ]


def test_a_checkpoint_with_the_old_torchmetrics_training_accuracy_loads_with_its_counts():
    from downsample_lab.config import validate
    from downsample_lab.engine.classifier import Classifier, upgrade_state_dict

    from .conftest import compose_config

    cfg = validate(compose_config("train", TINY))
    state = Classifier(cfg.model, cfg.optim, max_shift=0, tta_level=0, batch_size=64).state_dict()
    old = {k: v for k, v in state.items() if k not in ("train_correct", "train_seen")}
    counts = {"tp": 30, "fp": 10, "tn": 80, "fn": 10}  # what MulticlassAccuracy(average="micro") kept
    old.update({f"metrics.train_acc.{k}": torch.tensor(v) for k, v in counts.items()})
    fresh = Classifier(cfg.model, cfg.optim, max_shift=0, tta_level=0, batch_size=64)
    with pytest.raises(RuntimeError, match="train_acc"):
        fresh.load_state_dict(dict(old))  # as it was: refused
    fresh.load_state_dict(upgrade_state_dict(dict(old)))
    assert (int(fresh.train_correct), int(fresh.train_seen)) == (30, 40)  # micro accuracy: tp / (tp + fn)


def test_a_logging_interval_longer_than_an_epoch_is_said_once_in_our_words(caplog):
    import warnings
    from types import SimpleNamespace

    from downsample_lab.console import quiet_libraries
    from downsample_lab.engine.callbacks import EpochSummary

    trainer = SimpleNamespace(
        num_training_batches=9, estimated_stepping_batches=90, log_every_n_steps=50, is_global_zero=True
    )
    with caplog.at_level("INFO", logger="downsample_lab"):
        EpochSummary().on_train_start(trainer, None)
    assert "An epoch has 9 steps, fewer than trainer.log_every_n_steps=50" in caplog.text
    assert "set trainer.log_every_n_steps=9 or less for a point per epoch" in caplog.text
    caplog.clear()
    trainer.estimated_stepping_batches = 7  # fewer steps in all than the interval: no curve at all
    with caplog.at_level("INFO", logger="downsample_lab"):
        EpochSummary().on_train_start(trainer, None)
    assert (
        "This run has 7 steps in all, fewer than trainer.log_every_n_steps=50: TensorBoard gets no"
        in caplog.text
    )
    assert "An epoch has" not in caplog.text
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries()  # Lightning's own words for it are dropped
        warnings.warn(
            "The number of training batches (9) is smaller than the logging interval Trainer(log_every_n_steps=50).",
            stacklevel=1,
        )
    assert not caught


def test_every_epoch_line_carries_the_loss_when_epochs_are_shorter_than_the_logging_interval(tmp_path):
    result = run_cli(
        "train", *TINY, "trainer.max_epochs=2", "trainer.log_every_n_steps=50", f"data.cache_dir={tmp_path / 'c'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    lines = [line for line in console.splitlines() if "] - Epoch " in line]
    assert len(lines) == 2 and all(": loss " in line for line in lines), lines
    assert "smaller than the logging interval" not in console  # Lightning's words; ours, once:
    assert console.count("fewer than trainer.log_every_n_steps=50") == 1


def test_a_log_line_never_lands_on_the_progress_bars_line():
    # a bar being drawn on the console, then a log record through the console's handler (configs/hydra/default.yaml)
    from tqdm import tqdm

    from downsample_lab.console import BarSafeHandler

    screen = io.StringIO()
    bar = tqdm(total=10, file=screen, desc="Epoch 1/3", ascii=True)
    bar.update(3)
    handler = BarSafeHandler(screen)
    handler.emit(
        logging.LogRecord("downsample_lab", logging.INFO, __file__, 1, "Epoch 1/3: loss 2.3", None, None)
    )
    bar.close()
    lines = [line.rsplit("\r", 1)[-1] for line in screen.getvalue().split("\n")]
    # the record starts a line of its own (the bar was lifted with \r and drawn again below it)
    assert "Epoch 1/3: loss 2.3" in lines
    assert not any("Epoch 1/3: loss 2.3" in line and "|" in line for line in lines)

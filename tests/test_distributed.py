"""DDP for real on the CPU (two processes, gloo) through the Hydra entry point, and the SLURM launcher config."""

from __future__ import annotations

import json

import pytest

from .conftest import TINY, compose_config, run_cli

DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]


@pytest.mark.slow
def test_two_process_ddp_reduces_metrics_over_the_whole_test_set(tmp_path):
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    # 101 test images: the two processes get 51 and 50, so a rank-0-only accuracy would differ
    data = ["data.synthetic_test_size=101"]
    result = run_cli(
        "train", *TINY, *DDP, *data, "trainer.max_epochs=2", cache, f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert len(list((run / "tb").iterdir())) == 1  # one TensorBoard run, not one per process
    assert (run / "train_ddp_process_1.log").is_file()  # process 1 ran in the same directory
    ckpts = list((run / "checkpoints").iterdir())
    assert sorted(p.name for p in ckpts if p.name == "last.ckpt") == ["last.ckpt"]
    ddp_metrics = json.loads((run / "status.json").read_text())["metrics"]

    best = next((run / "checkpoints").glob("best-epoch*.ckpt"))
    single = run_cli("eval", f"ckpt_path={best}", "data.source=synthetic", "data.synthetic_train_size=320", *data,
                     cache, "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'eval'}")  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    one_process = json.loads((tmp_path / "eval" / "status.json").read_text())["metrics"]
    assert ddp_metrics["test/acc"] == pytest.approx(one_process["test/acc"], abs=1e-6)
    assert ddp_metrics["test/loss"] == pytest.approx(one_process["test/loss"], rel=1e-4)
    assert ddp_metrics["test/consistency"] == pytest.approx(one_process["test/consistency"], abs=0.05)


@pytest.mark.slow
def test_multirun_whose_jobs_use_ddp(tmp_path):
    result = run_cli("train", "-m", "model.downsample=maxpool,conv", *TINY, *DDP,
                     f"data.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    entries = sorted(p.name for p in (tmp_path / "sweep").iterdir())
    assert len(entries) == 3 and "multirun.yaml" in entries  # two jobs, nothing else
    for job in (tmp_path / "sweep").iterdir():
        if job.is_dir():
            assert json.loads((job / "status.json").read_text())["status"] == "completed"
            assert len(list((job / "tb").iterdir())) == 1


def test_slurm_launcher_starts_one_task_per_gpu():
    compose_config(
        "train", ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    )
    from hydra.core.hydra_config import HydraConfig

    launcher = HydraConfig.get().launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 2)

"""DDP for real on the CPU (two processes, gloo) through the Hydra entry point, and the SLURM launcher config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest

from .conftest import REPO, TINY, compose_config, run_cli

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


def test_slurm_launcher_starts_one_task_per_gpu(monkeypatch):
    """A job the launcher submits has one task per GPU; in each, Lightning takes its rank from SLURM and starts
    no processes of its own."""
    cfg = compose_config(
        "train", ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    )
    from hydra.core.hydra_config import HydraConfig
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    job = HydraConfig.get().launcher
    assert job._target_.endswith("SlurmLauncher")
    assert (job.gpus_per_node, job.tasks_per_node, job.nodes) == (4, 4, 2)
    # the variables sbatch and srun set for task 5 of the job (its node 1, its local task 1)
    slurm_env = {
        "SLURM_JOB_ID": "1", "SLURM_JOB_NAME": "train", "SLURM_NODELIST": "node[1-2]",
        "SLURM_NNODES": str(job.nodes), "SLURM_NTASKS": str(job.nodes * job.tasks_per_node),
        "SLURM_NTASKS_PER_NODE": str(job.tasks_per_node), "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
    }  # fmt: skip
    for key, value in slurm_env.items():
        monkeypatch.setenv(key, value)
    from lightning.fabric.utilities import rank_zero as fabric_rank_zero
    from lightning.pytorch.utilities import rank_zero as pl_rank_zero
    from lightning_utilities.core import rank_zero as utils_rank_zero

    for module in (fabric_rank_zero, pl_rank_zero, utils_rank_zero):
        # the Trainer makes this process rank 5 for every rank_zero_only function: rank 0 again after the test
        monkeypatch.setattr(module.rank_zero_only, "rank", module.rank_zero_only.rank)
    trainer = L.Trainer(
        accelerator="cpu", strategy=cfg.trainer.strategy, devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes, logger=False, enable_checkpointing=False,
    )  # fmt: skip
    env = trainer.strategy.cluster_environment
    # SLURM started the processes, and the launcher starts none given such an environment (ddp_spawn's would)
    assert isinstance(env, SLURMEnvironment) and env.creates_processes_externally
    assert isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)
    # what the launcher checks before it runs: SLURM's tasks per node and nodes are the Trainer's
    env.validate_settings(num_devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes)
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (8, 5, 1, 1)


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is left


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("when", ["starting", "training"])
def test_ddp_workers_exit_when_the_launching_process_is_killed(tmp_path, when):
    """Killed while the worker starts, the worker would wait for the launcher's store until the 30-minute
    timeout; killed in training, gloo on a CPU notices the closed socket (NCCL on GPUs would wait)."""
    # long enough that the run is still training when it is killed: 2 processes, 1 image per step
    args = [*TINY, *DDP, "data.synthetic_train_size=4000", "data.batch_size=2", "trainer.max_epochs=5",
            f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    launcher = subprocess.Popen([sys.executable, "-m", "downsample_lab.train", *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 300
        log = tmp_path / "run" / "train_ddp_process_1.log"
        while time.monotonic() < deadline and launcher.poll() is None:
            workers = _children(launcher.pid)
            if workers and (when == "starting" or (log.is_file() and "Model:" in log.read_text())):
                break  # the worker has started (is importing), or is inside the run
            time.sleep(0.2)
        assert workers and launcher.poll() is None, "the DDP worker never started"
        time.sleep(2 if when == "training" else 0)  # into the training loop's collectives
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 15
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "a DDP worker outlived its launcher"
    finally:
        launcher.kill()
        for worker in workers:
            if _alive(worker):
                os.kill(worker, signal.SIGKILL)

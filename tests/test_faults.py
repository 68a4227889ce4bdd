"""Faults: a NaN loss stops the run; a sweep with failing jobs keeps the others, names the failures, and resumes."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from downsample_lab.engine.callbacks import NonFiniteLossError
from downsample_lab.engine.classifier import Classifier
from downsample_lab.train import train

from .conftest import TINY, compose_config, run_cli

# Three jobs: two good learning rates, one so large that the loss turns NaN at once. (An invalid value stops the
# sweep before its first job: tests/test_cli.py.)
SWEEP = ["-m", "optim.lr=0.05,0.1,1e30", *TINY]


def _jobs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0]))


def _status(job: Path) -> dict:
    return json.loads((job / "status.json").read_text())


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("sweep")
    args = [*SWEEP, f"data.cache_dir={tmp / 'cache'}", f"hydra.sweep.dir={tmp / 'sweep'}"]
    result = run_cli("train", *args)
    (tmp / "first.json").write_text(json.dumps({"rc": result.returncode, "stderr": result.stderr}))
    return tmp, args


def test_failed_jobs_leave_the_others_and_are_listed_at_the_end(failing_sweep):
    tmp, _ = failing_sweep
    first = json.loads((tmp / "first.json").read_text())
    assert first["rc"] != 0  # the failures are not hidden
    jobs = _jobs(tmp / "sweep")
    assert len(jobs) == 3
    good = [_status(j) for j in jobs[:2]]
    assert [s["status"] for s in good] == ["completed", "completed"]
    assert all(0.0 <= s["metrics"]["test/acc"] <= 1.0 for s in good)
    nan = _status(jobs[2])
    assert nan["status"] == "failed" and "training loss is nan at step" in nan["error"]
    # the end of the output lists every failed job, by its overrides, with its reason
    tail = first["stderr"][
        first["stderr"].index(f"Sweep {tmp / 'sweep'}: 2 of 3 jobs completed; 1 failed:") :
    ]
    assert "job 2 (optim.lr=" in tail and "training loss is nan at step" in tail
    assert "resume=true" in tail
    assert "Traceback" not in first["stderr"]  # user errors in sweep jobs are one sentence too


def test_rerun_with_resume_skips_completed_jobs_and_resumes_the_others(failing_sweep):
    tmp, _ = failing_sweep
    jobs = _jobs(tmp / "sweep")
    done_before = (jobs[0] / "status.json").read_text()
    ckpt_mtime = (jobs[0] / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    # job 1 as if killed after its last checkpoint: status.json still says running
    finished = _status(jobs[1])
    (jobs[1] / "status.json").write_text(json.dumps({"status": "running", "time": finished["time"]}))

    records = {p: p.read_bytes() for j in jobs for p in (*(j / ".hydra").iterdir(), j / "status.json")}
    records[tmp / "sweep" / "multirun.yaml"] = (tmp / "sweep" / "multirun.yaml").read_bytes()
    # the sweep's directory alone: its overrides come from multirun.yaml
    result = run_cli("train", "-m", "resume=true", f"hydra.sweep.dir={tmp / 'sweep'}")
    assert result.returncode != 0  # job 2 fails again
    assert _jobs(tmp / "sweep") == jobs  # the same job directories: resume is not in their names
    assert (jobs[0] / "status.json").read_text() == done_before  # skipped: not even rewritten
    assert (jobs[0] / "checkpoints" / "last.ckpt").stat().st_mtime_ns == ckpt_mtime
    assert "completed before: returning its saved metrics without training" in result.stdout + result.stderr
    resumed = _status(jobs[1])
    assert resumed["status"] == "completed"
    for key in ("val/acc_best", "test/acc", "test/loss"):
        assert resumed["metrics"][key] == pytest.approx(finished["metrics"][key], abs=1e-6), key
    # the jobs' .hydra/ and the sweep's multirun.yaml are the ones it was started with
    for path, content in records.items():
        if path.name != "status.json":
            assert path.read_bytes() == content, path
    # job 2 has no checkpoint (its loss was NaN from step 2): it started afresh and failed the same way
    assert "training loss is nan at step" in _status(jobs[2])["error"]
    assert f"Sweep {tmp / 'sweep'}: 2 of 3 jobs completed" in result.stderr


def _poison(monkeypatch, factor: float, at: Callable[[int], bool]) -> None:
    """Make the training step's loss ``factor`` times itself at the global steps (0-based) where ``at`` holds."""
    step = Classifier.training_step

    def poisoned(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        return loss * factor if at(self.global_step) else loss

    monkeypatch.setattr(Classifier, "training_step", poisoned)


def _two_epochs(tmp_path: Path, tiny_overrides: list[str], *overrides: str) -> DictConfig:
    """The tiny run's config over 2 epochs of 4 steps, with ``overrides``, run in ``tmp_path / "run"``."""
    keys = [*tiny_overrides, "trainer.max_epochs=2", *overrides]
    return compose_config("train", keys, run_dir=tmp_path / "run")


def test_nan_loss_stops_the_run_naming_the_step_and_the_last_good_checkpoint(
    tmp_path, tiny_overrides, monkeypatch
):
    cfg = _two_epochs(tmp_path, tiny_overrides, "checkpoint.every_n_steps=2")
    _poison(monkeypatch, math.nan, lambda step: step >= 4)  # the 5th step and later
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    # 4 steps an epoch; flag read at step 6 (log and checkpoint interval 2), before that step's checkpoint
    with pytest.raises(
        NonFiniteLossError, match=rf"training loss is nan at step 5 \(epoch 1\).* {last} \(step 4\)"
    ):
        train(cfg)
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_a_nan_loss_in_the_steps_after_the_last_check_stops_a_run_that_ends_there(
    tmp_path, tiny_overrides, monkeypatch
):
    # optim.train_epochs=1.75 of 4-step epochs: the run stops at step 7, which is neither a logging step
    # (interval 2) nor an epoch's last; its loss is checked before the validation and the checkpoints after it
    cfg = _two_epochs(tmp_path, tiny_overrides, "optim.train_epochs=1.75")
    _poison(monkeypatch, math.inf, lambda step: step == 6)  # the 7th step, the run's last
    with pytest.raises(NonFiniteLossError, match=r"training loss is inf at step 7 \(epoch 1\)"):
        train(cfg)
    for ckpt in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):  # epoch 1's, none of the stopped epoch's
        assert torch.load(ckpt, weights_only=True)["global_step"] == 4, ckpt.name

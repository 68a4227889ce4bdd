"""Sweeps that run several jobs at once (``hydra/launcher=parallel``) and the record of where a job's time goes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from downsample_lab.errors import ConfigError
from downsample_lab.run import summary
from downsample_lab.run import sweep as sweeps
from downsample_lab.run.summary import sweep_summary
from downsample_lab.run.times import FIXED, PHASES

from .conftest import REPO, TINY, as_foreground_job

PARALLEL = ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"]


def _status(job: Path) -> dict:
    file = job / "status.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def _sweep(sweep: Path, cache: Path, epochs: int, seeds: str) -> list[str]:
    tiny = [o for o in TINY if not o.startswith(("trainer.max_epochs=", "data.synthetic_train_size="))]
    return [
        sys.executable, "-m", "downsample_lab.train", "-m", *PARALLEL, *tiny,
        "data.synthetic_train_size=1344", f"trainer.max_epochs={epochs}",  # 20 steps an epoch
        f"data.cache_dir={cache}", f"hydra.sweep.dir={sweep}", f"seed={seeds}",
    ]  # fmt: skip


def _wait_for(condition, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_parallel_sweep_stopped_with_ctrl_c_resumes_without_losing_or_repeating_a_job(tmp_path):
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # its own process group, as a terminal's foreground job: Ctrl-C reaches the sweep and its workers
    process = subprocess.Popen(
        _sweep(sweep, cache, 3, "0,1,2,3"), cwd=REPO, env=env, text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=as_foreground_job,
    )  # fmt: skip
    jobs = lambda: sorted(p for p in sweep.glob("[0-9]_*") if p.is_dir())  # noqa: E731

    def two_done_and_one_checkpointed() -> bool:
        states = [_status(j).get("status") for j in jobs()]
        running = [j for j in jobs() if _status(j).get("status") == "running"]
        return states.count("completed") >= 2 and any(
            (j / "checkpoints" / "last.ckpt").is_file() for j in running
        )

    _wait_for(two_done_and_one_checkpointed)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    resume = f"python -m downsample_lab.train -m {' '.join(PARALLEL)} resume=true hydra.sweep.dir={sweep}"
    assert (out + err).count(resume) == 1, err[-3000:]  # printed once, by the sweep, not by every job
    before = {j.name: _status(j) for j in jobs()}
    done = {name for name, s in before.items() if s.get("status") == "completed"}
    stopped = {name for name, s in before.items() if s.get("status") != "completed"}
    assert len(done) >= 2 and stopped, before
    # a job the Ctrl-C caught as it started may not have written its first status yet
    assert all(before[n].get("status") in ("interrupted", None) for n in stopped), before
    assert any(before[n].get("status") == "interrupted" for n in stopped), before
    # one console line per finished job, and no job's own log lines or bars in the console
    assert sum(line.startswith("Job ") and "completed" in line for line in out.splitlines()) == len(done)
    assert "Epoch 1/3" not in out + err and "Seed set to" not in out + err

    resumed = subprocess.run(
        [sys.executable, "-m", "downsample_lab.train", "-m", *PARALLEL, "resume=true", f"hydra.sweep.dir={sweep}"],
        cwd=REPO, env=env, text=True, capture_output=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Sweep {sweep}: all 4 jobs completed." in resumed.stdout
    after = {j.name: _status(j) for j in jobs()}
    assert len(after) == 4 and all(s["status"] == "completed" for s in after.values())
    for name in done:  # kept, not run again
        assert after[name] == before[name]
    logs = {name: (sweep / name / "train.log").read_text() for name in after}
    checkpointed = [n for n in stopped if "(step " in logs[n]]
    assert checkpointed, "no stopped job continued from its checkpoint"
    for name in after:  # every job trained to its end, and no epoch twice
        counts = [logs[name].count(f"Epoch {e}/3:") for e in (1, 2, 3)]
        assert max(counts) == 1 and counts[-1] == 1, logs[name]


@pytest.mark.slow
def test_a_parallel_sweep_records_where_each_jobs_time_went_and_matches_one_at_a_time(tmp_path):
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    result = subprocess.run(
        _sweep(sweep, cache, 1, "0,1"), cwd=REPO, text=True, capture_output=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for job in sorted(sweep.glob("[0-9]_*")):
        times = _status(job)["times"]
        assert set(times) == {*PHASES, "wall", "fixed"}
        assert all(v >= 0 for v in times.values())
        assert times["fixed"] == pytest.approx(times["wall"] - times["train_steps"], abs=0.01)
        assert sum(times[p] for p in PHASES) == pytest.approx(times["wall"], abs=0.01)
        assert times["train_steps"] > 0 and times["test"] > 0 and times["checkpoints"] > 0
        assert "Time: " in (job / "train.log").read_text()
    line = next(line for line in result.stdout.splitlines() if line.startswith("Time: "))
    assert "its 2 timed jobs took" in line and all(p.replace("_", " ") in line for p in FIXED)

    # The same jobs one at a time, with the torch threads a parallel job gets: the same metrics, to the bit.
    threads = str(max(1, sweeps.cpu_count() // 2))
    one_by_one = [a for a in _sweep(tmp_path / "sequential", cache, 1, "0,1") if a not in PARALLEL]
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    result = subprocess.run(one_by_one, cwd=REPO, text=True, capture_output=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    timings = ("train/images_per_sec", "train/epoch_time")
    for job in sorted(sweep.glob("[0-9]_*")):
        parallel, sequential = (_status(d)["metrics"] for d in (job, tmp_path / "sequential" / job.name))
        assert {k: v for k, v in parallel.items() if k not in timings} == {
            k: v for k, v in sequential.items() if k not in timings
        }


def test_the_summary_adds_up_the_jobs_times(tmp_path):
    for n, wall in enumerate((3.0, 5.0)):
        job = tmp_path / f"{n}_seed-{n}"
        job.mkdir()
        times = {**dict.fromkeys(PHASES, 0.5), "train_steps": wall - 4.0, "wall": wall, "fixed": 4.0}
        (job / "status.json").write_text(json.dumps({"status": "completed", "times": times}))
    text, ok = sweep_summary(tmp_path, elapsed=6.0)
    assert ok
    assert "Time: 6 s for the sweep; its 2 timed jobs took 8.0 s = training steps 0.0 s + fixed 8.0 s" in text


def test_the_summary_counts_interrupted_failed_and_never_run_jobs_apart(tmp_path):
    states = {0: ("completed", None), 1: ("interrupted", "interrupted; continue it with: ..."),
              2: ("failed", "RuntimeError: boom"), 3: ("running", None)}  # fmt: skip
    for n, (state, error) in states.items():
        job = tmp_path / f"{n}_seed-{n}"
        job.mkdir()
        (job / "status.json").write_text(json.dumps({"status": state, "error": error}))
    summary.mark_stopped(tmp_path)  # at the sweep's end a job still marked running was stopped with it
    text, ok = sweep_summary(tmp_path, planned=6)
    assert not ok
    assert (
        text.splitlines()[0]
        == f"Sweep {tmp_path}: 1 of 6 jobs completed; 2 interrupted, 1 failed and 2 never ran:"
    )
    assert "interrupted: the sweep stopped while it ran" in text and "RuntimeError: boom" in text


def _job(sweep: Path, n: int, status: dict, overrides: list[str] | None = None) -> Path:
    job = sweep / f"{n}_job-{n}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides or [f"seed={n}"]))
    (job / "status.json").write_text(json.dumps(status))
    return job


def _times(wall: float) -> dict:
    return {**dict.fromkeys(PHASES, 0.0), "train_steps": wall, "wall": wall, "fixed": 0.0}


def test_the_time_line_is_there_when_no_job_finished(tmp_path):
    _job(tmp_path, 0, {"status": "interrupted", "error": "the sweep stopped while it ran"})
    text, ok = sweep_summary(tmp_path, planned=3, elapsed=5.0)
    assert not ok and "Time: 5 s for the sweep; no job of it finished." in text.splitlines()


def test_the_time_line_of_jobs_that_record_no_phases_says_only_the_sweeps_time(tmp_path):
    _job(tmp_path, 0, {"status": "completed", "metrics": {}})  # a bench or eval job: no "times"
    text, ok = sweep_summary(tmp_path, planned=1, elapsed=12.0)
    assert ok and text.splitlines()[-1] == "Time: 12 s for the sweep."


def test_a_resumed_sweeps_time_line_counts_only_the_jobs_this_command_ran(tmp_path):
    before = _job(tmp_path, 0, {"status": "completed", "times": _times(30.0)})
    os.utime(before / "status.json", (1_000_000, 1_000_000))  # written by the first command
    _job(tmp_path, 1, {"status": "completed", "times": _times(4.0)})
    stopped = _job(tmp_path, 2, {"status": "interrupted", "error": "stopped"})
    os.utime(
        stopped / "status.json", (1_000_000, 1_000_000)
    )  # stopped by the first command, not reached since
    text, ok = sweep_summary(tmp_path, elapsed=6.0, since=2_000_000)
    assert not ok
    assert text.splitlines()[-1] == (
        "Time: 6 s for the sweep; its 1 timed job took 4.0 s = training steps 4.0 s + fixed 0.0 s (imports 0.0, "
        "start 0.0, fit setup 0.0, sanity check 0.0, validation 0.0, checkpoints 0.0, fit end 0.0, test 0.0, "
        "other 0.0) (1 job completed by an earlier command not counted)."
    )


def _real_advice(sweep: Path, job: Path) -> tuple[str, str]:
    """What resume_advice (run/resume.py) writes for a stopped sweep job with a checkpoint, and the sweep's command."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    from downsample_lab.run.resume import resume_advice, sweep_resume_command

    from .conftest import compose_config

    compose_config("train", [])
    with read_write(HydraConfig.get()):
        HydraConfig.get().mode = RunMode.MULTIRUN
        HydraConfig.get().sweep.dir = str(sweep)
    (job / "checkpoints").mkdir(parents=True)
    (job / "checkpoints" / "last.ckpt").write_bytes(b"")
    return resume_advice(job), sweep_resume_command(HydraConfig.get())


def test_the_resume_command_is_said_once_and_asks_for_a_fix_only_after_a_failure(tmp_path):
    advice, command = _real_advice(tmp_path, tmp_path / "3_job-3")
    _job(tmp_path, 0, {"status": "running"})
    _job(
        tmp_path,
        1,
        {"status": "interrupted", "error": f"interrupted; it starts again when the sweep goes on: {command}"},
    )
    _job(tmp_path, 3, {"status": "interrupted", "error": f"interrupted; {advice}"})
    assert summary.mark_stopped(tmp_path, command) == 1
    assert command in _status(tmp_path / "0_job-0")["error"]  # status.json says how to go on
    text, _ = sweep_summary(tmp_path, command, planned=3)
    assert text.count(command) == 1
    assert (
        "  job 3 (seed=3): interrupted; continue the sweep (this job from its last checkpoint) with: the command below"
        in text
    )
    assert (
        text.splitlines()[-1]
        == f"Continue the sweep with: {command} (completed jobs are skipped, the others resumed)."
    )
    _job(tmp_path, 2, {"status": "failed", "error": "RuntimeError: boom"})
    text, _ = sweep_summary(tmp_path, command, planned=4)
    assert f"Continue the sweep (after fixing what failed) with: {command}" in text


def test_jobs_are_named_by_the_keys_the_sweep_varies_even_if_the_started_ones_share_a_value(tmp_path):
    hydra = {
        "overrides": {"task": ["model.downsample=maxpool,conv", "seed=0,1"]},
        "sweeper": {"params": None},
    }
    (tmp_path / "multirun.yaml").write_text(OmegaConf.to_yaml({"hydra": hydra}))
    for n in (0, 1):
        _job(
            tmp_path,
            n,
            {"status": "interrupted", "error": "stopped"},
            ["model.downsample=maxpool", f"seed={n}"],
        )
    text, _ = sweep_summary(tmp_path, planned=4)
    assert "  job 0 (model.downsample=maxpool,seed=0): interrupted: stopped" in text.splitlines()


def test_a_jobs_clock_counts_its_imports_from_the_jobs_start():
    from downsample_lab.run.clock import JobTimes, TimedCheckpointIO

    times = JobTimes(TimedCheckpointIO(), t0=time.perf_counter() - 2.0).seconds()
    assert times["imports"] >= 2.0 and times["wall"] >= times["imports"]
    assert JobTimes(TimedCheckpointIO()).seconds()["imports"] == 0.0


def _launcher(n_jobs: int, target: str = sweeps.PARALLEL_LAUNCHER):
    return OmegaConf.create({"_target_": target, "n_jobs": n_jobs})


def test_concurrent_jobs_reads_the_parallel_launcher_only(monkeypatch):
    monkeypatch.setattr(sweeps, "cpu_count", lambda: 8)
    assert sweeps._parallel_jobs(_launcher(3)) == 3
    assert sweeps._parallel_jobs(_launcher(-1)) == 8  # joblib's "one per core"
    assert (
        sweeps._parallel_jobs(_launcher(4, "hydra._internal.core_plugins.basic_launcher.BasicLauncher")) == 1
    )
    hydra_cfg = OmegaConf.create({"launcher": _launcher(3)})
    assert sweeps.launcher_overrides(hydra_cfg) == ["hydra/launcher=parallel", "hydra.launcher.n_jobs=3"]
    assert sweeps.launcher_overrides(OmegaConf.create({"launcher": {"_target_": "x.BasicLauncher"}})) == []


@pytest.mark.parametrize(
    "trainer, refused",
    [
        ({"strategy": "ddp", "devices": 2, "num_nodes": 1, "accelerator": "gpu"}, True),
        ({"strategy": "auto", "devices": 2, "num_nodes": 1, "accelerator": "cpu"}, True),
        ({"strategy": "auto", "devices": 1, "num_nodes": 2, "accelerator": "gpu"}, True),
        ({"strategy": "auto", "devices": 1, "num_nodes": 1, "accelerator": "gpu"}, False),
        ({"strategy": "auto", "devices": [0], "num_nodes": 1, "accelerator": "gpu"}, False),
        ({"strategy": "auto", "devices": "auto", "num_nodes": 1, "accelerator": "cpu"}, False),
    ],
)
def test_ddp_inside_a_job_of_a_parallel_sweep_is_refused_in_one_sentence(trainer, refused, monkeypatch):
    t = OmegaConf.create(trainer)
    monkeypatch.setattr(sweeps, "concurrent_jobs", lambda: 1)
    sweeps.check_launcher(t)  # one job at a time: DDP is fine
    monkeypatch.setattr(sweeps, "concurrent_jobs", lambda: 2)
    if not refused:
        sweeps.check_launcher(t)
        return
    with pytest.raises(ConfigError, match="hydra/launcher=parallel") as err:
        sweeps.check_launcher(t)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value", ["0", "-3", "two", "1.5"])
def test_a_number_of_jobs_that_is_none_is_refused_before_anything_runs(value):
    from downsample_lab.config import TrainConfig
    from downsample_lab.run.argv import prepare_argv

    argv = ["train", "-m", "hydra/launcher=parallel", f"hydra.launcher.n_jobs={value}", "seed=0,1"]
    with pytest.raises(ConfigError, match=f"hydra.launcher.n_jobs={value} is not a number of jobs"):
        prepare_argv(argv, "train", TrainConfig)
    prepare_argv([*argv[:3], "hydra.launcher.n_jobs=3", "seed=0,1"], "train", TrainConfig)  # accepted


def test_the_last_epochs_checkpoint_counts_once_in_a_jobs_phases(monkeypatch):
    # Lightning writes the last epoch's checkpoints after JobTimes' epoch-end hook: they are checkpoints, not also
    # fit end (the phases then summed to more than the job's wall time, by the write's duration)
    from downsample_lab.run import clock
    from downsample_lab.run.clock import JobTimes, TimedCheckpointIO

    now = [100.0]
    monkeypatch.setattr(clock.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(clock, "synchronize", lambda device: None)
    io = TimedCheckpointIO()
    times = JobTimes(io)
    module = SimpleNamespace(device="cpu")
    times.mark("fit_start")
    times.on_fit_start(None, module)
    times.on_train_epoch_start(None, module)
    now[0] += 3.0
    times.on_train_epoch_end(None, module)
    io.seconds += 0.5  # the epoch's checkpoint, written after the hook
    now[0] += 0.7
    times.mark("fit_end")
    seconds = times.seconds()
    assert seconds["checkpoints"] == 0.5 and seconds["fit_end"] == pytest.approx(0.2)
    assert sum(seconds[p] for p in PHASES) == pytest.approx(seconds["wall"])

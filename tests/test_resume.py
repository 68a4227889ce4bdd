"""Resuming an interrupted run: a training killed mid-epoch continues to the same weights, metrics and curves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from downsample_lab.errors import ConfigError, DataError, UserError
from downsample_lab.train import train

from .conftest import REPO, TINY, as_foreground_job, compose_config

# 960 training images in batches of 32: 30 steps an epoch, 90 in all; last.ckpt every 7 steps, so the first
# checkpoint (step 7) is mid-epoch and the run has 80-odd steps left when it is killed there.
STEPS_PER_EPOCH = 30
KILL_RUN = {
    **dict(o.split("=", 1) for o in TINY),
    "data.synthetic_train_size": "1024",
    "data.batch_size": "32",
    "trainer.max_epochs": "3",
    "trainer.log_every_n_steps": "5",
    "trainer.deterministic": "true",
    "checkpoint.every_n_steps": "7",
}
TIMING = {"train/images_per_sec", "train/epoch_time"}  # wall-clock figures: the only ones allowed to differ


def _command(run_dir: Path, cache: Path, *extra: str) -> list[str]:
    overrides = [f"{k}={v}" for k, v in KILL_RUN.items()]
    return [sys.executable, "-m", "downsample_lab.train", *overrides, f"data.cache_dir={cache}",
            f"hydra.run.dir={run_dir}", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> dict[str, Path]:
    """An uninterrupted run, and the same run SIGKILLed after its first mid-epoch checkpoint, then resumed."""
    tmp = tmp_path_factory.mktemp("resume")
    cache, full, killed = tmp / "cache", tmp / "full", tmp / "killed"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": REPO, "env": env}
    reference = subprocess.Popen(_command(full, cache), **quiet)  # side by side: the wait is mostly imports
    victim = subprocess.Popen(_command(killed, cache), **quiet)
    last = (
        killed / "checkpoints" / "last.ckpt"
    )  # written to a temporary name, then renamed: complete when seen
    deadline = time.monotonic() + 300
    while not last.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, "the run ended before its first checkpoint could be seen"
    assert reference.wait(timeout=300) == 0
    # copy what the kill left, for the tests below
    state = torch.load(last, weights_only=True)
    (tmp / "at_kill.json").write_text(
        json.dumps({"status": json.loads((killed / "status.json").read_text())["status"],
                    "step": state["global_step"],
                    "loader": state["loops"]["fit_loop"]["state_dict"]["combined_loader"]})
    )  # fmt: skip
    (tmp / "at_kill.ckpt").write_bytes(last.read_bytes())
    records = _records(killed)
    # a resume with keys that differ from the run's is refused, listing each of them, and touches nothing
    refused = subprocess.run(
        [sys.executable, "-m", "downsample_lab.train", "resume=true", f"hydra.run.dir={killed}", "seed=5",
         "model.widths=[4,16]", "data.root=/elsewhere"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    (tmp / "refused.json").write_text(
        json.dumps({"rc": refused.returncode, "stderr": refused.stderr, "same": _records(killed) == records})
    )
    # the run's directory alone: its own overrides come from .hydra/overrides.yaml
    resumed = subprocess.run(
        [sys.executable, "-m", "downsample_lab.train", "resume=true", f"hydra.run.dir={killed}"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert {k: v for k, v in _records(killed).items() if k.startswith(".hydra/")} == {
        k: v for k, v in records.items() if k.startswith(".hydra/")
    }, "the resume rewrote the run's .hydra/ records"
    return {"full": full, "killed": killed, "at_kill": tmp / "at_kill.json", "ckpt": tmp / "at_kill.ckpt",
            "cache": cache, "refused": tmp / "refused.json"}  # fmt: skip


def _records(run: Path) -> dict[str, bytes]:
    """What a refused resume must leave byte-identical: .hydra/, status.json, the checkpoints."""
    files = [*(run / ".hydra").iterdir(), run / "status.json", *(run / "checkpoints").iterdir()]
    return {str(p.relative_to(run)): p.read_bytes() for p in files}


def test_a_refused_resume_lists_every_differing_key_and_leaves_the_run_byte_identical(killed_and_resumed):
    refused = json.loads(killed_and_resumed["refused"].read_text())
    assert refused["rc"] == 2
    (line,) = refused["stderr"].strip().splitlines()
    assert (
        "2 key(s) differ from the run that wrote it: model.widths=[4, 16] here but [4, 8] in the run; "
        in line
    )
    assert "seed=5 here but 0 in the run;" in line
    assert "data.root" not in line.split(" may change")[0].split("drop those overrides")[0]  # may change
    assert refused["same"], "the refused resume changed the run's .hydra/, status.json or checkpoints"


def test_the_run_was_killed_mid_epoch(killed_and_resumed):
    at_kill = json.loads(killed_and_resumed["at_kill"].read_text())
    assert at_kill["status"] == "running"  # SIGKILL: nothing could record the end
    assert at_kill["step"] % STEPS_PER_EPOCH != 0, at_kill
    assert (
        at_kill["loader"][0]["batches"] == at_kill["step"] % STEPS_PER_EPOCH
    )  # batches of this epoch handed out


def test_killed_and_resumed_run_ends_with_the_same_weights_and_metrics(killed_and_resumed):
    full, killed = killed_and_resumed["full"], killed_and_resumed["killed"]
    expected = json.loads((full / "status.json").read_text())
    got = json.loads((killed / "status.json").read_text())
    assert got["status"] == "completed"
    assert set(got["metrics"]) == set(expected["metrics"])
    for key, value in expected["metrics"].items():
        if key not in TIMING:
            assert got["metrics"][key] == pytest.approx(value, abs=1e-6), key
    a = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 3 * STEPS_PER_EPOCH
    worst = max(
        (a["state_dict"][k].double() - b["state_dict"][k].double()).abs().max().item()
        for k in a["state_dict"]
    )
    assert set(a["state_dict"]) == set(b["state_dict"])
    assert worst <= 1e-6, f"max |weight difference| = {worst}"
    # the best checkpoint, and so the test metrics, are the same file name and score
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == sorted(
        p.name for p in (killed / "checkpoints").iterdir()
    )


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    (tb_run,) = (run_dir / "tb").iterdir()
    acc = EventAccumulator(str(tb_run))  # TensorBoard's own reader: applies the resumed run's purge_step
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_shows_one_continuous_curve(killed_and_resumed):
    expected, got = _scalars(killed_and_resumed["full"]), _scalars(killed_and_resumed["killed"])
    for tag in (
        "train/loss",
        "train/lr/weights",
        "train/acc",
        "val/acc",
        "val/loss",
        "val/acc_best",
        "test/acc",
    ):
        assert [step for step, _ in got[tag]] == [step for step, _ in expected[tag]], tag  # each step once
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in expected[tag]], abs=1e-6), tag


def test_truncated_checkpoint_is_refused_in_one_sentence(killed_and_resumed, tmp_path):
    whole = killed_and_resumed["ckpt"].read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(whole[: len(whole) // 2])
    overrides = [f"{k}={v}" for k, v in KILL_RUN.items()] + [f"data.cache_dir={killed_and_resumed['cache']}"]
    cfg = compose_config("train", [*overrides, f"ckpt_path={cut}"], run_dir=tmp_path / "run")
    with pytest.raises(UserError, match=f"cannot resume from checkpoint {cut} ") as info:
        train(cfg)
    assert "\n" not in str(info.value)


def test_resume_refuses_another_runs_config(killed_and_resumed, tmp_path):
    overrides = [f"{k}={v}" for k, v in KILL_RUN.items()] + [f"data.cache_dir={killed_and_resumed['cache']}"]
    ckpt = killed_and_resumed["ckpt"]
    cfg = compose_config(
        "train", [*overrides, "model.widths=[4,16]", f"ckpt_path={ckpt}"], run_dir=tmp_path / "r"
    )
    with pytest.raises(ConfigError, match=r"model.widths=\[4, 16\] here but \[4, 8\] in the run"):
        train(cfg)


def test_resume_refuses_other_data_than_the_run_started_on(killed_and_resumed, tmp_path):
    # data.root may change on a resume (a copy that moved), the images may not: as if the run had read another copy
    state = torch.load(killed_and_resumed["ckpt"], weights_only=True)
    assert len(state["data_digest"]) == 12  # the checkpoint records what the run read
    state["data_digest"] = "0123456789ab"
    other = tmp_path / "other.ckpt"
    torch.save(state, other)
    overrides = [f"{k}={v}" for k, v in KILL_RUN.items()] + [f"data.cache_dir={killed_and_resumed['cache']}"]
    cfg = compose_config("train", [*overrides, f"ckpt_path={other}"], run_dir=tmp_path / "r")
    with pytest.raises(DataError, match=r"the run trained on data of digest 0123456789ab, and data.root="):
        train(cfg)
    assert not (
        tmp_path / "r" / "tb"
    ).exists()  # refused before anything was written (the HParams: its digest)


def test_resume_without_a_checkpoint_names_what_to_pass(tmp_path, tiny_overrides):
    # a single run that has no last.ckpt: most likely hydra.run.dir was forgotten (a new directory)
    cfg = compose_config("train", [*tiny_overrides, "resume=true"], run_dir=tmp_path / "new")
    with pytest.raises(
        ConfigError, match=r"resume=true but .*last.ckpt does not exist; pass .*hydra.run.dir="
    ):
        train(cfg)


def test_ctrl_c_and_sigterm_print_the_run_directory_and_how_to_go_on(tmp_path):
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "cwd": REPO, "env": env}
    early, late = tmp_path / "early", tmp_path / "late"
    # SIGTERM as soon as the run has begun: before its first checkpoint (step 7) there is nothing to continue
    terminated = subprocess.Popen(_command(early, cache), **pipes)
    interrupted = subprocess.Popen(_command(late, cache), **pipes, preexec_fn=as_foreground_job)
    deadline = time.monotonic() + 300
    while not (early / "status.json").exists() and terminated.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    terminated.send_signal(signal.SIGTERM)
    last = late / "checkpoints" / "last.ckpt"
    while not last.exists() and interrupted.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    interrupted.send_signal(signal.SIGINT)  # Ctrl-C
    _, term_err = terminated.communicate(timeout=300)
    _, int_err = interrupted.communicate(timeout=300)

    assert terminated.returncode == 128 + signal.SIGTERM
    assert not (early / "checkpoints" / "last.ckpt").exists()
    restart = "it had no checkpoint yet, so it must start again: python -m downsample_lab.train data.source=synthetic"
    assert f"Run {early} stopped by SIGTERM; {restart}" in term_err
    assert "resume=true" not in term_err.split(restart)[1]
    assert restart in json.loads((early / "status.json").read_text())["error"]

    assert interrupted.returncode == 128 + signal.SIGINT  # 130, as a shell reports it, not Lightning's 1
    go_on = f"continue it with: python -m downsample_lab.train resume=true hydra.run.dir={late}"
    assert f"Run {late} interrupted; {go_on}" in int_err
    status = json.loads((late / "status.json").read_text())
    assert status["status"] == "interrupted" and status["error"] == f"interrupted; {go_on}"
    assert json.loads((early / "status.json").read_text())["status"] == "interrupted"

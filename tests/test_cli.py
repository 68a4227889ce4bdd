"""The command line: user mistakes end with one line and exit code 2; interrupted runs say how to go on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict, read_write

from downsample_lab import cli
from downsample_lab.config import EvalConfig, ShapesConfig, TrainConfig, check_accelerator, validate
from downsample_lab.entry import run_task
from downsample_lab.errors import ConfigError

from .conftest import compose_config, run_cli


def _argv(*overrides: str, name: str = "train", schema: type = TrainConfig) -> list[str]:
    return cli.prepare_argv(["prog", *overrides], name, schema)


@pytest.mark.parametrize(
    ("overrides", "name", "schema", "message"),
    [
        (["model.downsampl=conv"], "train", TrainConfig, r"model.downsampl is not a config key; did you mean model.downsample\?"),
        (["trainer.max_epoch=1"], "train", TrainConfig, r"trainer.max_epoch is not a config key; did you mean trainer.max_epochs\?"),
        (["-m", "sed=0,1"], "train", TrainConfig, r"sed is not a config key; did you mean seed\?"),
        (["data.batchsize=8"], "eval", EvalConfig, r"did you mean data.batch_size\?"),
        (["bench.threads=1"], "train", TrainConfig, r"^bench.threads is not a config key \(train has: seed, resume, ckpt_path, checkpoint, model,"),
        (["foo=1"], "eval", EvalConfig, r"^foo is not a config key \(eval has: seed, ckpt_path, data, trainer, eval\)$"),
        (["model.kernel=5"], "shapes", ShapesConfig, r"did you mean model.kernel_size\?"),
        (["model=cnnn"], "train", TrainConfig, r"model=cnnn is not a model config; did you mean cnn\? \(configs/model/ has: "),
        (["-m", "trainer=cpu,gpux"], "train", TrainConfig, r"trainer=gpux is not a trainer config; did you mean gpu\?"),
        (["experiment=ablation_quik"], "train", TrainConfig, r"did you mean ablation_quick\?"),
        (["+seed=1"], "train", TrainConfig, r"\+seed: seed is already a config key; set it without the \+"),
        (["ckpt_path=/runs/0_a=b[1]/last.ckpt"], "train", TrainConfig,
         r"cannot read the override ckpt_path=/runs/0_a=b\[1\]/last.ckpt: .* in quotes, e.g. 'ckpt_path=\"/runs/0_a=b\[1\]/last.ckpt\"'"),
        (["experiment=ablation_quick"], "train", TrainConfig,
         r"experiment=ablation_quick is a sweep \(it sets hydra.sweeper.params\); add -m to run it"),
    ],
)  # fmt: skip
def test_command_line_mistakes_are_named_before_hydra_runs(overrides, name, schema, message):
    with pytest.raises(ConfigError, match=message) as info:
        _argv(*overrides, name=name, schema=schema)
    assert "\n" not in str(info.value)


def test_valid_command_lines_pass_unchanged():
    for argv in (
        ["model.downsample=conv", "+extra.key=1", "hydra.run.dir=x", "~ckpt_path", "trainer=gpu"],
        ["-m", "experiment=ablation_quick", "seed=0,1", "hydra/launcher=slurm"],
        ['ckpt_path="/runs/0_a=b[1]/last.ckpt"'],
        ["--cfg", "job", "model.widths=[8,16]"],
    ):
        assert _argv(*argv) == ["prog", *argv]


def test_a_typo_exits_2_with_one_line_and_creates_no_run(tmp_path):
    result = run_cli("train", "model.downsampl=conv", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: model.downsampl is not a config key; did you mean model.downsample? (the model group has: "
        "name, widths, dropout, channels_last, compile, downsample, padding_mode, kernel_size, blocks, match_params, whiten_bias_epochs, batch_norm)"
    ]
    assert not (tmp_path / "run").exists()


def test_a_sweep_experiment_without_multirun_exits_2_with_one_line(tmp_path):
    result = run_cli("train", "experiment=ablation_quick", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "add -m to run it: python -m downsample_lab.train -m experiment=ablation_quick" in result.stderr
    assert not (tmp_path / "run").exists()


def test_shapes_of_an_input_too_small_for_the_model_is_one_line():
    result = run_cli("shapes", "input_size=[1,3,4,4]")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: input_size=[1,3,4,4] is too small for cnn with maxpool downsampling")
    assert line.endswith("e.g. input_size=[1,3,8,8] fits")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainer_without_a_gpu_is_one_sentence(trainer):
    with pytest.raises(
        ConfigError, match=r"trainer.accelerator=gpu \(trainer=gpu, trainer=ddp\) needs a CUDA GPU"
    ):
        check_accelerator(validate(compose_config("train", [f"trainer={trainer}"])).trainer)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_ddp_trainer_without_a_gpu_exits_2_without_traceback(tmp_path):
    result = run_cli("train", "trainer=ddp", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: trainer.accelerator=gpu")


def test_resume_takes_the_saved_overrides_of_the_run(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- model.downsample=conv\n- seed=3\n- data.root=/a\n")
    argv = _argv("resume=true", f"hydra.run.dir={run}", "data.root=/b", "trainer.enable_progress_bar=false")
    assert argv == [
        "prog", "model.downsample=conv", "seed=3", "data.root=/b", "resume=true", f"hydra.run.dir={run}",
        "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    # a sweep: the saved sweep overrides come first, in their order, so the jobs keep their numbers
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - optim.lr=0.1,0.2\n    - seed=0,1\n"
    )
    argv = _argv("-m", "seed=0,1", "resume=true", f"hydra.sweep.dir={sweep}")
    assert argv == ["prog", "-m", "optim.lr=0.1,0.2", "seed=0,1", "resume=true", f"hydra.sweep.dir={sweep}"]
    assert _argv("resume=true", f"hydra.run.dir={tmp_path / 'none'}") == [
        "prog", "resume=true", f"hydra.run.dir={tmp_path / 'none'}"
    ]  # fmt: skip


def _crash(cfg):
    raise RuntimeError("boom")


@pytest.mark.parametrize("checkpoint", [False, True])
def test_a_crash_prints_the_run_directory_and_how_to_go_on(tmp_path, tiny_overrides, capsys, checkpoint):
    run = tmp_path / "run"
    cfg = compose_config("train", tiny_overrides, run_dir=run)
    if checkpoint:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(RuntimeError):
        run_task(_crash, cfg, metric=None)
    err = capsys.readouterr().err
    status = (run / "status.json").read_text()
    if checkpoint:
        expected = f"continue it with: python -m downsample_lab.train resume=true hydra.run.dir={run}"
    else:
        expected = (
            "it had no checkpoint yet, so it must start again: python -m downsample_lab.train data.source"
        )
    assert f"Run {run} crashed (RuntimeError: boom); {expected}" in err
    assert expected in status


def test_a_crashed_sweep_job_names_the_sweep_command(tmp_path, tiny_overrides, capsys):
    cfg = compose_config("train", tiny_overrides, run_dir=tmp_path / "sweep" / "0_seed=1")
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.mode = RunMode.MULTIRUN
        hydra_cfg.sweep.dir = str(tmp_path / "sweep")
    with pytest.raises(RuntimeError):
        run_task(_crash, cfg, metric=None)
    err = capsys.readouterr().err
    command = f"python -m downsample_lab.train -m resume=true hydra.sweep.dir={tmp_path / 'sweep'}"
    assert f"this job had no checkpoint yet and starts again when the sweep goes on: {command}" in err


def test_resume_command_quotes_a_directory_hydra_could_not_parse(tmp_path, tiny_overrides, capsys):
    run = tmp_path / "0_model.widths=[4,8]"
    cfg = compose_config("train", tiny_overrides, run_dir=run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(RuntimeError):
        run_task(_crash, cfg, metric=None)
    assert f"""resume=true 'hydra.run.dir="{run}"'""" in capsys.readouterr().err


def test_die_with_parent_does_nothing_outside_a_ddp_worker(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    cli.die_with_parent()  # returns; a worker's half is tested with real processes in test_distributed.py


def test_records_subdir_is_kept_for_a_resumed_run(tmp_path):
    from downsample_lab.resolvers import records_subdir

    assert records_subdir(str(tmp_path), True) == ".hydra"  # nothing to keep yet
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 0\n")
    assert records_subdir(str(tmp_path), False) == ".hydra"
    assert records_subdir(str(tmp_path), True) is None
    assert Path(tmp_path / ".hydra" / "config.yaml").read_text() == "seed: 0\n"

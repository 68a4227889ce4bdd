"""The command line: user mistakes end with one line and exit code 2; interrupted runs say how to go on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from downsample_lab.config import EvalConfig, ShapesConfig, TrainConfig, validate
from downsample_lab.device import check_accelerator
from downsample_lab.errors import ConfigError
from downsample_lab.run import argv as run_argv
from downsample_lab.run import ddp, resume
from downsample_lab.run.job import run_task
from downsample_lab.run.resume import sweep_resume_command

from .conftest import compose_config, run_cli


def _argv(*overrides: str, name: str = "train", schema: type = TrainConfig) -> list[str]:
    return run_argv.prepare_argv(["prog", *overrides], name, schema)


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


def test_cfg_with_multirun_is_one_line_that_says_what_to_type():
    with pytest.raises(ConfigError) as info:
        _argv("-m", "experiment=ablation_fast", "seed=0,1", "--cfg", "job")
    assert str(info.value).endswith("python -m downsample_lab.train experiment=ablation_fast --cfg job")
    # and what it suggests passes: a sweep experiment's shared config, without -m
    assert _argv("experiment=ablation_fast", "--cfg", "job") == [
        "prog",
        "experiment=ablation_fast",
        "--cfg",
        "job",
    ]


def test_valid_command_lines_pass_unchanged():
    for argv in (
        ["model.downsample=conv", "+extra.key=1", "hydra.run.dir=x", "~ckpt_path", "trainer=gpu"],
        ["-m", "experiment=ablation_quick", "seed=0,1", "hydra/launcher=slurm"],
        ['ckpt_path="/runs/0_a=b[1]/last.ckpt"'],
        ["--cfg", "job", "model.widths=[8,16]"],
    ):
        assert _argv(*argv) == ["prog", *argv]


def test_resume_where_there_is_nothing_to_continue_is_one_line_and_creates_nothing(tmp_path):
    missing, empty = tmp_path / "does-not-exist", tmp_path / "empty"
    empty.mkdir()
    cases = [
        (
            ["resume=true", f"hydra.run.dir={missing}"],
            rf"resume=true but hydra.run.dir={missing} does not exist",
        ),
        (["resume=true", f"hydra.run.dir={empty}"], rf"resume=true but {empty} holds no run \(no .hydra or"),
        (
            ["-m", "resume=true", f"hydra.sweep.dir={missing}"],
            r"does not exist; pass the directory of the sweep",
        ),
        (["-m", "resume=true", f"hydra.sweep.dir={empty}"], r"holds no sweep \(no multirun.yaml\)"),
        (["resume=true"], r"resume=true needs the run to continue: add hydra.run.dir=outputs/train/<run>"),
    ]
    for argv, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            _argv(*argv)
        assert "\n" not in str(info.value)
    assert not missing.exists() and not any(empty.iterdir())
    (empty / "status.json").write_text("{}")  # a run's directory: its own overrides (none saved) go on
    assert _argv("resume=true", f"hydra.run.dir={empty}")[-1] == f"hydra.run.dir={empty}"
    # a checkpoint named outright: train reads and checks it
    assert _argv("resume=true", "ckpt_path=/x/last.ckpt") == ["prog", "resume=true", "ckpt_path=/x/last.ckpt"]


def test_a_bad_last_value_of_a_sweep_stops_it_before_the_first_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "train", "-m", "model.downsample=maxpool,conv,strided", "seed=0,1", f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: job 4 of the sweep (model.downsample=strided seed=0): model.downsample='strided' is not valid; "
        "choose one of maxpool, conv, conv3, avgpool, blurpool, stride, conv_avg, aps, maxavg; did you mean "
        "stride? (no job has started)"
    ]
    assert not sweep.exists()  # no sweep directory, no job directory


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # a rule between two keys: only the combination of both values is refused
        (["model.downsample=maxpool,blurpool", "model.padding_mode=zeros,reflect"],
         r"^job 3 of the sweep \(model.downsample=blurpool model.padding_mode=reflect\): .* pads with zeros only"),
        # the command line narrows an experiment's sweep (Hydra's rule): its last value is checked
        (["experiment=fair_cpu_tune", "model.downsample=maxpool", "optim.lr=5.75,-1.0"],
         r"^job 1 of the sweep \(model.downsample=maxpool optim.lr=-1.0 seed=100\): optim.lr"),
        (["trainer=cpu,gpu"] if not torch.cuda.is_available() else ["trainer=cpu,gpux"], r"^job 1 of the sweep"),
    ],
)  # fmt: skip
def test_every_job_of_a_sweep_is_validated_before_the_first_starts(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        run_argv.check_multirun(["prog", "-m", *overrides], "train", TrainConfig)
    assert "\n" not in str(info.value)


def test_a_sweep_checks_its_data_files_where_its_jobs_run(tmp_path):
    folder = ["data.source=folder", f"data.root={tmp_path}", "seed=0,1"]
    with pytest.raises(
        ConfigError, match=rf"^job 0 of the sweep \(seed=0\): {re.escape(str(tmp_path))}/train does"
    ):
        run_argv.check_multirun(["prog", "-m", *folder], "train", TrainConfig)
    # on SLURM's nodes, not here (the data may be mounted there only): each job checks them as it starts
    assert run_argv.check_multirun(["prog", "-m", *folder, "hydra/launcher=slurm"], "train", TrainConfig) == 2


def test_a_valid_sweep_checks_each_job_and_a_single_run_is_left_to_itself():
    tune = ["experiment=fair_cpu_tune", "data.source=synthetic"]
    assert (
        run_argv.check_multirun(["prog", "-m", *tune], "train", TrainConfig) == 27
    )  # 9 arms x 3 lrs x seed 100
    assert run_argv.check_multirun(["prog", "-m", "seed=0"], "train", TrainConfig) == 0
    assert run_argv.check_multirun(["prog", "model.downsample=strided"], "train", TrainConfig) == 0  # not -m
    assert run_argv.check_multirun(["prog", "-m", "seed=range(0,3)"], "train", TrainConfig) == 3
    with pytest.raises(ConfigError, match=r"^job 0 of the sweep \(seed=0\): eval.shift_images has no value"):
        run_argv.check_multirun(
            ["prog", "-m", "seed=0,1", "~eval.shift_images"], "train", TrainConfig
        )  # as a run
    # a resumed sweep skips its completed jobs: the others are checked as they start
    resumed = ["prog", "-m", "resume=true", "model.downsample=strided,conv"]
    assert run_argv.check_multirun(resumed, "train", TrainConfig) == 0


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
@pytest.mark.parametrize(
    ("tool", "args"), [("train", ["trainer=ddp"]), ("eval", ["ckpt_path=x.ckpt", "trainer=gpu"]), ("bench", ["trainer=gpu"])]
)  # fmt: skip
def test_a_gpu_trainer_without_a_gpu_exits_2_without_traceback(tmp_path, tool, args):
    result = run_cli(tool, *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: trainer.accelerator=gpu")


def test_resume_takes_the_saved_overrides_of_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv(
        resume.ADDED_OVERRIDES_ENV, raising=False
    )  # what a resumed sweep added: set back after
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
    hydra_cfg = OmegaConf.create({"sweep": {"dir": str(sweep)}, "launcher": {"_target_": "basic"}})
    assert sweep_resume_command(hydra_cfg).endswith(f"hydra.sweep.dir={sweep}")  # seed=0,1 was the sweep's
    # what a resume adds (a data.root fixed after a failure) must be in the command that continues it again
    _argv("-m", "resume=true", f"hydra.sweep.dir={sweep}", "data.root=/my data", "hydra/launcher=parallel")
    assert sweep_resume_command(hydra_cfg).endswith(f"hydra.sweep.dir={sweep} 'data.root=/my data'")
    _argv("-m", "resume=true", f"hydra.sweep.dir={sweep}", "hydra/launcher=slurm")  # not one the command adds
    assert sweep_resume_command(hydra_cfg).endswith(f"hydra.sweep.dir={sweep} hydra/launcher=slurm")
    _argv("-m", "seed=0,1")  # a new sweep: nothing added
    assert sweep_resume_command(hydra_cfg).endswith(f"hydra.sweep.dir={sweep}")
    with pytest.raises(
        ConfigError, match="does not exist"
    ):  # nothing to take the overrides from, or to resume
        _argv("resume=true", f"hydra.run.dir={tmp_path / 'none'}")


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


def test_a_sweep_job_stopped_in_the_sweeps_own_process_leaves_the_resume_command_to_the_summary(
    tmp_path, tiny_overrides, capsys, monkeypatch
):
    # One job at a time, the process that runs the job prints the sweep's summary next, whose last line gives the
    # command that continues the sweep: the job's own line only says what happened (the command is printed once).
    from downsample_lab.run import summary as run_summary
    from downsample_lab.run.summary import SweepSummary, summary_follows

    monkeypatch.setattr(run_summary, "_pending", None)  # set back however the test ends

    sweep = tmp_path / "sweep"
    cfg = compose_config("train", tiny_overrides, run_dir=sweep / "0_seed=1")
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.mode = RunMode.MULTIRUN
        hydra_cfg.sweep.dir = str(sweep)
    monkeypatch.setattr("atexit.register", lambda f: f)  # the test prints the summary itself
    summary = SweepSummary()
    summary.on_multirun_start(OmegaConf.create({"hydra": hydra_cfg, "resume": cfg.resume}))
    assert summary_follows(sweep / "0_seed=1") and not summary_follows(tmp_path / "elsewhere")
    with pytest.raises(RuntimeError):
        run_task(_crash, cfg, metric=None)
    summary._report()
    assert not summary_follows(sweep / "0_seed=1")
    out = capsys.readouterr()
    command = f"python -m downsample_lab.train -m resume=true hydra.sweep.dir={sweep}"
    assert f"Run {sweep / '0_seed=1'} crashed (RuntimeError: boom).\n" in out.err
    assert (out.out + out.err).count(command) == 1, out.err
    assert "  job 0: crashed (RuntimeError: boom); this job had no checkpoint yet" in out.err
    assert f"Continue the sweep (after fixing what failed) with: {command} (completed jobs" in out.err


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
    ddp.die_with_parent()  # returns; a worker's half is tested with real processes in test_distributed.py


def test_records_subdir_is_kept_for_a_resumed_run(tmp_path):
    from downsample_lab.run.resolvers import records_subdir

    assert records_subdir(str(tmp_path), True) == ".hydra"  # nothing to keep yet
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 0\n")
    assert records_subdir(str(tmp_path), False) == ".hydra"
    assert records_subdir(str(tmp_path), True) is None
    assert Path(tmp_path / ".hydra" / "config.yaml").read_text() == "seed: 0\n"


@pytest.mark.parametrize(
    "bad", ["model.downsample=maxpol", "optim.lr=-1", "data.source=folder data.root=/nope"]
)
def test_a_single_run_with_a_bad_value_exits_2_in_one_line_and_leaves_no_directory(tmp_path, bad):
    result = run_cli("train", *bad.split(), cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert result.stderr.startswith("error: ") and not (tmp_path / "outputs").exists()


def test_counted_words_a_count_in_the_singular_only_for_one():
    from downsample_lab.console import counted

    assert [counted(n, "job") for n in (0, 1, 2)] == ["0 jobs", "1 job", "2 jobs"]
    assert counted(1, "strategy", "strategies") == "1 strategy"
    assert counted(3, "strategy", "strategies") == "3 strategies"

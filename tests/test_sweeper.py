"""hydra/sweeper=checked: Hydra's basic sweeper, without composing every job again after the project's check."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from downsample_lab.config import BenchConfig, TrainConfig
from downsample_lab.run import argv as run_argv
from downsample_lab.run import sweep

from .conftest import REPO, compose_config

TARGET = "hydra_plugins.downsample_lab_sweeper.checked_sweeper.CheckedSweeper"


@pytest.mark.parametrize("name", ["train", "eval", "bench"])
def test_the_configs_sweep_with_the_checked_sweeper_which_hydra_finds(name):
    compose_config(name, [])
    sweeper = HydraConfig.get().sweeper
    assert sweeper._target_ == TARGET
    assert sweeper.params is None and sweeper.max_batch_size is None  # the basic sweeper's keys
    assert (
        TARGET in Plugins.instance().class_name_to_class
    )  # Hydra's plugin scan finds it, so it can start it


@pytest.fixture
def hydra_checks(monkeypatch) -> list:
    """The batches Hydra's own composition pass (Sweeper.validate_batch_is_legal) is given."""
    calls: list = []
    monkeypatch.setattr(Sweeper, "validate_batch_is_legal", lambda self, batch: calls.append(batch))
    return calls


def _sweeper(batches: list[list[list[str]]], config_name: str = "train", sweep_dir: str = "") -> Sweeper:
    # The class as Hydra starts it: its plugin scan runs the plugin modules again, so an import here would give
    # a class whose base Hydra has since replaced.
    s = Plugins.instance().class_name_to_class[TARGET](max_batch_size=None)
    s.overrides = batches  # what BasicSweeper.sweep sets before it validates and launches each batch
    s.config = OmegaConf.create({"hydra": {"job": {"config_name": config_name}, "sweep": {"dir": sweep_dir}}})
    return s


@pytest.mark.parametrize(
    ("checked", "hydra_composes"),
    [
        (("train", 4), False),  # all 4 jobs checked
        (("", 0), True),  # none (e.g. a resumed sweep)
        (("train", 3), True),  # another sweep's count
        (("train", 5), True),
        (
            ("bench", 4),
            True,
        ),  # another config's (python -m downsample_lab.bench --config-name bench_overhead)
    ],
)
def test_hydra_composes_the_jobs_again_only_when_the_check_did_not_cover_them(
    monkeypatch, hydra_checks, checked, hydra_composes
):
    monkeypatch.setattr(sweep, "_checked", checked)
    batches = [[["seed=0"], ["seed=1"]], [["seed=2"], ["seed=3"]]]  # max_batch_size=2
    s = _sweeper(batches)
    for batch in batches:
        s.validate_batch_is_legal(batch)
    assert hydra_checks == (batches if hydra_composes else [])


def test_the_check_counts_the_jobs_it_validated_and_forgets_them_for_a_command_it_does_not_check(monkeypatch):
    monkeypatch.setattr(sweep, "_checked", ("", 0))
    assert run_argv.check_multirun(["prog", "-m", "seed=range(0,3)"], "train", TrainConfig) == 3
    assert sweep.checked_jobs("train") == 3 and sweep.checked_jobs("eval") == 0
    resumed = ["prog", "-m", "resume=true", "seed=range(0,3)"]  # Hydra's sweeper checks a resumed sweep
    assert run_argv.check_multirun(resumed, "train", TrainConfig) == 0
    assert sweep.checked_jobs("train") == 0
    assert run_argv.check_multirun(["prog", "-m", "seed=range(0,3)"], "train", TrainConfig) == 3
    with pytest.raises(Exception, match="job 1 of the sweep"):
        run_argv.check_multirun(["prog", "-m", "model.downsample=maxpool,nope"], "train", TrainConfig)
    assert sweep.checked_jobs("train") == 0  # a refused sweep never starts; nothing stands as checked
    elsewhere = ["prog", "-m", "--config-dir", "/elsewhere", "seed=0,1"]  # configs the check does not read
    assert run_argv.check_multirun(elsewhere, "train", TrainConfig) == 0


def test_the_check_composes_the_config_hydra_will(monkeypatch):
    monkeypatch.setattr(sweep, "_checked", ("", 0))
    overhead = ["prog", "--config-name", "bench_overhead", "-m", "seed=0,1"]
    assert run_argv.check_multirun(overhead, "bench", BenchConfig) == 2
    assert sweep.checked_jobs("bench_overhead") == 2 and sweep.checked_jobs("bench") == 0


def test_a_sweep_record_is_read_again_when_it_changes_even_to_the_same_size(tmp_path):
    record = tmp_path / sweep.SWEEP_RECORD

    def write(key: str) -> None:
        OmegaConf.save(
            {"hydra": {"overrides": {"task": [f"{key}=1,2"]}, "sweeper": {"params": None}}}, record
        )

    write("seed")
    assert sweep.varying_keys(tmp_path) == ["seed"]
    write("sede")  # same size, maybe the same timestamp
    assert sweep.varying_keys(tmp_path) == ["sede"]


@pytest.mark.parametrize(("checked", "hydra_composes"), [(("train", 2), False), (("", 0), True)])
def test_a_real_sweep_of_the_basic_sweeper_goes_through_the_skip(
    tmp_path, monkeypatch, hydra_checks, checked, hydra_composes
):
    # Guards the private base (hydra._internal's BasicSweeper): its sweep() sets .overrides to the sweep's batches
    # before it validates each one. Were that renamed, the skip would silently stop (Hydra would compose again).
    monkeypatch.setattr(sweep, "_checked", checked)
    launched = []

    class Launcher:
        def launch(self, batch, initial_job_idx):
            launched.append([list(job) for job in batch])
            return [SimpleNamespace(return_value=None) for _ in batch]

    s = _sweeper([], sweep_dir=str(tmp_path))
    s.overrides = None
    s.launcher, s.hydra_context = Launcher(), SimpleNamespace(config_loader=None, callbacks=None)
    s.sweep(["seed=0,1"])
    assert launched == [[["seed=0"], ["seed=1"]]]
    assert [[list(job) for job in batch] for batch in hydra_checks] == (launched if hydra_composes else [])


def test_the_startup_bench_times_a_sweep_to_its_first_job_without_running_one(tmp_path):
    # scripts/bench_startup.py first-job: the figures of docs/BENCHMARKS.md ("Hydra's second composition")
    result = subprocess.run(
        [sys.executable, "scripts/bench_startup.py", "first-job", "--runs", "1", "--", "data.source=synthetic",
         "seed=0,1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    seconds = float(result.stdout.rsplit(": ", 1)[1].removesuffix(" s\n"))
    assert 0 < seconds < 60
    assert not (REPO / "outputs" / "train-multirun" / "sweep").exists()

"""What a researcher sees of a study: TensorBoard's HParams and Scalars, sweep job folders, the sweep summary.

The last test starts a real TensorBoard server on a tiny 2-arm x 2-seed sweep and asks it, through its HTTP
API, what its HParams and Scalars dashboards would show.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf, read_write
from tensorboard.plugins.hparams import api_pb2, metadata

from downsample_lab.config import TrainConfig, validate
from downsample_lab.engine.hparams import (
    _schema_kinds,
    hparam_metrics,
    hparam_values,
    hparams_summaries,
    swept_keys,
    trial_name,
)
from downsample_lab.run.summary import sweep_summary
from downsample_lab.run.sweep import job_dirname, planned_jobs, short_dirname, swept_overrides
from downsample_lab.train import run_name

from .conftest import TINY, compose_config, run_cli

STUDY_METRICS = ["test/acc", "val/acc_best", "train/images_per_sec", "model/params"]


# ----------------------------------------------------------------------------------------------------------
# HParams summaries


def _experiment(summaries) -> api_pb2.Experiment:
    exp = summaries[0].value[0]
    assert exp.tag == metadata.EXPERIMENT_TAG
    return metadata.parse_experiment_plugin_data(exp.metadata.plugin_data.content)


def _start(summaries):
    return metadata.parse_session_start_info_plugin_data(summaries[1].value[0].metadata.plugin_data.content)


@pytest.mark.parametrize("subset", [None, 128])
def test_hparam_types_come_from_the_schema_and_booleans_stay_booleans(subset):
    cfg = compose_config("train", [f"data.train_subset={'null' if subset is None else subset}"])
    values, kinds = hparam_values(OmegaConf.to_container(cfg, resolve=True), _schema_kinds(TrainConfig))
    # one type per key whatever the run's value: a null count is left out, never the string "null"
    assert kinds["data.train_subset"] == "number" and kinds["seed"] == "number"
    assert values.get("data.train_subset") == subset
    assert kinds["data.augment"] == "bool" and values["data.augment"] is True
    assert kinds["model.widths"] == "string" and values["model.widths"] == "[64, 128, 256]"
    assert kinds["trainer.limit_train_batches"] == "string"  # null, a fraction or a count: text in every run
    start = _start(hparams_summaries(values, kinds, STUDY_METRICS, ["seed"]))
    assert start.hparams["data.augment"].WhichOneof("kind") == "bool_value"


def test_experiment_marks_differing_keys_and_orders_the_metrics():
    cfg = compose_config("train")
    values, kinds = hparam_values(OmegaConf.to_container(cfg, resolve=True), _schema_kinds(TrainConfig))
    summaries = hparams_summaries(values, kinds, STUDY_METRICS, {"model.downsample", "seed", "optim.lr"}, "x")
    exp = _experiment(summaries)
    differs = {h.name for h in exp.hparam_infos if h.differs}
    assert differs == {"model.downsample", "seed", "optim.lr"}
    assert [m.name.tag for m in exp.metric_infos] == STUDY_METRICS
    types = {h.name: h.type for h in exp.hparam_infos}
    assert types["data.augment"] == api_pb2.DATA_TYPE_BOOL
    assert types["data.train_subset"] == api_pb2.DATA_TYPE_FLOAT64
    assert _start(summaries).group_name == "x"


@pytest.mark.parametrize(("level", "tta_listed"), [(0, False), (2, True)])
def test_hparams_list_the_tta_accuracy_when_the_run_tests_with_tta(level, tta_listed):
    metrics = hparam_metrics(validate(compose_config("train", [f"eval.tta_level={level}"])))
    assert ("test/acc_tta" in metrics) == tta_listed
    assert metrics[0] == "test/acc" and (metrics[1] == "test/acc_tta") == tta_listed


def test_swept_keys_are_read_from_the_sweeps_multirun_yaml(tmp_path):
    cfg = compose_config("train")
    hydra = OmegaConf.create(
        {"overrides": {"task": ["model.kernel_size=3,5", "optim=sgd,adamw", "trainer.max_epochs=1"]},
         "sweeper": {"params": {"seed": "0,1"}}}
    )  # fmt: skip
    (tmp_path / "multirun.yaml").write_text(OmegaConf.to_yaml({"hydra": hydra}))
    _, kinds = hparam_values(OmegaConf.to_container(cfg, resolve=True), _schema_kinds(TrainConfig))
    with read_write(HydraConfig.get()):  # as in a job of that sweep
        HydraConfig.get().mode = RunMode.MULTIRUN
        HydraConfig.get().sweep.dir = str(tmp_path)
    # a swept group counts as its name key; constants (trainer.max_epochs) do not differ
    assert swept_keys(swept_overrides(), kinds) == {"model.kernel_size", "optim.name", "seed"}
    with read_write(HydraConfig.get()):
        HydraConfig.get().mode = RunMode.RUN
    assert swept_overrides() == [] and swept_keys(swept_overrides(), kinds) == set()


def test_trial_name_starts_with_what_tells_runs_apart():
    values = {"model.downsample": "conv", "seed": 1, "model.kernel_size": 5}
    name = trial_name(values, {"model.downsample", "seed", "model.kernel_size"}, Path("outputs/x/3_a"))
    assert name == "conv kernel_size=5 seed=1 · outputs/x/3_a"


def test_run_name_is_short_and_has_the_seed():
    cfg = compose_config("train", ["model.downsample=conv", "seed=4", "model.widths=[8,16]"])
    assert run_name(cfg) == "conv_k3_w8-16_seed4"
    assert run_name(compose_config("train", ["model=all_cnn_c", "seed=2"])).endswith("_seed2")


# ----------------------------------------------------------------------------------------------------------
# Sweep job folders and the sweep summary


def _sweep_root(tmp_path: Path, sweep: list[str], job: list[str], num: int = 3, params: dict | None = None):
    """The config a job's ``${job_dirname:}`` sees, with the sweep's multirun.yaml as Hydra writes it."""
    hydra = {"overrides": {"task": sweep}, "sweeper": {"params": params}}
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    return OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(tmp_path)}, "job": {"num": num}, "overrides": {"task": job}}}
    )


def test_job_folder_names_carry_the_varying_values_and_paste_into_overrides(tmp_path):
    sweep = [
        "model.downsample=maxpool,conv",
        "seed=0,1",
        "model.widths=[8,16],[16,32]",
        "data.source=synthetic",
    ]
    job = ["model.downsample=conv", "seed=1", "model.widths=[16,32]", "data.source=synthetic"]
    name = job_dirname(_root_=_sweep_root(tmp_path, sweep, job))
    assert name == "3_downsample-conv_seed-1_widths-16-32"  # constants (data.source) are not repeated
    fixed_seed = _sweep_root(tmp_path, ["model.downsample=maxpool,conv"], ["model.downsample=conv"], 1)
    fixed_seed.seed = 7
    assert job_dirname(_root_=fixed_seed) == "1_downsample-conv_seed-7"  # the seed, even where it is fixed
    # the path goes into any override as it is, through Hydra's own parser
    path = f"outputs/train-multirun/2026-11-26_03-32-17.123456/{name}"
    parsed = OverridesParser.create().parse_overrides(
        [f"hydra.run.dir={path}", f"ckpt_path={path}/checkpoints/last.ckpt"]
    )
    assert [o.value() for o in parsed] == [path, f"{path}/checkpoints/last.ckpt"]


@pytest.mark.parametrize(
    "overrides",
    ["optim.lr=1e30,seed=0", "optim.lr=-1", "data.augment=true", "model.widths=[8,16]", "a=x:y~z"],
)
def test_any_job_folder_name_parses_as_a_plain_path(overrides):
    path = f"outputs/train-multirun/2026-11-26_03-32-17.123456/0_{short_dirname(overrides)}"
    (parsed,) = OverridesParser.create().parse_overrides([f"hydra.run.dir={path}"])
    assert parsed.value() == path


def test_job_folder_names_from_experiment_sweeps_stay_short(tmp_path):
    params = {"model.downsample": "maxpool,conv", "seed": "0,1,2"}
    root = _sweep_root(
        tmp_path, ["experiment=ablation_quick"], ["model.downsample=conv", "seed=2"], 4, params
    )
    assert job_dirname(_root_=root) == "4_downsample-conv_seed-2"
    long = short_dirname("x=" + "a" * 300)
    assert len(long) == 96 and "=" not in long and "~" not in long


def test_planned_jobs_counts_the_sweep():
    hydra = OmegaConf.create(
        {"overrides": {"task": ["model.downsample=maxpool,conv,conv3", "seed=range(5)", "x=1"]},
         "sweeper": {"params": {"optim.lr": "0.1,0.2"}}}
    )  # fmt: skip
    assert planned_jobs(hydra) == 3 * 5 * 2


def test_sweep_summary_says_how_many_jobs_never_ran(tmp_path):
    for n in range(3):
        job = tmp_path / f"{n}_seed-{n}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- seed={n}\n")
        status = {"status": "completed"} if n < 2 else {"status": "failed", "error": "boom"}
        (job / "status.json").write_text(json.dumps(status))
    text, ok = sweep_summary(tmp_path, planned=5)
    assert not ok
    assert text.splitlines()[0] == f"Sweep {tmp_path}: 2 of 5 jobs completed; 1 failed and 2 never ran:"
    assert "job 2 (seed=2): boom" in text
    (tmp_path / "2_seed-2" / "status.json").write_text(json.dumps({"status": "completed"}))
    assert sweep_summary(tmp_path, planned=5) == (
        f"Sweep {tmp_path}: 3 of 5 jobs completed; 2 never ran.",
        False,
    )
    assert sweep_summary(tmp_path, planned=3) == (f"Sweep {tmp_path}: all 3 jobs completed.", True)


# ----------------------------------------------------------------------------------------------------------
# A real TensorBoard server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=30) as response:
        return json.load(response)


@pytest.mark.slow
def test_a_real_tensorboard_shows_the_study(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "train", "-m", "model.downsample=maxpool,conv", "seed=0,1", *TINY, "trainer.limit_train_batches=2",
        f"data.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}", timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [
        "0_downsample-maxpool_seed-0", "1_downsample-maxpool_seed-1", "2_downsample-conv_seed-0",
        "3_downsample-conv_seed-1",
    ]  # fmt: skip

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "tensorboard.log").open("w")  # a file, not a pipe nobody reads while it runs
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={sweep}", "--host=127.0.0.1", f"--port={port}",
         "--reload_interval=0"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        groups: list = []
        deadline = time.monotonic() + 90
        while len(groups) < 4:  # the server answers before it has read every event file
            assert server.poll() is None, (tmp_path / "tensorboard.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"TensorBoard showed {len(groups)} of 4 runs within 90 s"
            with contextlib.suppress(OSError):  # not listening yet
                groups = _post(
                    base,
                    "/data/plugin/hparams/session_groups",
                    {"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN"],
                     "colParams": [], "startIndex": 0, "sliceSize": 100},
                ).get("sessionGroups", [])  # fmt: skip
            time.sleep(0.5)
        experiment = _post(base, "/data/plugin/hparams/experiment", {"experimentName": ""})
        tags = _get(base, "/data/plugin/scalars/tags")
    finally:
        server.kill()
        server.wait(timeout=30)
        log.close()

    infos = experiment["hparamInfos"]
    differs = [h["name"] for h in infos if h.get("differs")]
    assert differs[:2] == ["model.downsample", "seed"] and len(differs) == 2  # and they lead the table
    assert [h["name"] for h in infos[:2]] == ["model.downsample", "seed"]
    types = {h["name"]: h["type"] for h in infos}
    assert types["data.augment"] == "DATA_TYPE_BOOL" and types["data.train_subset"] == "DATA_TYPE_FLOAT64"
    assert [m["name"]["tag"] for m in experiment["metricInfos"]][:4] == STUDY_METRICS

    names = sorted(g["name"].split(" · ")[0] for g in groups)
    assert names == ["conv seed=0", "conv seed=1", "maxpool seed=0", "maxpool seed=1"]  # the Trial ID column
    for group in groups:
        metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert {"test/acc", "train/images_per_sec"} <= set(metrics), group["name"]
        assert group["hparams"]["data.augment"] is True
    assert len(tags) == 4
    for run, run_tags in tags.items():
        assert {"test/acc", "train/images_per_sec", "val/acc"} <= set(run_tags), run
        assert "epoch" not in run_tags  # the Time Series dashboard opens on the study's groups, not a counter

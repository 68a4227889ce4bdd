"""The ablation experiments, matched parameter counts, the All-CNN family and the one-command reproduction."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from downsample_lab.config import validate
from downsample_lab.models.allcnn import AllCNNC
from downsample_lab.models.factory import build_model, effective_widths
from downsample_lab.models.names import ALLCNN_VARIANTS, DOWNSAMPLE_NAMES
from downsample_lab.models.summary import count_params, layer_table
from downsample_lab.run import sweep

from .conftest import REPO, TINY, compose_config, model_config


def _sweep(experiment: str) -> dict[str, list[str]]:
    compose_config("train", [f"experiment={experiment}"])
    params = HydraConfig.get().sweeper.params
    return {k: str(v).split(",") for k, v in params.items()}


@pytest.mark.parametrize("experiment", ["ablation", "ablation_quick"])
def test_ablation_sweeps_every_strategy_over_seeds_with_one_recipe(experiment):
    sweep = _sweep(experiment)
    assert sweep["model.downsample"] == list(DOWNSAMPLE_NAMES)
    assert len(sweep["seed"]) == (5 if experiment == "ablation" else 3)
    recipes = set()
    for downsample, seed in itertools.product(sweep["model.downsample"], sweep["seed"]):
        cfg = validate(compose_config("train", [f"experiment={experiment}", f"model.downsample={downsample}",
                                                f"seed={seed}"]))  # fmt: skip
        plain = OmegaConf.to_container(cfg)
        del plain["seed"], plain["model"]["downsample"]
        recipes.add(json.dumps(plain, sort_keys=True))
    assert len(recipes) == 1  # only the strategy and the seed differ between jobs


@pytest.mark.parametrize("experiment", ["allcnn", "allcnn_quick"])
def test_allcnn_experiments_run_the_four_models(experiment):
    sweep = _sweep(experiment)
    assert sweep["model"] == list(ALLCNN_VARIANTS)
    for name in ALLCNN_VARIANTS:
        cfg = validate(compose_config("train", [f"experiment={experiment}", f"model={name}"]))
        assert cfg.model.name == name and cfg.data.augment is False  # Table 3 is without augmentation


def test_paper_recipe_of_the_allcnn_experiment():
    cfg = validate(compose_config("train", ["experiment=allcnn"]))
    assert (cfg.trainer.max_epochs, cfg.optim.schedule, list(cfg.optim.milestones)) == (
        350,
        "step",
        [200, 250, 300],
    )
    assert cfg.model.batch_norm is False and cfg.model.dropout == 0.5 and list(cfg.model.widths) == [96, 192]


@pytest.mark.parametrize("widths", [[32, 64, 128], [64, 128, 256]])
def test_match_params_brings_every_arm_within_two_percent_of_the_conv_arm(widths):
    base = [f"model.widths=[{','.join(map(str, widths))}]", "model.blocks=2", "model.kernel_size=3"]
    target = count_params(build_model(model_config(*base, "model.downsample=conv")))
    for name in DOWNSAMPLE_NAMES:
        cfg = model_config(*base, f"model.downsample={name}", "model.match_params=true")
        n = count_params(build_model(cfg))
        assert abs(n - target) <= 0.02 * target, (name, n, target)
        scaled = effective_widths(cfg)
        if name in ("maxpool", "avgpool", "blurpool", "stride", "aps", "maxavg"):
            assert all(a > b for a, b in zip(scaled, widths, strict=True))  # widened: no downsampling weights
        elif name == "conv3":
            assert all(a < b for a, b in zip(scaled, widths, strict=True))  # narrowed
        elif name == "conv_avg":  # the conv's weights without its BatchNorm: nearly the conv arm's widths
            assert all(abs(a - b) <= 0.03 * b for a, b in zip(scaled, widths, strict=True))
        else:
            assert scaled == widths


def test_match_params_off_builds_the_configured_widths():
    cfg = model_config("model.widths=[8,16]", "model.blocks=1", "model.match_params=false")
    assert effective_widths(cfg) == [8, 16]


def test_allcnn_follows_the_paper_layer_tables():
    counts = {v: count_params(AllCNNC(v, batch_norm=False)) for v in ALLCNN_VARIANTS}
    # All-CNN-C: the 1.37 M parameters usually quoted for it; pooling→stride keeps the count, an extra conv
    # per stage (ConvPool) or a strided conv instead of the pool (All-CNN) adds 96·96·9+96 + 192·192·9+192
    assert counts["all_cnn_c"] == 1_369_738
    assert counts["model_c"] == counts["strided_cnn_c"]
    assert (
        counts["convpool_cnn_c"]
        == counts["all_cnn_c"]
        == counts["model_c"] + 96 * 96 * 9 + 96 + 192 * 192 * 9 + 192
    )
    for variant in ALLCNN_VARIANTS:
        rows = layer_table(AllCNNC(variant, widths=[8, 16]), (1, 3, 32, 32))
        spatial = [r.output_shape[2] for r in rows if len(r.output_shape) == 4]
        assert 6 in spatial and spatial[-1] == 1  # global average over 6x6, as in the paper
        assert rows[-1].output_shape == (1, 10)
        pools = [r for r in rows if r.kind == "MaxPool2d"]
        assert len(pools) == (2 if variant in ("model_c", "convpool_cnn_c") else 0)


def test_allcnn_trains_a_step():
    net = AllCNNC("strided_cnn_c", widths=[8, 16])
    loss = torch.nn.functional.cross_entropy(net(torch.randn(4, 3, 32, 32)), torch.tensor([1, 2, 3, 4]))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.slow
def test_reproduce_script_runs_the_sweep_and_writes_the_report(tmp_path):
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "PYTHON": sys.executable, "SWEEP_DIR": str(sweep_dir)}
    result = subprocess.run(
        ["bash", "scripts/reproduce_ablation.sh", "quick", "seed=0", *TINY,
         "model.widths=[4,8]", "data.train_subset=null", f"data.cache_dir={tmp_path / 'cache'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Report: {sweep_dir}/report.md" in result.stdout
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir()]
    assert len(jobs) == len(DOWNSAMPLE_NAMES)  # every strategy, the one seed given
    report = (sweep_dir / "report.md").read_text()
    for name in DOWNSAMPLE_NAMES:
        assert f"downsample={name}" in report
    # the report's numbers are the runs' own: the maxpool arm's mean test accuracy over the runs it counts (a
    # model this tiny may collapse to one class: the report lists such a run apart, as degenerate)
    metrics = [
        json.loads((job / "status.json").read_text())["metrics"]
        for job in jobs
        if "_downsample-maxpool_" in job.name
    ]
    counted = [m["test/acc"] for m in metrics if m["test/acc"] >= 0.12 and m["test/predicted_classes"] > 1]
    if counted:
        assert f"{100 * sum(counted) / len(counted):.2f}" in report
    assert report.count("| degenerate |") == sum(
        m["test/acc"] < 0.12 or m["test/predicted_classes"] <= 1
        for job in jobs
        for m in [json.loads((job / "status.json").read_text())["metrics"]]
    )


def test_unknown_mode_of_the_reproduce_script():
    result = subprocess.run(
        ["bash", "scripts/reproduce_ablation.sh", "huge"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2 and "unknown mode 'huge'" in result.stderr


def test_the_reproduce_script_explains_itself_and_starts_nothing_without_a_mode():
    script = ["bash", "scripts/reproduce_ablation.sh"]
    usage = subprocess.run([*script, "--help"], cwd=REPO, capture_output=True, text=True)
    assert usage.returncode == 0 and usage.stdout.startswith("Reproduce the downsampling ablation")
    assert (
        "scripts/reproduce_ablation.sh fair_cpu [overrides]" in usage.stdout and "#" not in usage.stdout[:80]
    )
    bare = subprocess.run(
        script, cwd=REPO, capture_output=True, text=True
    )  # it used to start the quick study
    assert bare.returncode == 2 and bare.stderr.startswith("error: give a mode first: quick, full")


def _study(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """The fair_cpu study, narrowed on the command line to two arms, two lrs and one final seed of a tiny net."""
    env = {**os.environ, "PYTHON": sys.executable, "STUDY_DIR": str(tmp_path / "study"), "FINAL_SEEDS": "7"}
    tiny = [*TINY, "model.widths=[4,8,8]", f"data.cache_dir={tmp_path / 'cache'}", "eval.shift_images=20",
            "data.synthetic_train_size=5400"]  # fmt: skip
    # model=fast (no blocks), the study's batch and its validation split (5,000 in tuning, 0 in the final runs);
    # one epoch instead of the study's two
    tiny = [
        o
        for o in tiny
        if not o.startswith(
            (
                "model.blocks",
                "trainer.max_epochs",
                "data.val_size",
                "data.synthetic_train_size=320",
                "data.batch_size",
            )
        )
    ]
    tiny += ["trainer.max_epochs=1", "optim.train_epochs=1", "trainer.precision=32-true"]
    return subprocess.run(
        ["bash", "scripts/reproduce_ablation.sh", "fair_cpu", "model.downsample=maxpool,stride",
         "optim.lr=5.75,23.0", *tiny, *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def _event_files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("events.out.tfevents.*")}


@pytest.mark.slow
def test_the_fair_study_tunes_selects_trains_fresh_seeds_and_reports_then_resumes(tmp_path):
    result = _study(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = tmp_path / "study"
    for name in (
        "selection.md",
        "report.md",
        "results.csv",
        "runs.csv",
        "shift_robustness.png",
        "study.json",
    ):
        assert (study / name).is_file(), name
    tune = [p for p in (study / "tune").iterdir() if p.is_dir()]
    assert len(tune) == 4  # 2 arms x 2 lrs, seed 100
    # the command line's lists replace the experiment's (Hydra's rule): 4 jobs planned, each key named once
    assert f"Sweep {study / 'tune'}: all 4 jobs completed." in result.stdout
    for job in tune:
        keys = [part.split("-", 1)[0] for part in job.name.split("_")[1:]]
        assert len(keys) == len(set(keys)) == 3, job.name  # downsample, lr, seed
    finals = sorted(p.relative_to(study / "final") for p in (study / "final").glob("*/*") if p.is_dir())
    assert [str(p.parent) for p in finals] == ["maxpool", "stride"]  # one sweep per arm
    # the final runs are the chosen setting on the fresh seeds, all 50,000-style full training (val_size 0)
    chosen = (study / "final_commands.txt").read_text().splitlines()
    assert len(chosen) == 2 and all("seed=7" in c and "experiment=fair_cpu " in c for c in chosen)
    for job in (p for p in (study / "final").glob("*/*") if p.is_dir()):
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        assert cfg.data.val_size == 0 and cfg.seed == 7 and cfg.eval.tta_level == 2
    selection_md = (study / "selection.md").read_text()
    assert "--weights final" in selection_md and "p Holm" in selection_md
    record = json.loads((study / "study.json").read_text())
    assert set(record["steps"]) == {"tune", "select", "final", "report_selection", "report"}
    assert (
        record["commit"] and record["versions"]["torch"] == torch.__version__ and record["wall_seconds"] >= 0
    )

    # Run again, one arm's final sweep lost as if killed before it started: only that arm trains again.
    before = _event_files(study)
    import shutil

    shutil.rmtree(study / "final" / "stride")
    again = _study(tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    after = _event_files(study)
    kept = {k: v for k, v in before.items() if not k.startswith("final/stride/")}
    assert all(after[k] == v for k, v in kept.items())  # nothing else was trained again
    assert any(k.startswith("final/stride/") for k in after)
    assert len(json.loads((study / "study.json").read_text())["steps"]["tune"]) == 2  # two attempts recorded


def test_a_sweep_narrowed_on_the_command_line_plans_hydras_jobs():
    # experiment=ablation_fast_tune sweeps 9 arms x 3 lrs x 3 weight decays x 2 seeds = 162 jobs; the command line
    # replaces three of those lists and fixes the weight decay, as Hydra's basic sweeper does: 2 x 2 x 2 = 8
    params = OmegaConf.load(REPO / "configs" / "experiment" / "ablation_fast_tune.yaml").hydra.sweeper.params
    task = ["experiment=ablation_fast_tune", "model.downsample=maxpool,conv", "optim.lr=5.75,11.5",
            "optim.weight_decay=0.0153", "seed=100,101"]  # fmt: skip
    hydra_cfg = OmegaConf.create({"overrides": {"task": task}, "sweeper": {"params": dict(params)}})
    assert sweep.planned_jobs(hydra_cfg) == 8
    assert [o.key_or_group for o in sweep.sweep_overrides(hydra_cfg)] == [
        "model.downsample",
        "optim.lr",
        "seed",
    ]
    hydra_cfg.overrides.task = ["experiment=ablation_fast_tune"]
    assert sweep.planned_jobs(hydra_cfg) == 9 * 3 * 3 * 2

"""The ablation experiments, matched parameter counts, the All-CNN family and the one-command reproduction."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from downsample_lab.config import validate
from downsample_lab.models import ALLCNN_VARIANTS, DOWNSAMPLE_NAMES, AllCNNC, build_model, effective_widths
from downsample_lab.models.summary import count_params, layer_table

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
        if name in ("maxpool", "avgpool", "blurpool"):
            assert all(a > b for a, b in zip(scaled, widths, strict=True))  # widened
        elif name == "conv3":
            assert all(a < b for a, b in zip(scaled, widths, strict=True))  # narrowed
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


def test_reproduce_script_runs_the_sweep_and_writes_the_report(tmp_path):
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "PYTHON": sys.executable, "SWEEP_DIR": str(sweep_dir)}
    result = subprocess.run(
        ["bash", "scripts/reproduce_ablation.sh", "quick", "seed=0,1", *TINY,
         "model.widths=[4,8]", "data.train_subset=null", f"data.cache_dir={tmp_path / 'cache'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Report: {sweep_dir}/report.md" in result.stdout
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir()]
    assert len(jobs) == 10  # five strategies x two seeds
    report = (sweep_dir / "report.md").read_text()
    for name in DOWNSAMPLE_NAMES:
        assert f"downsample={name}" in report
    # the report's numbers are the runs' own: the maxpool arm's mean test accuracy
    accs = [
        json.loads((job / "status.json").read_text())["metrics"]["test/acc"]
        for job in jobs
        if "_downsample-maxpool_" in job.name
    ]
    assert f"{100 * sum(accs) / 2:.2f}" in report


def test_unknown_mode_of_the_reproduce_script():
    result = subprocess.run(
        ["bash", "scripts/reproduce_ablation.sh", "huge"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2 and "unknown mode 'huge'" in result.stderr

"""The benchmark: its entry point writes every number it promises, and both paths it times really train.

Speed itself is never asserted here: it is measured by ``python -m downsample_lab.bench`` and recorded in
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
import math
import os
import statistics

import lightning as L
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from downsample_lab import compat
from downsample_lab.bench.lightning import Plan, run_lightning
from downsample_lab.bench.main import BENCH_PRECISIONS, validate_bench
from downsample_lab.bench.rawloop import RawLoop, precision_plugin
from downsample_lab.bench.strategy import build_classifier
from downsample_lab.data import CIFAR10DataModule
from downsample_lab.data.sources import Split
from downsample_lab.errors import ConfigError
from downsample_lab.optim.config import Schedule
from downsample_lab.optim.lookahead import LookaheadEMA

from .conftest import compose_config, run_cli

# Two strategies, a 1-k-parameter net, windows of two steps: seconds, not minutes.
TINY_BENCH = [
    "bench.strategies=[maxpool,conv]",
    "bench.warmup_steps=1",
    "bench.window_steps=2",
    "bench.windows=3",
    "model.widths=[4,8]",
    "model.blocks=1",
    "data.synthetic_train_size=320",
    "data.synthetic_test_size=100",
    "data.val_size=64",
    "data.batch_size=64",
    "trainer.enable_progress_bar=false",
]


def test_bench_writes_every_strategy_with_ratio_versions_and_hardware(tmp_path):
    result = run_cli(
        "bench", *TINY_BENCH, f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert list(record["results"]) == ["maxpool", "conv"]
    for name, r in record["results"].items():
        raw, lit = r["raw"], r["lightning"]
        for path in (raw, lit):
            assert len(path["window_images_per_sec"]) == 3
            assert path["images_per_sec"] > 0 and path["flops_per_sec"] > 0 and path["peak_memory_bytes"] > 0
            assert path["flops_per_sec"] == pytest.approx(3 * r["flops_per_image"] * path["images_per_sec"])
        assert r["ratio"] == pytest.approx(lit["images_per_sec"] / raw["images_per_sec"])
        pairs = zip(lit["window_images_per_sec"], raw["window_images_per_sec"], strict=True)
        assert r["window_ratios"] == pytest.approx([lw / rw for lw, rw in pairs])
        assert r["paired_ratio"] == pytest.approx(statistics.median(r["window_ratios"]))
        best = max(lit["window_images_per_sec"]) / max(raw["window_images_per_sec"])
        assert r["best_ratio"] == pytest.approx(best)
        assert r["params"] > 0 and r["flops_per_image"] > 0
        # measured from /proc/stat over the strategy's bench: a number, at most every core of the machine
        assert 0 <= r["other_cpu_cores"] <= os.cpu_count(), r["other_cpu_cores"]
        assert name in result.stdout  # the printed table has a row per strategy
    assert set(record["versions"]) >= {"python", "torch", "lightning"}
    assert record["versions"]["torch"] == torch.__version__
    hw = record["hardware"]
    assert hw["device"] == "cpu" and hw["cpu_count"] >= 1 and hw["cpu_model"] and hw["gpu"] is None
    assert hw["cpu_avx512_bf16"] == compat.cpu_bf16_features()["avx512_bf16"]
    assert record["precision"] in ("32-true", "bf16-mixed")  # trainer.precision=auto, resolved
    assert record["config"]["bench"]["windows"] == 3 and record["date"] and record["memory_kind"]
    assert record["command"].startswith("python -m downsample_lab.bench bench.strategies=[maxpool,conv]")
    # the Lightning path logs to TensorBoard as a training run does
    assert (tmp_path / "run" / "tb" / "bench,downsample=conv").is_dir()


def tiny_bench(tmp_path, overrides: list[str]) -> tuple[DictConfig, Split]:
    """The validated bench config of ``overrides`` (its run in ``tmp_path / "run"``) and the training split
    that ``bench`` gives both paths."""
    cfg = validate_bench(compose_config("bench", overrides, run_dir=tmp_path / "run"))
    dm = CIFAR10DataModule(
        OmegaConf.to_object(cfg.data), channels_last=cfg.model.channels_last, seed=cfg.seed
    )
    dm.setup("fit")
    return cfg, dm.train_set


# Beyond the defaults: every augmentation key and the loss keys (airbench's), which each path must apply alike.
NON_DEFAULT_DATA_AND_LOSS = [
    "data.translate=2",
    "data.translate_mode=reflect",
    "data.flip=alternating",
    "optim.label_smoothing=0.2",
    "optim.loss_reduction=sum",
    "optim.lr=0.0008",  # 0.05 / the batch of 64: the summed loss's gradients are 64x the mean's
]


@pytest.mark.parametrize("extra", [[], NON_DEFAULT_DATA_AND_LOSS], ids=["defaults", "augment-and-loss-keys"])
def test_raw_loop_and_lightning_path_train_the_same_steps(tmp_path, extra):
    """Same initial weights, batches, augmentation, loss and optimiser: interleaved, the two paths' losses still
    agree window by window, and fall."""
    overrides = [
        *TINY_BENCH,
        f"data.cache_dir={tmp_path / 'cache'}",
        "trainer.precision=32-true",
        "optim.schedule=constant",
        "optim.lr=0.05",
        *extra,
    ]
    cfg, train = tiny_bench(tmp_path, overrides)
    plan = Plan(warmup_steps=1, window_steps=3, windows=4)
    raw_clf = build_classifier(cfg, "conv")
    raw_before = [p.detach().clone() for p in raw_clf.net.parameters()]
    raw = RawLoop(raw_clf, train, cfg, torch.device("cpu"), "32-true", plan.total_steps)
    raw.run(plan.warmup_steps)
    lit_clf = build_classifier(cfg, "conv")
    lit_before = [p.detach().clone() for p in lit_clf.net.parameters()]
    lit, raw_result = run_lightning(lit_clf, cfg, tmp_path / "run", "test", plan, raw)

    assert raw.steps_done == plan.total_steps
    for clf, before in ((raw_clf, raw_before), (lit_clf, lit_before)):
        after = [p.detach().cpu() for p in clf.net.parameters()]
        assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    for res in (raw_result, lit):
        assert len(res.window_images_per_sec) == plan.windows and min(res.window_images_per_sec) > 0
        assert len(res.losses) == plan.windows and all(math.isfinite(x) for x in res.losses)
        assert res.losses[-1] < res.losses[0], res.losses
    assert raw_result.losses == pytest.approx(lit.losses, rel=1e-4)


def autocast_state() -> tuple[bool, torch.dtype, bool]:
    """What autocast does to a CPU forward run now: on or off, its dtype, whether it caches casts of weights."""
    return (
        torch.is_autocast_enabled("cpu"),
        torch.get_autocast_dtype("cpu"),
        torch.is_autocast_cache_enabled(),
    )


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_raw_loop_runs_its_forward_in_the_lightning_paths_autocast(tmp_path, precision):
    """Each path's network forward, recorded by a hook: the same autocast state (dtype and weight-cast cache
    included) in the raw loop as in Lightning's training step, and bf16 logits exactly under bf16-mixed."""
    overrides = [*TINY_BENCH, f"data.cache_dir={tmp_path / 'cache'}", f"trainer.precision={precision}"]
    cfg, train = tiny_bench(tmp_path, overrides)
    seen: dict[str, set] = {"raw": set(), "lightning": set()}

    def record(path: str, clf):
        clf.net.register_forward_hook(
            lambda module, args, out: seen[path].add((*autocast_state(), out.dtype))
        )
        return clf

    plan = Plan(warmup_steps=1, window_steps=1, windows=1)
    raw = RawLoop(record("raw", build_classifier(cfg, "maxpool")), train, cfg, torch.device("cpu"),
                  precision, plan.total_steps)  # fmt: skip
    run_lightning(
        record("lightning", build_classifier(cfg, "maxpool")), cfg, tmp_path / "run", "t", plan, raw
    )

    logits = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    assert len(seen["raw"]) == 1 and next(iter(seen["raw"]))[-1] == logits, seen
    assert seen["raw"] == seen["lightning"]


@pytest.mark.parametrize("precision", BENCH_PRECISIONS)
def test_raw_loop_takes_the_precision_plugin_a_trainer_builds(precision):
    """The plugin class, precision, autocast device and GradScaler that ``lightning.Trainer`` itself picks
    (16-mixed on a CPU runs as bf16-mixed in Lightning, so in the raw loop too)."""
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=precision, logger=False, barebones=True)
    theirs, ours = trainer.precision_plugin, precision_plugin(precision, torch.device("cpu"))
    assert type(ours) is type(theirs)
    assert ours.precision == theirs.precision
    assert getattr(ours, "device", None) == getattr(theirs, "device", None)
    assert (getattr(ours, "scaler", None) is None) == (getattr(theirs, "scaler", None) is None)


@pytest.mark.parametrize("schedule", list(Schedule.__members__))
def test_raw_loop_takes_each_schedule_from_the_classifier(tmp_path, schedule):
    """The raw loop builds the optimiser and every schedule itself (``optim.build_optimizer``), no trainer needed."""
    overrides = [*TINY_BENCH, f"data.cache_dir={tmp_path / 'cache'}", f"optim.schedule={schedule}"]
    cfg, train = tiny_bench(tmp_path, overrides)
    raw = RawLoop(build_classifier(cfg, "maxpool"), train, cfg, torch.device("cpu"), "32-true", 4)
    assert raw.run(4) == 4 * cfg.data.batch_size
    assert math.isfinite(float(raw.last_loss)) and math.isfinite(raw.opt.param_groups[0]["lr"])
    with pytest.raises(ValueError, match="the schedule has 4 steps"):
        raw.run(1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["bench.strategies=[maxpool,strided]"], r"bench.strategies\[1\]='strided' is not valid; choose one of maxpool, conv"),
        (["bench.strategies=[]"], r"bench.strategies=\[\] is not valid; list one or more of maxpool, conv"),
        (["bench.windows=0"], r"bench.windows=0 is not valid; use an integer >= 1"),
        (["bench.warmup_steps=0"], r"bench.warmup_steps=0 is not valid; use an integer >= 1"),
        (["bench.threads=0"], r"bench.threads=0 is not valid; use null \(torch's default\) or an integer >= 1"),
        (["trainer.devices=2"], r"trainer.devices=2 trainer.num_nodes=1 is not valid for the bench"),
        (["trainer.fast_dev_run=true"], r"trainer.fast_dev_run=True is not valid for the bench"),
        (["trainer.precision=bf16-true"], r"trainer.precision=bf16-true \(runs as bf16-true\) is not supported"),
        (["model.widths=[]"], r"model.widths=\[\] is not valid"),
        (["+bench.repeats=3"], r"bench.repeats is not a config key; the bench group has: strategies"),
        (["model.padding_mode=circular"], r"model.padding_mode=circular does not apply to bench.strategies blurpool"),
    ],
)  # fmt: skip
def test_bad_bench_config_is_named_in_one_sentence(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate_bench(compose_config("bench", overrides))
    assert "\n" not in str(info.value)


def test_bad_override_from_the_command_line_exits_2(tmp_path):
    result = run_cli("bench", "bench.strategies=[strided]", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "error: bench.strategies[0]='strided' is not valid; choose one of maxpool" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_mistyped_bench_key_gets_one_line_with_the_key_it_meant(tmp_path):
    result = run_cli("bench", "bench.window=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: bench.window is not a config key; did you mean bench.windows? (the bench group has: strategies, "
        "warmup_steps, window_steps, windows, threads, out)"
    )


def test_raw_loop_builds_the_airbench_recipe_without_a_trainer(tmp_path):
    """optim=airbench (decoupled groups need the batch size; optim.train_epochs) in the raw loop and in the
    Lightning path's configure_optimizers: the same groups, learning rates and decays."""
    overrides = [*TINY_BENCH, f"data.cache_dir={tmp_path / 'cache'}", "optim=airbench"]
    cfg, train = tiny_bench(tmp_path, overrides)
    raw = RawLoop(build_classifier(cfg, "maxpool"), train, cfg, torch.device("cpu"), "32-true", 4)
    assert raw.run(4) == 4 * cfg.data.batch_size
    scale = 1024 * (1 + 1 / (1 - cfg.optim.momentum))
    groups = raw.opt.param_groups
    assert groups[1]["initial_lr"] == pytest.approx(cfg.optim.lr / scale)
    assert groups[0]["initial_lr"] == pytest.approx(cfg.optim.lr / scale * cfg.optim.bias_lr_scale)
    decay = cfg.optim.weight_decay * cfg.data.batch_size / scale
    assert [g["weight_decay"] * g["initial_lr"] for g in groups] == pytest.approx([decay, decay])


def test_the_bench_runs_airbenchs_lookahead_on_both_paths(tmp_path, monkeypatch):
    """optim=airbench's lookahead is part of the recipe: the raw loop and the Lightning path each run it every
    step, as ``train`` does (the module adds it through configure_callbacks), and still train the same steps."""
    overrides = [*TINY_BENCH, f"data.cache_dir={tmp_path / 'cache'}", "optim=airbench", "optim.train_epochs=null",
                 "trainer.precision=32-true"]  # fmt: skip
    cfg, train = tiny_bench(tmp_path, overrides)
    steps: dict[int, list[int]] = {}
    step = LookaheadEMA.step

    def counted(self: LookaheadEMA, n: int) -> None:
        steps.setdefault(id(self), []).append(n)
        step(self, n)

    monkeypatch.setattr(LookaheadEMA, "step", counted)
    plan = Plan(warmup_steps=1, window_steps=3, windows=4)
    raw_clf = build_classifier(cfg, "maxpool")
    raw = RawLoop(raw_clf, train, cfg, torch.device("cpu"), "32-true", plan.total_steps)
    raw.run(plan.warmup_steps)
    lit_clf = build_classifier(cfg, "maxpool")
    lit, raw_result = run_lightning(lit_clf, cfg, tmp_path / "run", "test", plan, raw)
    assert raw.lookahead is not None and id(raw.lookahead) in steps
    assert len(steps) == 2  # one EMA per path
    assert all(calls == list(range(1, plan.total_steps + 1)) for calls in steps.values()), steps
    # the lookahead's last step sets the weights to the EMA on both paths alike
    for a, b in zip(raw_clf.net.state_dict().values(), lit_clf.net.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-5)
    assert raw_result.losses == pytest.approx(lit.losses, rel=1e-4)

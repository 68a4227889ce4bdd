"""The strong regime: model=fast (airbench-class), its recipe (decoupled SGD, triangular schedule, lookahead EMA,
alternating flip, reflect translation, TTA) and the fast experiments. Each ingredient has a test that fails
without it."""

from __future__ import annotations

import itertools
import json
import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from downsample_lab.config import ShapesConfig, validate
from downsample_lab.data import CIFAR10DataModule, load_split
from downsample_lab.data.augment import normalize, random_crop_flip
from downsample_lab.engine.classifier import Classifier
from downsample_lab.engine.testtime import tta_logits
from downsample_lab.errors import ConfigError
from downsample_lab.models.fast import FastNet
from downsample_lab.models.names import DOWNSAMPLE_NAMES
from downsample_lab.models.summary import format_shapes
from downsample_lab.optim.lookahead import Lookahead
from downsample_lab.train import train, uses_best_checkpoint

from .conftest import compose_config, data_config

# experiment=fast_cpu shrunk to seconds: synthetic data, widths 4-8-8, 1.5 epochs of 4 steps.
FAST_TINY = [
    "experiment=fast_cpu",
    "data.source=synthetic",
    "data.synthetic_train_size=320",
    "data.synthetic_test_size=100",
    "data.batch_size=64",
    "data.eval_batch_size=128",
    "model.widths=[4,8,8]",
    "optim.train_epochs=1.5",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=2",
]


@pytest.mark.parametrize("name", DOWNSAMPLE_NAMES)
def test_every_strategy_builds_and_trains_in_model_fast(name, tmp_path):
    cfg = compose_config(
        "train",
        [*FAST_TINY, f"model.downsample={name}", f"data.cache_dir={tmp_path / 'cache'}"],
        tmp_path / "run",
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and 0.0 <= metrics["test/acc_tta"] <= 1.0
    assert math.isfinite(metrics["train/loss"])
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == math.ceil(1.5 * (320 // 64))  # 9.9-style fractional epochs: 1.5 × 5 steps
    assert "Lookahead" in ckpt["callbacks"]  # the recipe's EMA ran and is resumable
    stem = ckpt["state_dict"]["net.whiten.weight"]
    assert torch.equal(stem[12:], -stem[:12])  # set by the whitening init: eigenvectors and their negatives


def test_shapes_lists_the_fast_network_with_parameter_formulas():
    text = format_shapes(
        validate(compose_config("shapes", ["model=fast", "model.downsample=conv"]), ShapesConfig)
    )
    for formula in ("2·2·3·24 + 24", "3·3·24·64", "2·2·64·64", "3·3·256·256", "256·10"):
        assert formula in text, formula
    net = FastNet([64, 256, 256], "conv")
    assert f"total parameters: {sum(p.numel() for p in net.parameters() if p.requires_grad):,}" in text


def test_whitening_stem_output_has_identity_covariance_on_training_patches(tmp_path):
    images = normalize(load_split("synthetic", ".", "train", tmp_path, synthetic_size=2000).images)
    net = FastNet([8, 16, 16], "maxpool")
    net.init_whitening(images)
    with torch.no_grad():
        out = F.conv2d(images, net.whiten.weight)  # the stem without its bias, on every 2x2 patch
    flat = out.permute(1, 0, 2, 3).reshape(24, -1)
    cov = flat @ flat.T / flat.shape[1]
    half = cov[:12, :12]
    assert torch.allclose(half, torch.eye(12), atol=0.02), half.diagonal()
    assert torch.allclose(cov[12:, 12:], half, atol=1e-4)  # the negated filters: the same covariance
    assert torch.allclose(cov[:12, 12:], -half, atol=1e-4)
    with torch.no_grad():  # without the init (PyTorch's default filters) the output is far from white
        raw = (
            F.conv2d(images, FastNet([8, 16, 16], "maxpool").whiten.weight)
            .permute(1, 0, 2, 3)
            .reshape(24, -1)
        )
    assert not torch.allclose(raw[:12] @ raw[:12].T / raw.shape[1], torch.eye(12), atol=0.2)


class _Walk(L.LightningModule):
    """One parameter that SGD moves by +1 per step: the lookahead's effect is exact arithmetic."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.net = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.net.weight)
        self.steps = steps

    def total_steps(self) -> int:
        return self.steps

    def training_step(self, batch, batch_idx):
        return -self.net.weight.sum()  # gradient -1: lr 1 adds 1 per step

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(self.steps, 1), batch_size=1)


def test_lookahead_moves_the_weights_to_their_ema(tmp_path):
    steps, every, decay, power = 12, 5, 0.9, 1.0
    module = _Walk(steps)
    trainer = L.Trainer(max_epochs=1, callbacks=[Lookahead(every, decay, power)], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module)
    w = ema = 0.0
    for step in range(1, steps + 1):
        w += 1.0
        if step % every == 0:
            a = decay**every * (step / steps) ** power
            ema = ema + (1 - a) * (w - ema)
            w = ema
    w = ema  # the final copy: steps 11 and 12 are dropped, as in airbench
    assert module.net.weight.item() == pytest.approx(w, abs=1e-5)
    assert abs(w - steps) > 1  # without the lookahead the weight would be 12


def _train_views(dm: CIFAR10DataModule, epoch: int) -> torch.Tensor:
    dm.trainer = SimpleNamespace(training=True, current_epoch=epoch)
    images, _ = dm.on_after_batch_transfer((dm.train_set.images, dm.train_set.labels), 0)
    return images


def test_alternating_flip_flips_a_fixed_half_then_everything_every_other_epoch(tmp_path):
    data = data_config(tmp_path, "val_size=0", "synthetic_train_size=400", "flip=alternating", "translate=0")
    dm = CIFAR10DataModule(data, channels_last=False, seed=3)
    dm.setup("fit")
    raw = normalize(load_split("synthetic", ".", "train", tmp_path, synthetic_size=400).images)
    epoch0, epoch1, epoch2 = (_train_views(dm, e) for e in range(3))
    flipped = (epoch0 != raw).flatten(1).any(1)
    assert torch.equal(epoch0[flipped], raw[flipped].flip(-1))
    assert 0.35 < flipped.float().mean() < 0.65  # a random half, fixed for the run
    assert torch.equal(epoch1, epoch0.flip(-1))  # every image shows its other side in odd epochs
    assert torch.equal(epoch2, epoch0)


def test_reflect_translation_is_a_crop_of_the_reflect_padded_image():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(images, padding=2, flip=False, mode="reflect")
    padded = F.pad(images, (2, 2, 2, 2), mode="reflect")
    crops = [padded[:, :, y : y + 8, x : x + 8] for y, x in itertools.product(range(5), range(5))]
    matches = torch.stack([(out == c).flatten(1).all(1) for c in crops])
    assert matches.any(0).all()  # every output is one of the 25 windows
    assert matches.any(1).sum() > 10  # and the windows vary


def test_tta_averages_mirrored_and_translated_views():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    x = torch.randn(5, 3, 8, 8)
    net(x)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up, down = padded[:, :, :8, :8], padded[:, :, 2:, 2:]
    views = [x, x.flip(-1)], [up, up.flip(-1), down, down.flip(-1)]
    expected = sum(0.25 * net(v) for v in views[0]) + sum(0.125 * net(v) for v in views[1])
    with torch.no_grad():
        assert torch.allclose(tta_logits(net, x, 2), expected, atol=1e-5)
        assert torch.allclose(tta_logits(net, x, 1), 0.5 * (net(x) + net(x.flip(-1))), atol=1e-6)
        assert not torch.allclose(tta_logits(net, x, 2), net(x), atol=1e-3)  # TTA changes the logits
        for level in (0, 1, 2):  # the caller's own forward, handed in, gives the same logits
            assert torch.allclose(
                tta_logits(net, x, level, logits=net(x)), tta_logits(net, x, level), atol=1e-6
            )


def test_decoupled_sgd_groups_and_triangular_schedule():
    cfg = validate(compose_config("train", ["experiment=fast_cpu", "model.widths=[4,8,8]"]))
    module = Classifier(cfg.model, cfg.optim, max_shift=0, tta_level=0, batch_size=1024)
    module.trainer = SimpleNamespace(estimated_stepping_batches=500, num_training_batches=50, max_epochs=10)
    out = module.configure_optimizers()
    biases, others = out["optimizer"].param_groups
    scale = 1024 * (1 + 1 / (1 - 0.85))
    assert others["lr"] == pytest.approx(11.5 / scale * 0.2)  # the schedule starts at 0.2 x the peak
    assert biases["lr"] == pytest.approx(64 * others["lr"])
    for group in (biases, others):  # the same decay per step for every parameter: 0.0153 per 1024 examples
        assert group["lr"] * group["weight_decay"] == pytest.approx(0.0153 * 1024 / scale * 0.2)
    assert all(p.requires_grad for g in (biases, others) for p in g["params"])
    frozen = [p for p in module.net.parameters() if not p.requires_grad]
    assert module.net.whiten.weight in [*frozen] and len(frozen) == 1 + 6  # whitening, 6 BatchNorm weights
    sched = out["lr_scheduler"]["scheduler"]
    factors = [sched.lr_lambdas[0](s) for s in (0, 99, 494, 495)]
    assert module.total_steps() == 495  # ceil(9.9 × 50)
    assert factors == pytest.approx([0.2, 1.0, 1 / 396, 0.0], abs=1e-6)


def test_test_weights_rule():
    cfg = compose_config("train", ["experiment=fast_cpu"])
    assert not uses_best_checkpoint(cfg)  # data.val_size=0: the validation set is the test set
    cfg.data.val_size = 5000
    assert uses_best_checkpoint(cfg)
    cfg.eval.test_weights = "final"
    assert not uses_best_checkpoint(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=fast", "+model.kernel_size=3"], "model.kernel_size=3 does not apply to model.name=fast"),
        (["model=fast", "model.widths=[8,16]"], "model.name=fast has three groups"),
        (["optim.bias_lr_scale=64"], "needs optim.decoupled=true"),
        (["optim=airbench", "trainer.max_epochs=9"], "set trainer.max_epochs=10"),
        (["data.flip=sometimes"], "data.flip='sometimes' is not valid"),
        (["eval.tta_level=3"], "eval.tta_level=3 is not valid"),
    ],
)
def test_fast_config_mistakes_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config("train", overrides))


@pytest.mark.parametrize(
    "experiment", ["fast", "fast_cpu", "ablation_fast", "ablation_fast_cpu", "ablation_fast_tune"]
)
def test_fast_experiments_compose_with_the_recipe(experiment):
    cfg = validate(compose_config("train", [f"experiment={experiment}"]))
    assert cfg.model.name == "fast" and cfg.data.batch_size == 1024 and cfg.optim.train_epochs == 9.9
    assert (cfg.data.flip, cfg.data.translate, cfg.data.translate_mode) == ("alternating", 2, "reflect")
    assert cfg.optim.lookahead and cfg.optim.decoupled and cfg.eval.tta_level == 2
    gpu = "cpu" not in experiment
    assert cfg.trainer.accelerator == ("gpu" if gpu else "cpu")
    assert list(cfg.model.widths) == ([64, 256, 256] if gpu else [32, 128, 128])
    assert cfg.data.val_size == (5000 if experiment.endswith("tune") else 0)


@pytest.mark.parametrize("experiment, seeds", [("ablation_fast", 10), ("ablation_fast_cpu", 3)])
def test_fast_ablations_sweep_every_strategy_over_seeds_with_one_recipe(experiment, seeds):
    compose_config("train", [f"experiment={experiment}"])
    sweep = {k: str(v).split(",") for k, v in HydraConfig.get().sweeper.params.items()}
    assert sweep["model.downsample"] == list(DOWNSAMPLE_NAMES) and len(sweep["seed"]) == seeds
    recipes = set()
    for downsample, seed in [(d, s) for d in sweep["model.downsample"] for s in sweep["seed"][:2]]:
        cfg = validate(compose_config("train", [f"experiment={experiment}", f"model.downsample={downsample}",
                                                f"seed={seed}"]))  # fmt: skip
        plain = OmegaConf.to_container(cfg)
        del plain["seed"], plain["model"]["downsample"]
        recipes.add(json.dumps(plain, sort_keys=True))
    assert len(recipes) == 1


def test_tune_experiment_grids_lr_and_weight_decay_per_arm():
    compose_config("train", ["experiment=ablation_fast_tune"])
    sweep = {k: str(v).split(",") for k, v in HydraConfig.get().sweeper.params.items()}
    assert sweep["model.downsample"] == list(DOWNSAMPLE_NAMES)
    assert [float(x) / 11.5 for x in sweep["optim.lr"]] == [0.5, 1.0, 2.0]
    assert [float(x) / 0.0153 for x in sweep["optim.weight_decay"]] == pytest.approx([0.5, 1.0, 2.0])
    assert not set(sweep["seed"]) & {str(s) for s in range(10)}  # fresh seeds are left for the final runs


def test_whitening_bias_trains_for_the_first_epochs_only():
    cfg = validate(compose_config("train", ["experiment=fast_cpu", "model.widths=[4,8,8]"]))
    module = Classifier(cfg.model, cfg.optim, max_shift=0, tta_level=0, batch_size=1024)
    trains = []
    for epoch in range(5):
        module.trainer = SimpleNamespace(current_epoch=epoch)
        module.on_train_epoch_start()
        trains.append(module.net.whiten.bias.requires_grad)
    assert trains == [True, True, True, False, False]  # model.whiten_bias_epochs=3

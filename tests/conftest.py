"""Shared fixtures: the real Hydra config composed for a tiny CPU run, tiny image folders, real CIFAR-10."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from torchvision.io import write_jpeg, write_png

from downsample_lab.config import config_dir, validate
from downsample_lab.data import CIFAR10_CLASSES
from downsample_lab.data.config import DataConfig
from downsample_lab.models.config import ModelConfig
from downsample_lab.run import resolvers

REPO = Path(__file__).resolve().parents[1]

# With the suite split over one worker per core (pytest-xdist), each worker and the runs it starts compute on one
# thread: torch's default of one thread per core would put two threads on every core.
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") != "1":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
CIFAR_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

# A run small enough for a unit test: synthetic data, a 2-stage net of width 4-8, a handful of steps.
TINY = [
    "data.source=synthetic",
    "data.synthetic_train_size=320",
    "data.synthetic_test_size=100",
    "data.val_size=64",
    "data.batch_size=64",
    "data.eval_batch_size=128",
    "model.widths=[4,8]",
    "model.blocks=1",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=2",
]


def compose_config(
    name: str = "train", overrides: list[str] | None = None, run_dir: Path | None = None
) -> DictConfig:
    """Compose the real config ``name`` with ``overrides``, and make it the current Hydra job (output = run_dir)."""
    resolvers.register()  # as every entry point does before Hydra composes
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(name, overrides=overrides or [], return_hydra_config=True)
    if run_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def data_config(cache_dir: Path, *overrides: str) -> DataConfig:
    """The ``data`` group of the real config (configs/data/cifar10.yaml) on synthetic images cached in
    ``cache_dir``, with ``overrides`` of its keys (``"val_size=0"``): the object the DataModule takes."""
    keys = ["source=synthetic", f"cache_dir={cache_dir}", *overrides]
    cfg = validate(compose_config("train", [f"data.{k}" for k in keys]))
    return OmegaConf.to_object(cfg.data)


def model_config(*overrides: str) -> ModelConfig:
    """The ``model`` group of the real config, with overrides of the config (``"model.widths=[8,16]"``)."""
    return OmegaConf.to_object(validate(compose_config("train", list(overrides))).model)


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    """Overrides for a seconds-long run on synthetic data, with the cache inside the test's tmp dir."""
    return [*TINY, f"data.cache_dir={tmp_path / 'cache'}"]


@pytest.fixture
def tiny_cfg(tmp_path: Path, tiny_overrides: list[str]) -> DictConfig:
    """The real train config, composed for a tiny run whose outputs go to ``tmp_path / 'run'``."""
    return compose_config("train", tiny_overrides, run_dir=tmp_path / "run")


def as_foreground_job() -> None:
    """``preexec_fn`` for a command a test stops with Ctrl-C (SIGINT): SIGINT at its default, as a shell's
    foreground job has it. A test run launched in the background of a non-interactive shell (``pytest &``, some
    CI runners) ignores SIGINT, and its children inherit that: Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(
    module: str, *args: str, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``python -m downsample_lab.<module> args`` as a user would; capture its output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", f"downsample_lab.{module}", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_image_folder(root: Path, per_class: dict[str, int], fmt: str = "png", seed: int = 0) -> dict:
    """Write random 32x32 images as ``root/<split>/<class>/NNNN.<fmt>``; returns the tensors written per split."""
    gen = torch.Generator().manual_seed(seed)
    written = {}
    for split, n in per_class.items():
        images, labels = [], []
        for label, cls in enumerate(CIFAR10_CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                # smooth images, as photos are: JPEG keeps them close to the original
                low = torch.rand(1, 3, 4, 4, generator=gen) * 255
                img = F.interpolate(low, size=(32, 32), mode="bilinear").round().to(torch.uint8)[0]
                if fmt == "png":
                    write_png(img, str(folder / f"{i:04d}.png"))
                else:
                    write_jpeg(img, str(folder / f"{i:04d}.jpg"), quality=95)
                images.append(img)
                labels.append(label)
        written[split] = (torch.stack(images), torch.tensor(labels))
    return written


@pytest.fixture
def tiny_folder(tmp_path: Path) -> tuple[Path, dict]:
    """An image-folder CIFAR-10 stand-in: 10 classes, 4 train and 2 test PNGs each."""
    root = tmp_path / "folder"
    return root, make_image_folder(root, {"train": 4, "test": 2})


@pytest.fixture(scope="session")
def cifar10_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real CIFAR-10 (JPEG image folder), unpacked from ../shared; in CI it must be there."""
    preset = os.environ.get("CIFAR10_JPEG_DIR")
    if preset and (Path(preset) / "train").is_dir():
        return Path(preset)
    if not CIFAR_ARCHIVE.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI must test on real CIFAR-10, but {CIFAR_ARCHIVE} is missing")
        pytest.skip(f"no CIFAR-10 copy at {CIFAR_ARCHIVE} (set CIFAR10_JPEG_DIR to an unpacked copy)")
    target = tmp_path_factory.mktemp("cifar10")
    with tarfile.open(CIFAR_ARCHIVE) as tar:
        tar.extractall(target, filter="data")
    return target / "cifar10-jpeg"


# How many tests are marked slow, and the files collected (before -m or -k deselect any): the docs give the count.
SLOW_TESTS = pytest.StashKey[tuple[int, set[str]]]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow = sum(item.get_closest_marker("slow") is not None for item in items)
    config.stash[SLOW_TESTS] = (slow, {item.path.name for item in items})

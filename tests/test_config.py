"""Bad configs fail at start-up with one sentence naming the key and what is valid."""

from __future__ import annotations

import re
import shutil

import pytest

from downsample_lab.config import EvalConfig, TrainConfig, plain, typed, validate
from downsample_lab.data.config import CIFAR10_CLASSES, check_data_files
from downsample_lab.errors import ConfigError
from downsample_lab.models.config import ModelConfig
from downsample_lab.optim.config import OptimConfig
from downsample_lab.run.argv import prepare_argv

from .conftest import compose_config, run_cli

BAD_OVERRIDES = [
    (["model.downsample=strided"], r"model.downsample='strided' is not valid; choose one of maxpool, conv, conv3, avgpool, blurpool, stride, conv_avg, aps, maxavg; did you mean stride\?"),
    (["model.padding_mode=same"], r"model.padding_mode='same' is not valid; choose one of zeros, circular, reflect"),
    (["model.downsample=blurpool", "model.padding_mode=circular"], r"model.padding_mode='circular' is not valid; model.downsample=blurpool pads with zeros only"),
    (["model=all_cnn_c", "+model.padding_mode=circular"], r"model.padding_mode='circular' does not apply to model.name=all_cnn_c; remove it \(it is for model.name=cnn and model.name=fast\)"),
    (["eval.shift_images=-1"], r"eval.shift_images=-1 is not valid; use 0 \(no shift-robustness curves\)"),
    (["model.kernel_size=4"], r"model.kernel_size=4 is not valid; use an odd positive size"),
    (["model.kernel_size=-3"], r"model.kernel_size=-3 is not valid"),
    (["model.kernel_size=three"], r"model.kernel_size='three' has the wrong type"),
    (["model.widths=[]"], r"model.widths=\[\] is not valid; give one positive width per stage"),
    (["model.widths=[32,0]"], r"model.widths=\[32, 0\] is not valid"),
    (["model.blocks=0"], r"model.blocks=0 is not valid"),
    (["model.dropout=1.5"], r"model.dropout=1.5 is not valid"),
    (["+model.depth=3"], r"model.depth is not a config key; the model group has: name, widths, dropout"),
    (["trainer.accelerator=GPU"], r"trainer.accelerator='GPU' is not valid; choose one of auto, cpu, gpu, cuda, mps; did you mean gpu\?"),
    (["data.source=imagenet"], r"data.source='imagenet' is not valid; choose one of torchvision, folder, synthetic"),
    (["data.batch_size=-8"], r"data.batch_size=-8 is not valid; use a positive number"),
    (["data.train_subset=0"], r"data.train_subset=0 is not valid"),
    (["data.source=synthetic", "data.synthetic_train_size=2000"], r"data.val_size=5000 is not valid; it leaves none of the data.synthetic_train_size=2000 training images: lower data.val_size"),
    (["optim.lr=-0.1"], r"optim.lr=-0.1 is not valid; use a positive learning rate"),
    (["optim.name=rmsprop"], r"optim.name='rmsprop' is not valid; choose one of sgd, adamw"),
    (["optim.schedule=linear"], r"optim.schedule='linear' is not valid; choose one of onecycle, cosine, step, constant"),
    (["trainer.precision=fp8"], r"trainer.precision='fp8' is not valid"),
    (["trainer.devices=2", "data.batch_size=511"], r"data.batch_size=511 is not valid; it is the global batch and must divide evenly over 2 processes"),
    (["trainer.max_epochs=0"], r"trainer.max_epochs=0 is not valid"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "message"), BAD_OVERRIDES)
def test_bad_value_is_named_in_one_sentence(overrides, message):
    cfg = compose_config("train", overrides)
    with pytest.raises(ConfigError, match=message) as info:
        validate(cfg)
    assert "\n" not in str(info.value)


def test_default_config_is_valid():
    cfg = validate(compose_config("train"))
    assert cfg.model.downsample == "maxpool" and cfg.model.kernel_size == 3
    assert list(cfg.model.widths) == [64, 128, 256]


def test_eval_requires_a_checkpoint():
    with pytest.raises(ConfigError, match="ckpt_path has no value"):
        validate(compose_config("eval"), EvalConfig)


def test_bad_override_from_the_command_line_exits_2_without_traceback(tmp_path):
    result = run_cli("train", "model.downsample=strided", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    assert "error: model.downsample='strided' is not valid; choose one of maxpool, conv" in result.stderr
    assert "Traceback" not in result.stderr
    assert '"status": "failed"' in (tmp_path / "run" / "status.json").read_text()


def test_a_checkpoints_saved_groups_become_typed_objects_or_name_the_key():
    # Classifier.load_from_checkpoint hands the plain dicts a checkpoint saved to typed(); a key that an older
    # version did not save, or a value no longer valid, is named with its group.
    cfg = validate(compose_config("train", ["model.downsample=conv"]))
    model = typed(ModelConfig, plain(cfg.model), "model")
    optim = typed(OptimConfig, cfg.optim, "optim")  # a node whose lr interpolates ${trainer.accelerator}
    assert isinstance(optim, OptimConfig) and optim.lr == cfg.optim.lr
    assert isinstance(model, ModelConfig) and model.downsample == "conv" and plain(model) == plain(cfg.model)
    old = {k: v for k, v in plain(cfg.optim).items() if k != "loss_reduction"}
    with pytest.raises(
        ConfigError, match=r"^optim\.loss_reduction has no value \(saved by an older version\?\)$"
    ):
        typed(OptimConfig, old, "optim")
    with pytest.raises(ConfigError, match=r"^model\.downsample='cnv' is not valid; .*did you mean conv\?$"):
        typed(ModelConfig, {**plain(cfg.model), "downsample": "cnv"}, "model")


def _class_folders(root, split, classes=CIFAR10_CLASSES):
    for name in classes:
        (root / split / name).mkdir(parents=True)


def _data(*overrides):
    return validate(compose_config("train", list(overrides))).data


def test_a_folder_root_that_cannot_serve_the_run_is_named_before_any_image_is_read(tmp_path):
    root = re.escape(str(tmp_path))
    with pytest.raises(
        ConfigError, match=r"^data.root='/nonexistent/cifar' is not a folder; with data.source"
    ):
        check_data_files(_data("data.source=folder", "data.root=/nonexistent/cifar"))
    data = _data("data.source=folder", f"data.root={tmp_path}")
    with pytest.raises(ConfigError, match=rf"^{root}/train does not exist; data.source=folder expects"):
        check_data_files(data)
    with pytest.raises(ConfigError, match=rf"^{root}/test does not exist"):
        check_data_files(data, splits=("test",))  # eval: it tests only
    _class_folders(tmp_path, "train", [c for c in CIFAR10_CLASSES if c != "frog"])
    with pytest.raises(ConfigError, match=rf"^{root}/train lacks the class folder\(s\) frog; CIFAR-10 needs"):
        check_data_files(data)
    (tmp_path / "train" / "frog").mkdir()
    with pytest.raises(ConfigError, match=rf"^{root}/test does not exist"):  # the data module loads both
        check_data_files(data)
    _class_folders(tmp_path, "test")
    check_data_files(data)
    shutil.rmtree(tmp_path / "train")
    check_data_files(data, splits=("test",))


def test_torchvision_data_without_download_names_the_key_to_set(tmp_path):
    data = _data(f"data.root={tmp_path}", "data.download=false")
    with pytest.raises(
        ConfigError, match=r"holds no cifar-10-batches-py and data.download=false; set data.down"
    ):
        check_data_files(data)
    check_data_files(_data(f"data.root={tmp_path}"))  # download=true: fetched when the run starts
    (tmp_path / "cifar-10-batches-py").mkdir()
    check_data_files(data)  # its files are checked (checksums) when the data loads


def test_the_data_files_are_no_rule_of_the_config(tmp_path):
    # eval's data keys are its checkpoint's (read later), and a sweep submitted to SLURM runs on other machines
    validate(
        compose_config("eval", ["ckpt_path=x.ckpt", "data.download=false", f"data.root={tmp_path}"]),
        EvalConfig,
    )
    validate(compose_config("train", ["data.source=folder", f"data.root={tmp_path}"]))


def test_an_image_folder_given_to_the_torchvision_source_asks_for_the_folder_source(tmp_path):
    # else torchvision would download CIFAR-10 into the user's image folder (or say it cannot)
    _class_folders(tmp_path, "train")
    _class_folders(tmp_path, "test")
    with pytest.raises(
        ConfigError,
        match=r"holds train/ and test/ folders, not torchvision's cifar-10-batches-py; add data.source=folder",
    ):
        check_data_files(_data(f"data.root={tmp_path}"))
    check_data_files(_data("data.source=folder", f"data.root={tmp_path}"))


def test_a_comma_list_without_m_says_how_to_sweep_or_give_a_list():
    result = run_cli("train", "model.widths=8,16,32")  # refused before Hydra makes a run directory
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: model.widths=8,16,32 is a sweep: add -m to run one job per value; or, if model.widths takes a "
        "list, write it in quoted brackets, 'model.widths=[8,16,32]', and if its value is text with commas, in "
        "quotes, 'model.widths=\"8,16,32\"'"
    )
    # also where the pre-check leaves the run to itself (a directory named outright), and for range()
    with pytest.raises(ConfigError, match=r"^seed=range\(0,3\) is a sweep: add -m"):
        prepare_argv(["prog", "seed=range(0,3)", "hydra.run.dir=/tmp/x"], "train", TrainConfig)

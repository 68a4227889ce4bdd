"""What a new user reads first: each tool's --help, tab completion, and the shapes table."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from downsample_lab.config import ShapesConfig, validate
from downsample_lab.config.keys import groups, options
from downsample_lab.models import DOWNSAMPLE_NAMES
from downsample_lab.models.summary import BIAS_NOTE, format_shapes

from .conftest import REPO, compose_config, run_cli


@pytest.mark.parametrize(
    ("tool", "describes", "strategies"),
    [
        ("train", "Train one CNN on CIFAR-10", True),
        ("eval", "Test a checkpoint written by downsample_lab.train", False),
        ("shapes", "Print every layer of the model with its output shape, stride, padding", True),
        ("bench", "Time training images/s of each strategy", True),
    ],
)
def test_help_describes_the_tool_its_groups_and_strategies(tool, describes, strategies):
    result = run_cli(tool, "--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.startswith(f"python -m downsample_lab.{tool} ")  # not Hydra's "<app> is powered by Hydra"
    assert describes in out
    # the groups this tool's config selects, each with its options (shapes has no trainer, eval no model)
    listed = out.split("== Config groups: group=option ==\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert listed == [f"{g}: {', '.join(options(g))}" for g in groups(tool)]
    assert ("trainer: cpu, ddp, default, gpu" in listed) == (tool != "shapes")
    if strategies:
        section = out.split("== Downsampling strategies", 1)[1].split("==", 2)[1]
        assert [line.split()[0] for line in section.strip().splitlines()] == list(DOWNSAMPLE_NAMES)
    assert f"downsample-{tool} -sc install=bash" in out  # how to get tab completion


def test_report_help_describes_the_tool():
    result = run_cli("report", "--help", timeout=60)
    assert result.returncode == 0 and "Compare the arms of a sweep" in result.stdout


def _complete(line: str) -> list[str]:
    # What bash asks the tool for on <TAB> (the script `-sc install=bash` installs calls exactly this).
    env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line))}
    result = subprocess.run(
        [sys.executable, "-m", "downsample_lab.train", "-sc", "query=bash"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


def test_tab_completion_offers_keys_groups_and_values():
    script = run_cli("train", "-sc", "install=bash", timeout=120)
    assert (
        script.returncode == 0 and "complete -o nospace -o default -F hydra_bash_completion" in script.stdout
    )
    assert "model.downsample=" in _complete("downsample-train model.down")
    assert "model=all_cnn_c" in _complete("downsample-train model=")  # a group's options
    # a key's value: Hydra offers the current one (the valid strategies are in --help)
    assert _complete("downsample-train model.downsample=") == ["model.downsample=maxpool"]


def test_shapes_shows_stride_and_padding_and_explains_the_missing_bias():
    cfg = compose_config("shapes", ["model.downsample=conv3", "model.widths=[8,16]", "model.blocks=1"])
    text = format_shapes(validate(cfg, ShapesConfig))
    header = next(line for line in text.splitlines() if line.startswith("layer"))
    assert header.split()[:6] == ["layer", "type", "output", "shape", "stride", "pad"]
    conv3 = next(line for line in text.splitlines() if line.startswith("stages.0.1.0"))
    # the strided 3x3 conv: stride 2, padding 1
    assert conv3.split()[1:5] == ["Conv2d", "1x8x16x16", "2", "1"]
    assert "3·3·8·8" in conv3 and "+" not in conv3  # no + C_out: no bias before BatchNorm
    stem = next(line for line in text.splitlines() if line.startswith("stem.0"))
    assert stem.split()[3:5] == ["1", "1"]
    assert BIAS_NOTE in text and "BatchNorm" in BIAS_NOTE


@pytest.mark.parametrize("tool", ["train", "eval", "bench"])
def test_each_tool_writes_its_runs_under_its_own_name(tool):
    result = run_cli(tool, "--cfg", "hydra", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    # runs go to outputs/${hydra.job.name}/<time>/ (configs/hydra/default.yaml); bench/main.py is still "bench"
    assert "    dir: outputs/${hydra.job.name}/" in result.stdout
    assert re.search(rf"^  job:\n    name: {tool}$", result.stdout, re.M), result.stdout[:600]

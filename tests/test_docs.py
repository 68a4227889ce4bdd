"""The documentation cannot drift from the code: the config reference and every --help are generated from the
schema's docstrings, and the README stays short, with links that resolve."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from downsample_lab.config import BenchConfig, EvalConfig, ShapesConfig, TrainConfig
from downsample_lab.config.keys import schema_keys
from downsample_lab.run.help import render_help

from .conftest import REPO, SLOW_TESTS, run_cli

TOOLS = {"train": TrainConfig, "eval": EvalConfig, "shapes": ShapesConfig, "bench": BenchConfig}


@pytest.mark.parametrize("schema", TOOLS.values(), ids=TOOLS)
def test_every_config_key_has_a_description(schema):
    undocumented = [k.name for k in schema_keys(schema) if not k.doc]
    assert not undocumented, f"add a docstring under these fields of the schema: {undocumented}"


def test_the_configuration_reference_is_what_the_schema_gives():
    result = subprocess.run(
        [sys.executable, "scripts/config_reference.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_configuration_reference_lists_exactly_the_schemas_keys():
    documented = re.findall(r"^\| `([a-z_.]+)` \|", (REPO / "docs" / "configuration.md").read_text(), re.M)
    keys = {k.name for schema in TOOLS.values() for k in schema_keys(schema)}
    assert len(documented) == len(set(documented)) and set(documented) == keys


@pytest.mark.parametrize(("tool", "schema"), TOOLS.items(), ids=TOOLS)
def test_help_lists_every_key_of_the_tool_with_its_value_here(tool, schema):
    text = render_help(tool, schema, [], width=100)
    listed = re.findall(r"^([a-z_.]+) = ", text, re.M)
    assert listed == [k.name for k in schema_keys(schema)]
    # resolved for this machine, not the ${if_gpu:...} interpolation
    assert not [v for v in re.findall(r"^[a-z_.]+ = (.*)$", text, re.M) if "${" in v]


def test_help_shows_the_values_the_command_line_chooses():
    text = render_help("train", TrainConfig, ["model=fast", "seed=7"], width=100)
    assert "\nmodel.name = fast " in text and "\nseed = 7 " in text
    assert "\nmodel.whiten_bias_epochs = 3 " in text  # a key of model=fast only, shown with its value


def test_help_and_a_typo_answer_without_importing_torch():
    # -X importtime lists every module the process imported
    for args in (["--help"], ["model.downsampl=conv"], ["model.downsample=maxpol"]):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "downsample_lab.train", *args],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
        assert "torch" not in imported and "lightning" not in imported, args
        assert (result.returncode, args == ["--help"]) in ((0, True), (2, False)), result.stderr[-500:]


def test_report_and_selection_help_describe_their_options():
    for tool, options in (
        ("report", ["--out", "--keep-degenerate"]),
        ("report.selection", ["--final", "--seeds"]),
    ):
        result = run_cli(tool, "--help", timeout=60)
        assert result.returncode == 0 and all(o in result.stdout for o in options), result.stdout


def test_the_docs_count_the_slow_tests(request):
    n, files = request.config.stash[SLOW_TESTS]
    if files != {p.name for p in (REPO / "tests").glob("test_*.py")}:
        pytest.skip("only part of the suite was collected")
    assert f"leaves out the {n} longest tests" in (REPO / "README.md").read_text()
    assert f"The {n} tests marked `slow`" in (REPO / "docs" / "developing.md").read_text()


def test_the_readme_is_short_and_its_links_resolve():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    head = "\n".join(readme.splitlines()[:60])  # the first screen: set-up and the tests
    assert "pip install -e '.[dev]'" in head and "python -m pytest" in head
    for doc in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"

"""downsample_lab.run.status: the run-directory bookkeeping that run.job, train and report share."""

import json
import subprocess
import sys

from downsample_lab import study
from downsample_lab.run import status as runs


def test_report_and_runs_import_without_torch():
    # The report is a quick command on a laptop: it must not pay torch's and Lightning's import time.
    # Every module of the report package, so that a new one is checked too (__main__ would run the command).
    code = (
        "import importlib, pkgutil, sys, downsample_lab.report, downsample_lab.run.status, downsample_lab.report.selection\n"
        "names = [m.name for m in pkgutil.iter_modules(downsample_lab.report.__path__) if m.name != '__main__']\n"
        "assert {'read', 'stats', 'render', 'plots', 'document', 'build'} <= set(names), names\n"
        "for name in names: importlib.import_module(f'downsample_lab.report.{name}')\n"
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_flatten_keeps_values_and_flatten_text_writes_lists_as_the_config_does():
    cfg = {"seed": 1, "model": {"widths": [8, 16], "kernel": None, "bn": True}}
    assert study.flatten(cfg) == {"seed": 1, "model.widths": [8, 16], "model.kernel": None, "model.bn": True}
    assert study.flatten_text(cfg) == {
        "seed": 1,
        "model.widths": "[8, 16]",
        "model.kernel": "null",
        "model.bn": True,
    }


def test_status_round_trip_and_unreadable_records(tmp_path):
    assert runs.read_status(tmp_path) == (None, "")
    runs.write_status(tmp_path, "completed", metrics={"test/acc": 0.5})
    record, problem = runs.read_status(tmp_path)
    assert (record["status"], record["metrics"], problem) == ("completed", {"test/acc": 0.5}, "")
    assert not (tmp_path / "status.json.tmp").exists()
    (tmp_path / "status.json").write_text("{half")
    assert runs.read_status(tmp_path)[0] is None and "unreadable" in runs.read_status(tmp_path)[1]
    (tmp_path / "status.json").write_text(json.dumps([1]))
    assert runs.read_status(tmp_path) == (None, "status.json is not a JSON object")


def test_bookkeeping_keys_are_config_keys():
    # A renamed key would silently drop out of the list: resume would refuse it, the report would split arms by it.
    from omegaconf import OmegaConf

    from downsample_lab.config import TrainConfig

    keys = study.flatten(OmegaConf.to_container(OmegaConf.structured(TrainConfig)))
    assert keys.keys() >= study.BOOKKEEPING_KEYS, study.BOOKKEEPING_KEYS - keys.keys()

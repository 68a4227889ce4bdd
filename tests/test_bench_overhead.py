"""The bench's overhead mode (``--config-name bench_overhead``): the figure of the host work per step.

Speed is not asserted; the test checks that the mode runs as documented (tiny model, batch 8, fp32, one thread)
and reports the host CPU time per step of both paths, from which docs/BENCHMARKS.md's "host µs" columns come.
"""

from __future__ import annotations

import json

import pytest

from .conftest import run_cli


def test_overhead_mode_reports_host_time_per_step_of_both_paths(tmp_path):
    result = run_cli(
        "bench",
        "--config-name",
        "bench_overhead",
        "bench.warmup_steps=2",
        "bench.window_steps=5",
        "bench.windows=3",
        "data.synthetic_train_size=400",
        "data.val_size=100",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "bench.json").read_text())
    cfg = record["config"]
    assert cfg["model"]["widths"] == [4, 4, 4] and cfg["model"]["blocks"] == 1
    assert cfg["data"]["batch_size"] == 8 and cfg["bench"]["threads"] == 1
    assert record["precision"] == "32-true" and record["hardware"]["torch_threads"] == 1
    r = record["results"]["maxpool"]
    for path in ("raw", "lightning"):
        windows = r[path]["window_host_us_per_step"]
        assert len(windows) == 3 and all(us > 0 for us in windows)
        assert r[path]["host_us_per_step"] == pytest.approx(sorted(windows)[1])  # the median of three
    assert r["host_ratio"] == pytest.approx(r["raw"]["host_us_per_step"] / r["lightning"]["host_us_per_step"])
    assert "raw host µs" in result.stdout

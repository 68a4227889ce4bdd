"""The ablation report: arms, statistics, left-out runs, files and CLI, on synthetic TensorBoard runs.

Each run directory is written the way train.py writes one: ``status.json``, ``.hydra/config.yaml`` (the real
composed config), scalars under ``tb/<run name>/`` (the test metrics in a second event file, as Lightning's
``trainer.test`` does) and the flattened config as TensorBoard HParams, as ``trainer.log_hparams`` does.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from downsample_lab import report
from downsample_lab.engine.hparams import HPARAM_METRICS
from downsample_lab.study import DATA_DIGEST, flatten_text

from .conftest import TINY, compose_config, run_cli

STEPS_PER_EPOCH = 10

# The sweep of most tests: test accuracies per arm, one run per value (seeds 0, 1, 2).
ACC = {"maxpool": [0.80, 0.82, 0.81], "conv": [0.84, 0.83, 0.86], "avgpool": [0.79]}
# Per-epoch training images/s of every run; the first epoch (warm-up) is slow and must be left out.
IPS = {"maxpool": [100.0, 1000.0, 1100.0], "conv": [90.0, 800.0, 900.0], "avgpool": [50.0, 700.0, 750.0]}
PARAMS = {"maxpool": 1000, "conv": 1500, "avgpool": 1000}
FLOPS = {"maxpool": 2.0e6, "conv": 3.0e6, "avgpool": 2.0e6}


@pytest.fixture(scope="module")
def base_cfg() -> dict[str, Any]:
    """The real train config (tiny overrides) as a plain nested dict."""
    return OmegaConf.to_container(compose_config("train", TINY), resolve=True)


def make_cfg(base: dict[str, Any], seed: int, **model: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(base)
    cfg["seed"] = seed
    cfg["model"].update(model)
    return cfg


def write_run(
    run_dir: Path,
    cfg: dict[str, Any],
    *,
    status: str = "completed",
    val_acc: Sequence[float] = (0.5, 0.6, 0.7),
    ips: Sequence[float] = (100.0, 200.0, 300.0),
    test_acc: float | None = None,
    consistency: float | None = None,
    test_acc_tta: float | None = None,
    params: int = 1000,
    flops: float = 1e6,
    error: str | None = None,
    tb_hparams: bool = True,
    test_scalars: Mapping[str, float] | None = None,
    digest: str | None = None,
) -> Path:
    """A run directory as train.py leaves it (``tb_hparams=False``: died before the HParams were written;
    ``test_scalars``: more scalars, or other values, logged at the test's step, e.g. ``{"test/loss": 46.9}``;
    ``digest``: the data digest train records in the HParams, none as runs before it)."""
    tb = run_dir / "tb" / f"downsample={cfg['model']['downsample']},seed={cfg['seed']}"
    writer = SummaryWriter(str(tb))
    if tb_hparams:
        flat = flatten_text(cfg)
        flat["trainer.precision"] = "32-true"  # log_hparams records the resolved precision, not "auto"
        if digest is not None:
            flat[DATA_DIGEST] = digest
        for summary in hparams_summary(flat, dict.fromkeys(HPARAM_METRICS, 0.0)):
            writer._get_file_writer().add_summary(summary)
    writer.add_scalar("model/params", params, 0)
    writer.add_scalar("model/flops_per_image", flops, 0)
    best = 0.0
    step = 0
    for epoch, (acc, rate) in enumerate(zip(val_acc, ips, strict=False)):
        step = (epoch + 1) * STEPS_PER_EPOCH
        best = max(best, acc)
        writer.add_scalar("train/loss", 1.0 / (epoch + 1), step - 1)
        writer.add_scalar("epoch", epoch, step - 1)
        for tag, value in (
            ("val/acc", acc),
            ("val/acc_best", best),
            ("val/loss", 1 - acc),
            ("train/images_per_sec", rate),
            ("train/epoch_time", 1000 / rate),
            ("epoch", epoch),
        ):
            writer.add_scalar(tag, value, step)
    writer.close()
    if test_acc is not None:
        writer = SummaryWriter(str(tb))  # a second event file, as trainer.test writes one
        writer.add_scalar("test/acc", test_acc, step + 1)
        writer.add_scalar("test/loss", 1 - test_acc, step + 1)
        if consistency is not None:
            writer.add_scalar("test/consistency", consistency, step + 1)
        if test_acc_tta is not None:
            writer.add_scalar("test/acc_tta", test_acc_tta, step + 1)
        for tag, value in (test_scalars or {}).items():
            writer.add_scalar(tag, value, step + 1)
        writer.add_scalar("epoch", len(val_acc), step + 1)
        writer.close()
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(cfg), run_dir / ".hydra" / "config.yaml")
    record: dict[str, Any] = {"status": status, "time": "2026-01-01T00:00:00+0000"}
    if error:
        record["error"] = error
    if status == "completed":
        record["metrics"] = {"test/acc": test_acc}
    (run_dir / "status.json").write_text(json.dumps(record))
    return run_dir


def write_seeds(
    root: Path, base: dict[str, Any], accs: Sequence[float], run: Any = None, **model: Any
) -> None:
    """One completed run per accuracy, seeds 0, 1, ..., of the arm whose ``model`` keys are ``model``; ``run(acc)``
    gives each run's :func:`write_run` arguments (default: ``test_acc=acc``)."""
    for seed, acc in enumerate(accs):
        name = "_".join(map(str, [*model.values(), seed]))
        write_run(root / name, make_cfg(base, seed, **model), **(run or (lambda a: {"test_acc": a}))(acc))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, base_cfg: dict[str, Any]) -> Path:
    """A multirun: maxpool and conv × 3 seeds, avgpool × 1, one failed and one running run.

    Every run has its own data.root and progress-bar setting: bookkeeping keys that must not split the arms.
    """
    root = tmp_path_factory.mktemp("outputs") / "train-multirun" / "2026-01-01_00-00-00.000000"
    job = 0
    for downsample, accs in ACC.items():
        for seed, acc in enumerate(accs):
            cfg = make_cfg(base_cfg, seed, downsample=downsample)
            cfg["data"]["root"] = f"/data/copy{job}"
            cfg["trainer"]["enable_progress_bar"] = job % 2 == 0
            write_run(
                root / f"{job}_model.downsample={downsample},seed={seed}",
                cfg,
                test_acc=acc,
                ips=IPS[downsample],
                params=PARAMS[downsample],
                flops=FLOPS[downsample],
                val_acc=[acc - 0.2, acc - 0.05, acc - 0.01],
            )
            job += 1
    write_run(
        root / f"{job}_model.downsample=conv,seed=3",
        make_cfg(base_cfg, 3, downsample="conv"),
        status="failed",
        val_acc=[0.3],
        error="RuntimeError: CUDA out of memory",
        tb_hparams=False,
    )
    write_run(
        root / f"{job + 1}_model.downsample=maxpool,seed=4",
        make_cfg(base_cfg, 4, downsample="maxpool"),
        status="running",
        val_acc=[0.4, 0.5],
    )
    return root


@pytest.fixture(scope="module")
def built(sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> report.Report:
    return report.build_report(sweep, tmp_path_factory.mktemp("report"))


def row(rep: report.Report, downsample: str) -> pd.Series:
    results = rep.results.set_index("arm")
    return results.loc[f"model.downsample={downsample}"]


def test_arms_are_the_differing_keys_without_seed_or_bookkeeping(built):
    assert built.keys == ["model.downsample"]
    assert [a.label for a in built.arms] == [
        "model.downsample=maxpool",
        "model.downsample=avgpool",
        "model.downsample=conv",
    ]
    assert {a.label: len(a.runs) for a in built.arms} == {
        "model.downsample=maxpool": 3,
        "model.downsample=avgpool": 1,
        "model.downsample=conv": 3,
    }
    assert list(row(built, "conv")[["n", "seeds"]]) == [3, "0 1 2"]


@pytest.mark.parametrize("downsample", ["maxpool", "conv"])
def test_accuracy_mean_std_and_ci_match_numpy_and_scipy(built, downsample):
    acc = np.array(ACC[downsample])
    r = row(built, downsample)
    mean, std = acc.mean(), acc.std(ddof=1)
    half = stats.t.ppf(0.975, len(acc) - 1) * std / math.sqrt(len(acc))
    assert r.test_acc_mean == pytest.approx(mean, abs=1e-6)  # event files hold float32
    assert r.test_acc_std == pytest.approx(std, rel=1e-4)
    assert (r.test_acc_ci95_low, r.test_acc_ci95_high) == pytest.approx((mean - half, mean + half), abs=1e-5)
    assert r.val_acc_best_mean == pytest.approx(mean - 0.01, abs=1e-6)
    assert r.val_acc_best_std == pytest.approx(std, rel=1e-4)


def test_throughput_leaves_out_the_first_epoch_and_model_cost_is_read(built):
    r = row(built, "conv")
    assert r.images_per_sec_mean == pytest.approx(np.mean(IPS["conv"][1:]))  # 850, not 596.7 with warm-up
    assert r.images_per_sec_std == pytest.approx(0.0)  # every run of the arm logged the same rates
    assert (r.params, r.flops_per_image) == (PARAMS["conv"], FLOPS["conv"])
    assert "includes the warm-up" not in built.path.read_text()  # every run had 3 epochs


def test_welch_p_value_matches_scipy_against_the_maxpool_arm(built):
    expected = stats.ttest_ind(ACC["conv"], ACC["maxpool"], equal_var=False).pvalue
    conv = row(built, "conv")
    assert conv.baseline == "model.downsample=maxpool"
    assert conv.welch_p == pytest.approx(expected, rel=1e-3)
    assert 0.01 < conv.welch_p < 0.2  # a real, non-trivial p-value: the arms overlap a little
    assert math.isnan(row(built, "maxpool").welch_p)  # the baseline itself
    assert math.isnan(row(built, "avgpool").welch_p)  # n = 1


def test_table_shows_dashes_where_a_number_is_undefined(built):
    table = built.table.set_index("arm")
    assert table.loc["model.downsample=maxpool", "p vs baseline"] == "—"
    avgpool = table.loc["model.downsample=avgpool"]
    assert avgpool["test acc %"] == "79.00"
    assert (avgpool["95% CI"], avgpool["p vs baseline"]) == ("— (n < 3)", "—")
    assert (
        table.loc["model.downsample=conv", "test acc %"] == f"84.33 ± {np.std(ACC['conv'], ddof=1) * 100:.2f}"
    )
    # no run logged test/consistency or has a model.name of the paper's Table 3
    assert "shift consistency %" not in table
    assert "paper error % (Table 3)" not in table


def test_failed_and_running_runs_are_listed_and_not_counted(built):
    text = built.path.read_text()
    left_out = text.split("## Runs not counted")[1]
    assert "7_model.downsample=conv,seed=3" in left_out
    assert "RuntimeError: CUDA out of memory" in left_out
    # its arm, from .hydra/config.yaml (no HParams in tb/), without the precision that only the config has
    assert "| model.downsample=conv | 3 | failed |" in left_out
    assert "| model.downsample=maxpool | 4 | running |" in left_out
    assert "8_model.downsample=maxpool,seed=4" in left_out
    assert "running" in left_out
    assert "9 training runs found, 7 completed and counted, 1 failed, 1 running or incomplete" in text
    assert row(built, "conv").n == 3 and row(built, "maxpool").n == 3
    runs = pd.read_csv(built.out / "runs.csv")
    assert runs["status"].value_counts().to_dict() == {"completed": 7, "failed": 1, "running": 1}


def test_a_run_left_out_keeps_its_arm_label_when_no_completed_run_shares_it(tmp_path, base_cfg):
    write_run(tmp_path / "runs" / "a", make_cfg(base_cfg, 0, downsample="maxpool"), test_acc=0.8)
    write_run(tmp_path / "runs" / "b", make_cfg(base_cfg, 0, downsample="conv"), status="running")
    rep = report.build_report(tmp_path / "runs", tmp_path / "out")
    assert [a.label for a in rep.arms] == [
        "all runs"
    ]  # one completed run: nothing differs among those counted
    running = rep.path.read_text().split("## Runs not counted")[1]
    assert "| `b` | model.downsample=conv | 0 | running |" in running


def test_results_csv_has_one_row_per_arm(built):
    csv = pd.read_csv(built.out / "results.csv")
    assert list(csv["arm"]) == [a.label for a in built.arms]
    assert list(csv["model.downsample"]) == ["maxpool", "avgpool", "conv"]
    assert list(csv["n"]) == [3, 1, 3]
    for column in (
        "test_acc_mean",
        "test_acc_std",
        "test_acc_ci95_low",
        "test_acc_ci95_high",
        "val_acc_best_mean",
        "consistency_mean",
        "params",
        "flops_per_image",
        "images_per_sec_mean",
        "welch_p",
    ):
        assert column in csv
    expected = [np.mean(ACC[d]) for d in ("maxpool", "avgpool", "conv")]
    assert csv["test_acc_mean"].tolist() == pytest.approx(expected, abs=1e-6)


def test_runs_frame_is_one_row_per_run_with_its_numbers_and_hyperparameters(built):
    frame = report.runs_frame(built.runs).set_index("seed")
    assert len(frame) == len(built.runs) == 9
    maxpool = frame[frame["hparams.model.downsample"] == "maxpool"]
    assert maxpool["status"].to_dict() == {
        "0": "completed",
        "1": "completed",
        "2": "completed",
        "4": "running",
    }
    assert maxpool["test_acc"].dropna().tolist() == pytest.approx(ACC["maxpool"], abs=1e-6)
    assert math.isnan(maxpool.loc["4", "test_acc"])  # still running: no test accuracy, NaN
    assert maxpool.loc["0", "hparams.model.widths"] == [4, 8]  # a list stays a list
    assert maxpool.loc["0", "epochs"] == 3 and maxpool.loc["0", "flops"] == FLOPS["maxpool"]
    # the bookkeeping keys are there too: the table holds what each run read, the arms leave them out
    assert maxpool.loc["0", "hparams.data.root"] == "/data/copy0"


def test_plots_and_report_are_written(built):
    for name in report.REPORT_FILES:
        assert (built.out / name).stat().st_size > 0, name
    for name in ("val_acc.png", "acc_vs_throughput.png"):
        assert (built.out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = built.path.read_text()
    assert "![Validation accuracy per epoch](val_acc.png)" in text
    assert "first epoch" in text  # the throughput note says the warm-up epoch is left out


def test_val_curve_is_per_epoch(built):
    run = built.arms[0].runs[0]
    assert sorted(run.val_curve) == [1, 2, 3]
    assert run.val_curve[3] == pytest.approx(ACC["maxpool"][0] - 0.01, abs=1e-6)


def test_consistency_and_paper_columns_appear_when_logged(tmp_path, base_cfg):
    values = {"all_cnn_c": [0.90, 0.92], "strided_cnn_c": [0.88, 0.87]}

    def run(acc: float) -> dict[str, float]:
        return {"test_acc": acc, "consistency": acc - 0.1}

    for name, accs in values.items():
        write_seeds(tmp_path / "runs", base_cfg, accs, run, downsample="conv", name=name)
    rep = report.build_report(tmp_path / "runs", tmp_path / "out")
    table = rep.table.set_index("arm")
    assert rep.keys == ["model.name"]
    assert table.loc["model.name=all_cnn_c", "paper error % (Table 3)"] == "9.08"
    assert table.loc["model.name=strided_cnn_c", "paper error % (Table 3)"] == "10.19"
    assert table.loc["model.name=all_cnn_c", "test error %"] == "9.00"
    assert (
        table.loc["model.name=all_cnn_c", "shift consistency %"]
        == f"81.00 ± {np.std([0.8, 0.82], ddof=1) * 100:.2f}"
    )
    # no maxpool arm: the first arm is the baseline, by design, not for want of a matching max-pool arm
    assert "differs from it in" not in rep.path.read_text()
    expected = stats.ttest_ind(values["strided_cnn_c"], values["all_cnn_c"], equal_var=False).pvalue
    assert rep.results.set_index("arm").loc["model.name=strided_cnn_c", "welch_p"] == pytest.approx(
        expected, rel=1e-3
    )


def test_tta_accuracy_has_its_own_columns_when_logged(tmp_path, base_cfg):
    tta = {"maxpool": [0.91, 0.92, 0.90], "conv": [0.89, 0.90, 0.88]}

    def run(acc: float) -> dict[str, float]:
        return {"test_acc": acc - 0.01, "test_acc_tta": acc}

    for downsample, accs in tta.items():
        write_seeds(tmp_path / "runs", base_cfg, accs, run, downsample=downsample)
    rep = report.build_report(tmp_path / "runs", tmp_path / "out")
    table = rep.table.set_index("arm")
    assert (
        table.loc["model.downsample=conv", "TTA test acc %"]
        == f"89.00 ± {np.std(tta['conv'], ddof=1) * 100:.2f}"
    )
    expected = stats.ttest_ind(tta["conv"], tta["maxpool"], equal_var=False).pvalue
    assert rep.results.set_index("arm").loc["model.downsample=conv", "welch_p_tta"] == pytest.approx(
        expected, rel=1e-3
    )
    assert "test/acc_tta" in (tmp_path / "out" / "report.md").read_text()


def test_each_arm_is_tested_against_the_maxpool_arm_of_its_kernel_size(tmp_path, base_cfg):
    accs = {
        ("maxpool", 3): [0.80, 0.81],
        ("conv", 3): [0.82, 0.84],
        ("maxpool", 5): [0.70, 0.72],
        ("conv", 5): [0.75, 0.74],
    }
    for (downsample, k), values in accs.items():
        write_seeds(tmp_path / "runs", base_cfg, values, downsample=downsample, kernel_size=k)
    rep = report.build_report(tmp_path / "runs", tmp_path / "out")
    results = rep.results.set_index("arm")
    conv5 = results.loc["model.downsample=conv, model.kernel_size=5"]
    assert conv5.baseline == "model.downsample=maxpool, model.kernel_size=5"
    expected = stats.ttest_ind(accs[("conv", 5)], accs[("maxpool", 5)], equal_var=False).pvalue
    assert conv5.welch_p == pytest.approx(expected, rel=1e-3)
    assert "baseline" in rep.table  # two baselines: the table names each arm's


def test_eval_runs_are_skipped_and_listed(tmp_path, base_cfg):
    write_run(tmp_path / "outputs" / "train" / "a", make_cfg(base_cfg, 0, downsample="maxpool"), test_acc=0.8)
    eval_dir = tmp_path / "outputs" / "eval" / "b"
    (eval_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"seed": 0, "ckpt_path": "x.ckpt"}), eval_dir / ".hydra" / "config.yaml")
    (eval_dir / "status.json").write_text(json.dumps({"status": "completed", "metrics": {"test/acc": 0.5}}))
    rep = report.build_report(tmp_path / "outputs", tmp_path / "out")
    assert [len(a.runs) for a in rep.arms] == [1]
    assert [r.path for r in rep.skipped] == [eval_dir]
    assert "`eval/b` (eval, completed)" in rep.path.read_text()  # what its status.json says


def test_merge_keeps_the_typed_config_value_and_what_ran():
    config = {"model.channels_last": True, "model.widths": [8, 16], "trainer.precision": "auto"}
    tb = {"model.channels_last": 1.0, "model.widths": "[8, 16]", "trainer.precision": "bf16-mixed"}
    assert report.merge_hparams(tb, config) == {
        "model.channels_last": True,
        "model.widths": [8, 16],
        "trainer.precision": "bf16-mixed",
    }


def test_cli_writes_the_report_and_prints_where(sweep, tmp_path):
    out = tmp_path / "out"
    result = run_cli("report", str(sweep), "--out", str(out), timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"Report: {out / 'report.md'}" in result.stdout
    assert "7 completed, 1 failed, 1 running training runs" in result.stdout
    # DataFrame.to_string right-aligns the cells
    conv_line = next(
        line for line in result.stdout.splitlines() if line.lstrip().startswith("model.downsample=conv")
    )
    assert "84.33 ±" in conv_line
    assert (out / "report.md").is_file()


def test_cli_missing_directory_is_one_line_and_exit_2(tmp_path):
    result = run_cli("report", str(tmp_path / "nope"), timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: ") and "is not a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_only_failed_runs_still_write_a_report(tmp_path, base_cfg, capsys):
    cfg = make_cfg(base_cfg, 0, downsample="conv")
    write_run(tmp_path / "runs" / "a", cfg, status="failed", error="ValueError: boom")
    report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    stdout = capsys.readouterr().out
    assert "1 failed training runs" in stdout and "No completed run yet" in stdout
    text = (tmp_path / "out" / "report.md").read_text()
    assert "No completed run yet" in text and "ValueError: boom" in text


def test_directory_without_runs_is_a_user_error(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(tmp_path / "empty")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run directories below") and err.count("\n") == 1


def _hydra_job(run_dir: Path, name: str) -> None:
    # .hydra/hydra.yaml as Hydra writes it: the job name is the tool (train, eval, bench)
    (run_dir / ".hydra" / "hydra.yaml").write_text(
        f"hydra:\n  job:\n    name: {name}\n  run:\n    dir: ${{x}}\n"
    )


def test_only_training_runs_count_and_refused_ones_are_listed_apart(tmp_path, base_cfg):
    cfg = make_cfg(base_cfg, 0, downsample="maxpool")
    _hydra_job(write_run(tmp_path / "outputs" / "train" / "a", cfg, test_acc=0.8), "train")
    # a bench run has a model config and TensorBoard scalars too
    bench = write_run(
        tmp_path / "outputs" / "bench" / "b", make_cfg(base_cfg, 0, downsample="conv"), test_acc=0.1
    )
    _hydra_job(bench, "bench")
    # a command line refused at start-up: status.json and .hydra/, no TensorBoard run
    refused = tmp_path / "outputs" / "train" / "c"
    (refused / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create(make_cfg(base_cfg, 1, downsample="conv")), refused / ".hydra" / "config.yaml"
    )
    _hydra_job(refused, "train")
    (refused / "status.json").write_text(
        json.dumps({"status": "failed", "error": "model.widths=[] is not valid; give one positive width"})
    )
    rep = report.build_report(tmp_path / "outputs", tmp_path / "out")
    assert [len(a.runs) for a in rep.arms] == [1] and rep.keys == []  # conv exists only in bench/refused runs
    assert [(r.path.name, r.task) for r in rep.skipped] == [("b", "bench")]
    assert {r.path.name: r.status for r in rep.runs} == {"a": "completed", "c": "not started"}
    text = rep.path.read_text()
    assert "1 training run found, 1 completed and counted, 0 failed" in text
    assert "## Stopped at start-up (1)" in text and "model.widths=[] is not valid" in text
    assert "`bench/b` (bench, completed)" in text


def _bench_run(
    run_dir: Path,
    overrides: Sequence[str],
    speeds: Mapping[str, tuple[float, float]],
    others: float = 0.01,
    **record: Any,
) -> dict[str, Any]:
    """A finished bench run as the bench writes it: .hydra/ (the config as Hydra saves it, interpolations and
    all), status.json and bench.json (the config that ran; per strategy in ``speeds`` the raw and Lightning
    images/s); ``record`` replaces bench.json's entries. Returns bench.json's content."""
    cfg = compose_config("bench", ["data.source=synthetic", *overrides])
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # unresolved: optim.lr is ${if_gpu:...}
    _hydra_job(run_dir, "bench")
    (run_dir / "status.json").write_text(json.dumps({"status": "completed", "metrics": {}}))
    results = {
        name: {
            "ratio": lightning / raw,
            "raw": {"images_per_sec": raw, "host_us_per_step": 40.0},
            "lightning": {"images_per_sec": lightning, "host_us_per_step": 50.0},
            "other_cpu_cores": others,
        }
        for name, (raw, lightning) in speeds.items()
    }
    content = {
        "hardware": {
            "device": "cpu",
            "cpu_model": "Some CPU",
            "cpus_usable": 2,
            "torch_threads": 2,
            "gpu": None,
        },
        "versions": {"torch": "2.9.0", "lightning": "2.6.0"},
        "precision": "32-true",
        "config": OmegaConf.to_container(cfg, resolve=True),
        "results": results,
    } | record
    (run_dir / "bench.json").write_text(json.dumps(content))
    return content


def test_bench_runs_are_summed_up_per_setting_and_strategy_with_their_uncertainty(tmp_path, capsys):
    maxpool, conv = [1000.0, 1100.0, 1200.0], [900.0, 950.0, 1000.0]
    raw = 1250.0
    for seed in range(3):  # three runs of one setting (batch 64), each timing maxpool and conv
        speeds = {"maxpool": (raw, maxpool[seed]), "conv": (raw, conv[seed])}
        _bench_run(tmp_path / "sweep" / f"{seed}", [f"seed={seed}", "data.batch_size=64"], speeds)
    # the same setting timing conv alone: its conv counts, but has no max-pooling to be paired with
    _bench_run(tmp_path / "sweep" / "c", ["seed=3", "data.batch_size=64", "bench.strategies=[conv]"],
               {"conv": (raw, 800.0)})  # fmt: skip
    _bench_run(
        tmp_path / "sweep" / "w", ["data.batch_size=128"], {"maxpool": (2000.0, 3000.0)}
    )  # another setting
    _bench_run(tmp_path / "sweep" / "f", ["seed=4", "data.batch_size=64"], {})
    (tmp_path / "sweep" / "f" / "bench.json").unlink()  # a bench run that wrote nothing

    report.main([str(tmp_path / "sweep")])
    table = pd.read_csv(tmp_path / "sweep" / "bench.csv")
    assert list(zip(table.setting, table.strategy, table.n, strict=True)) == [
        ("data.batch_size=64", "maxpool", 3),
        ("data.batch_size=64", "conv", 4),
        ("data.batch_size=128", "maxpool", 1),
    ]  # settings by the configs that ran (bench.json), not by bench.strategies or the seed
    first, second, third = table.iloc[0], table.iloc[1], table.iloc[2]
    ratios = [m / raw for m in maxpool]
    assert first.lightning_images_per_sec_mean == pytest.approx(1100) and first.ratio_mean == pytest.approx(
        0.88
    )
    low, high = stats.t.interval(0.95, 2, loc=0.88, scale=np.std(ratios, ddof=1) / math.sqrt(3))
    assert (first.ratio_ci95_low, first.ratio_ci95_high) == (pytest.approx(low), pytest.approx(high))
    logs = np.log(np.array(conv) / np.array(maxpool))  # paired by run
    low, high = stats.t.interval(0.95, 2, loc=logs.mean(), scale=logs.std(ddof=1) / math.sqrt(3))
    assert second.vs_maxpool_n == 3 and second.vs_maxpool_mean == pytest.approx(math.expm1(logs.mean()))
    assert (second.vs_maxpool_ci95_low, second.vs_maxpool_ci95_high) == (
        pytest.approx(math.expm1(low)),
        pytest.approx(math.expm1(high)),
    )
    assert math.isnan(third.ratio_ci95_low) and third.ratio_ci95_note == "n < 3"
    text = (tmp_path / "sweep" / "report.md").read_text()
    assert (
        "## Benchmark runs (6)" in text
        and "5 runs of `python -m downsample_lab.bench` (Some CPU, 2 CPUs" in text
    )
    assert "| data.batch_size=64 | conv | 4 | 1,250 ± 0 | 912 ± 85 |" in text
    assert "| data.batch_size=128 | maxpool | 1 | 2,000 | 3,000 | 1.500 | — (n < 3) | — |" in text
    assert "- `f`: no bench.json (the bench did not finish)" in text
    out = capsys.readouterr().out
    assert "Benchmark runs (5 runs; all numbers in bench.csv):" in out and "nothing to compare" not in out
    # no training run: none of the ablation's parts, empty or not
    assert {p.name for p in (tmp_path / "sweep").glob("*.*")} == {"report.md", "bench.csv"}
    assert "## Results" not in text and "Runs not counted" not in text and text.startswith("# Report\n")


def test_bench_records_that_are_damaged_shared_or_from_other_machines_do_not_stop_the_report(tmp_path):
    shared = tmp_path / "one.json"
    for seed in range(2):  # two runs told to write the same file: one record, not two
        _bench_run(
            tmp_path / "sweep" / f"s{seed}", [f"seed={seed}", f"bench.out={shared}"], {"maxpool": (1, 2)}
        )
        (tmp_path / "sweep" / f"s{seed}" / "bench.json").rename(shared)
    damaged = {"results": {"maxpool": {"raw": [1], "lightning": {"images_per_sec": "fast"}}, "conv": None}}
    _bench_run(tmp_path / "sweep" / "d", ["seed=7"], {}, hardware="cpu", versions=None, **damaged)
    gpu = {"device": "cuda", "gpu": {"name": "NVIDIA H200", "count": 2}}
    _bench_run(tmp_path / "sweep" / "g", ["seed=8"], {"maxpool": (5.0, 4.0)}, hardware=gpu)

    # a relative bench.out: relative to the directory the bench was started in (Hydra's runtime.cwd)
    rel = tmp_path / "sweep" / "r"
    _bench_run(rel, ["seed=9", "bench.out=rel.json"], {"maxpool": (1, 2)})
    (tmp_path / "cwd").mkdir()
    (rel / "bench.json").rename(tmp_path / "cwd" / "rel.json")
    (rel / ".hydra" / "hydra.yaml").write_text(
        f"hydra:\n  job:\n    name: bench\n  runtime:\n    cwd: {tmp_path / 'cwd'}\n"
    )

    rep = report.build_report(tmp_path / "sweep")
    assert rep.bench_count == 4
    assert [why for _, why in rep.bench_left_out] == [
        f"its bench.out, {shared}, is s0's record too (overwritten)"
    ]
    assert set(rep.bench["machine"]) == {"Some CPU, 2 CPUs, 2 torch threads", "—", "NVIDIA H200 × 2"}
    assert rep.bench[rep.bench["machine"].str.startswith("Some")]["n"].tolist() == [2]  # s0 and r
    assert "machine" in rep.bench_table and "versions" in rep.bench_table  # they differ: shown per row
    damaged_rows = rep.bench[rep.bench["machine"] == "—"]
    assert list(damaged_rows["strategy"]) == ["maxpool", "conv"] and damaged_rows["ratio_mean"].isna().all()


def test_report_prints_no_warnings_and_no_internal_names(tmp_path, base_cfg):
    # Identical accuracies within each arm: scipy warns about precision loss in the t-test
    for seed in range(3):
        for downsample, acc in (("maxpool", 0.5), ("conv", 0.6)):
            cfg = make_cfg(base_cfg, seed, downsample=downsample)
            write_run(tmp_path / "sweep" / f"{downsample}{seed}", cfg, test_acc=acc)
    result = run_cli("report", str(tmp_path / "sweep"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    text = (tmp_path / "sweep" / "report.md").read_text()
    assert "IGNORED_KEYS" not in text and "`data.root`" in text  # the keys are named, not the constant


def test_help_is_correct(capsys):
    with pytest.raises(SystemExit):
        report.main(["--help"])
    out = capsys.readouterr().out
    assert "95% CI" in out and "%%" not in out


def test_axes_of_a_one_epoch_sweep(tmp_path, base_cfg):
    for seed in range(2):
        cfg = make_cfg(base_cfg, seed, downsample="maxpool")
        write_run(tmp_path / "sweep" / f"r{seed}", cfg, test_acc=0.5, val_acc=[0.4], ips=[500.0])
    rep = report.build_report(tmp_path / "sweep", tmp_path / "out")
    fig = report.plot_val_curves(rep.arms, tmp_path / "v.png")
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks == [1.0]  # one whole epoch, no 0.96, 0.98, ...
    fig = report.plot_acc_vs_throughput(rep.results, tmp_path / "t.png", report.warmup_excluded(rep.arms))
    assert "first epoch excluded" not in fig.axes[0].get_xlabel()
    assert rep.arms[0].runs[0].val_curve == {1: pytest.approx(0.4)}
    # the table's note says so too (a new user read 1,254 against 2,852 img/s, the first job's warm-up included)
    assert "**Here every run had one epoch: the figure includes the warm-up**" in rep.path.read_text()


def test_val_curve_without_lightnings_epoch_scalar():
    scalars = pd.DataFrame(
        {"tag": ["train/epoch_time", "val/acc", "train/epoch_time", "val/acc"], "step": [10, 10, 20, 20],
         "value": [1.0, 0.3, 1.0, 0.5]}
    )  # fmt: skip
    assert report.val_curve(scalars) == {1: 0.3, 2: 0.5}


def test_difference_to_the_baseline_has_its_welch_ci_and_holm_adjusted_p(tmp_path, base_cfg):
    accs = {"maxpool": [0.80, 0.82, 0.81], "conv": [0.84, 0.83, 0.86], "avgpool": [0.79, 0.80, 0.78]}
    for arm, values in accs.items():
        write_seeds(tmp_path, base_cfg, values, downsample=arm)
    rep = report.build_report(tmp_path)
    rows = rep.results.set_index("arm")
    raw = {}
    for arm in ("conv", "avgpool"):
        welch = stats.ttest_ind(accs[arm], accs["maxpool"], equal_var=False)
        ci = welch.confidence_interval(0.95)
        r = rows.loc[f"model.downsample={arm}"]
        # (TensorBoard stores float32: 1e-6)
        assert r.welch_p_diff == pytest.approx(np.mean(accs[arm]) - np.mean(accs["maxpool"]), abs=1e-6)
        assert (r.welch_p_diff_ci95_low, r.welch_p_diff_ci95_high) == pytest.approx(
            (ci.low, ci.high), abs=1e-6
        )
        raw[arm] = welch.pvalue
    # Holm over the two tests: the smaller p times 2, the larger times 1, kept monotone
    small, large = sorted(raw.values())
    expected = {p: min(1.0, max(small * 2, large) if p == large else small * 2) for p in raw.values()}
    for arm, p in raw.items():
        assert rows.loc[f"model.downsample={arm}", "welch_p_holm"] == pytest.approx(expected[p], rel=1e-3)
    assert math.isnan(rows.loc["model.downsample=maxpool", "welch_p_holm"])
    table = rep.table.set_index("arm")
    assert table.loc["model.downsample=conv", "Δ vs baseline, pp [95% CI]"].startswith("+3.33 [")
    assert table.loc["model.downsample=maxpool", "p Holm"] == "—"
    text = rep.path.read_text()
    assert "Holm–Bonferroni" in text and "(2 tests)" in text


def _with_shift_curves(consistency: dict[int, float]):
    """write_seeds' run arguments: a test accuracy, then shift curves whose circular consistency is given."""

    def run(acc: float) -> dict[str, Any]:
        return {"test_acc": acc}

    def write(root: Path) -> None:
        for run_dir in root.iterdir():
            tb = next((run_dir / "tb").iterdir())
            writer = SummaryWriter(str(tb))
            for shift, value in consistency.items():
                for curve in ("circular_diag", "linear_diag", "circular_x", "linear_x"):
                    writer.add_scalar(f"shift/{curve}/consistency", value, shift)
                    writer.add_scalar(f"shift/{curve}/acc", 0.8 * value, shift)
            writer.close()

    return run, write


def test_shift_curves_become_a_table_a_csv_and_a_figure(tmp_path, base_cfg):
    for arm, curve in (("maxpool", {0: 1.0, 1: 0.9, 2: 0.8}), ("aps", {0: 1.0, 1: 1.0, 2: 1.0})):
        run, write = _with_shift_curves(curve)
        arm_dir = tmp_path / arm
        write_seeds(arm_dir, base_cfg, [0.8, 0.81], run, downsample=arm)
        write(arm_dir)
    rep = report.build_report(tmp_path)
    frame = pd.read_csv(tmp_path / "shift_robustness.csv")
    aps = frame[(frame.arm == "model.downsample=aps") & (frame.metric == "consistency")]
    assert set(aps["curve"]) == {"circular_diag", "linear_diag", "circular_x", "linear_x"}
    assert (aps["mean"] == 1.0).all() and (aps["n"] == 2).all()
    table = rep.shift_table.set_index("arm")
    assert table.loc["model.downsample=maxpool", "circular 2 px"] == "80.00"
    assert table.loc["model.downsample=aps", "linear 2 px"] == "100.00"
    assert table.loc["model.downsample=aps", "acc 2 px %"] == "80.00"
    assert (tmp_path / "shift_robustness.png").stat().st_size > 10_000
    assert "### Shift robustness" in rep.path.read_text()


def test_a_report_without_shift_curves_has_no_shift_files(built):
    assert not (built.out / "shift_robustness.csv").exists()
    assert "Shift robustness" not in built.path.read_text()


def test_degenerate_runs_leave_the_statistics_with_their_reason(tmp_path, base_cfg):
    # 3 good seeds per arm, and per arm collapsed runs: a constant predictor at chance (consistency 100%, test loss
    # 46.9, as a run once logged), one class predicted, a training loss that became NaN
    write_seeds(tmp_path, base_cfg, [0.80, 0.82, 0.81], lambda a: {"test_acc": a, "consistency": 0.9},
                downsample="maxpool")  # fmt: skip
    write_seeds(tmp_path, base_cfg, [0.84, 0.83, 0.86], lambda a: {"test_acc": a, "consistency": 0.9},
                downsample="conv")  # fmt: skip
    collapsed = {
        "chance": ("maxpool", 0.10, {"test/loss": 46.9}),
        "one_class": ("conv", 0.5, {"test/predicted_classes": 1.0}),
        "nan_loss": ("conv", 0.6, {"train/loss": float("nan")}),
    }
    for name, (arm, acc, scalars) in collapsed.items():
        write_run(tmp_path / name, make_cfg(base_cfg, 9, downsample=arm), test_acc=acc, consistency=1.0,
                  test_scalars=scalars)  # fmt: skip
    rep = report.build_report(tmp_path, tmp_path / "out")
    assert row(rep, "maxpool").n == 3 and row(rep, "conv").n == 3
    assert row(rep, "maxpool").consistency_mean == pytest.approx(0.9)
    assert row(rep, "maxpool").test_acc_mean == pytest.approx(0.81, abs=1e-6)
    text = rep.path.read_text()
    assert "6 completed and counted, 3 completed but degenerate" in text
    left_out = text.split("## Runs not counted")[1]
    assert "### Degenerate" in left_out
    assert "test accuracy 10.00% is at chance (10%)" in left_out and "the test loss 46.9 exploded" in left_out
    assert "it predicts a single class" in left_out and "the training loss is nan" in left_out
    runs = pd.read_csv(rep.out / "runs.csv").set_index("run")
    assert (runs.loc[list(collapsed), "status"] == "degenerate").all()

    kept = report.build_report(tmp_path, tmp_path / "kept", keep_degenerate=True)
    assert row(kept, "maxpool").n == 4 and row(kept, "conv").n == 5
    assert row(kept, "maxpool").consistency_mean == pytest.approx(0.9)  # not the constant predictor's 100%
    assert (
        "degenerate, counted" in pd.read_csv(kept.out / "runs.csv").set_index("run").loc["chance", "reason"]
    )


def test_the_keep_degenerate_flag_of_the_command(tmp_path, base_cfg):
    write_seeds(tmp_path / "runs", base_cfg, [0.80, 0.81, 0.10], downsample="maxpool")
    report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "a")])
    report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "b"), "--keep-degenerate"])
    counted = [pd.read_csv(tmp_path / d / "results.csv")["n"].item() for d in ("a", "b")]
    assert counted == [2, 3]


def test_a_ci_the_runs_cannot_support_is_shown_as_such(tmp_path, base_cfg):
    write_seeds(tmp_path, base_cfg, [0.80, 0.82, 0.81], downsample="maxpool")
    write_seeds(tmp_path, base_cfg, [0.84, 0.83], downsample="conv")  # n = 2: t(1) makes the CI ±12.7 se
    write_seeds(tmp_path, base_cfg, [0.15, 0.99, 0.50], downsample="avgpool")  # a CI below 0 and above 100
    rep = report.build_report(tmp_path, tmp_path / "out")
    table = rep.table.set_index("arm")
    conv, avg = table.loc["model.downsample=conv"], table.loc["model.downsample=avgpool"]
    assert conv["95% CI"] == "— (n < 3)" and conv["Δ vs baseline, pp [95% CI]"] == "+2.50 (CI: n < 3)"
    assert avg["95% CI"] == "— (outside 0–100)"
    assert table.loc["model.downsample=maxpool", "95% CI"].startswith("[")
    results = rep.results.set_index("arm")
    assert math.isnan(results.loc["model.downsample=conv", "test_acc_ci95_low"])
    assert results.loc["model.downsample=avgpool", "test_acc_ci95_note"] == "outside 0–100"


@pytest.mark.parametrize(
    ("fields", "degenerate"),
    [
        ({"test_acc": 0.5, "test_loss": 1.2}, False),
        ({"test_acc": 0.11, "test_loss": 2.3}, True),
        ({"test_acc": 0.5, "test_loss": float("inf")}, True),
        ({"test_acc": 0.5, "test_loss": 30.0}, True),
        ({"test_acc": 0.5, "predicted_classes": 1.0}, True),
        ({"test_acc": 0.5, "predicted_classes": 2.0}, False),
    ],
)
def test_degenerate_reason(fields, degenerate):
    assert bool(report.degenerate_reason(report.Run(Path("r"), "completed", **fields))) == degenerate


def test_arm_labels_name_only_the_keys_that_apply_to_the_arm(tmp_path, base_cfg):
    # a mixed folder: synthetic-data runs (320 images) and image-folder runs, whose synthetic size does nothing
    for source, size in (("synthetic", 320), ("folder", 50000)):
        base = copy.deepcopy(base_cfg)
        base["data"] |= {"source": source, "synthetic_train_size": size}
        write_seeds(tmp_path / source, base, [0.8, 0.81, 0.82], downsample="maxpool")
    rep = report.build_report(tmp_path, tmp_path / "out")
    assert sorted(a.label for a in rep.arms) == ["data.source=folder", "data.source=synthetic"]
    assert rep.keys == ["data.source"]


def test_legends_name_a_key_by_its_last_part_where_that_is_unambiguous():
    from downsample_lab.report.plots import short_labels

    labels = [
        "model.downsample=conv, optim.lr=5.75, model.name=cnn",
        "model.downsample=maxpool, optim.lr=23, optim.name=sgd",
    ]
    assert short_labels(labels) == [
        "downsample=conv, lr=5.75, model.name=cnn",
        "downsample=maxpool, lr=23, optim.name=sgd",
    ]


def test_an_arm_whose_runs_all_collapsed_keeps_its_name_and_is_no_one_s_baseline(tmp_path, base_cfg, capsys):
    # every max-pool run at chance: conv and avgpool keep their labels and are compared with nothing in its place
    write_seeds(tmp_path, base_cfg, [0.10, 0.10, 0.10], downsample="maxpool")
    write_seeds(tmp_path, base_cfg, [0.84, 0.83, 0.86], downsample="conv")
    write_seeds(tmp_path, base_cfg, [0.70, 0.72, 0.71], downsample="avgpool")
    rep = report.build_report(tmp_path, tmp_path / "out")
    assert rep.keys == ["model.downsample"]
    assert [a.label for a in rep.arms] == ["model.downsample=avgpool", "model.downsample=conv"]
    assert all(a.baseline is None for a in rep.arms)
    assert rep.results["welch_p_diff"].isna().all() and rep.results["welch_p"].isna().all()
    assert "**No baseline:** all 3 `model.downsample=maxpool` runs collapsed" in rep.path.read_text()

    only = tmp_path / "only"  # nothing but collapsed runs: the command says so
    write_seeds(only, base_cfg, [0.10, 0.10], downsample="maxpool")
    report.main([str(only), "--out", str(tmp_path / "o")])
    assert "All 2 completed runs collapsed (degenerate): nothing to compare" in capsys.readouterr().out


def test_a_folder_of_bench_runs_only_says_it_has_no_training_run(tmp_path, base_cfg, capsys):
    bench = write_run(tmp_path / "outputs" / "b", make_cfg(base_cfg, 0), test_acc=0.1)
    _hydra_job(bench, "bench")
    report.main([str(tmp_path / "outputs"), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert out.splitlines()[1:] == [
        "no training runs; 1 run of other tools (eval, bench) not compared as arms"
    ]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "holds 1 run of other tools (listed below) and no training run: no arms to compare." in text
    assert "every run found completed" not in text and "No completed run yet" not in out + text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.md"]  # no empty results or plots


def test_an_arm_is_never_tested_against_a_baseline_tested_on_other_images(tmp_path, base_cfg, capsys):
    # A conv run on a folder copy beside max-pool runs on synthetic data: the old fallback (the first max-pool
    # arm) compared them (+17 pp in a new user's trial), visible only in report.md's baseline column.
    write_seeds(tmp_path / "runs", base_cfg, [0.50, 0.52, 0.51], downsample="maxpool")
    folder = {**base_cfg, "data": {**base_cfg["data"], "source": "folder"}}
    write_seeds(tmp_path / "runs", folder, [0.70, 0.71, 0.69], downsample="conv")
    rep = report.build_report(tmp_path / "runs", tmp_path / "out")
    conv = rep.results.set_index("arm").loc["model.downsample=conv, data.source=folder"]
    assert conv.baseline == "" and math.isnan(conv.welch_p) and math.isnan(conv.welch_p_diff)
    assert (
        "has no baseline: no counted max-pool arm was tested on the same images (they differ in `data.source`)"
        in rep.path.read_text()
    )
    report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out2")])
    assert "Note: model.downsample=conv, data.source=folder has no baseline" in capsys.readouterr().out


def test_an_arm_without_an_exact_match_is_tested_against_the_closest_max_pool_arm_and_says_so(
    tmp_path, base_cfg
):
    # The fair study: each arm keeps its own tuned lr, so no max-pool arm matches the conv arm's lr.
    def with_lr(lr: float) -> dict[str, Any]:
        return {**base_cfg, "optim": {**base_cfg["optim"], "lr": lr}}

    write_seeds(tmp_path / "runs", with_lr(0.1), [0.80, 0.81, 0.82], downsample="maxpool", kernel_size=3)
    write_seeds(tmp_path / "runs", with_lr(0.1), [0.70, 0.71, 0.72], downsample="maxpool", kernel_size=5)
    write_seeds(tmp_path / "runs", with_lr(0.4), [0.75, 0.74, 0.76], downsample="conv", kernel_size=5)
    rep = report.build_report(tmp_path / "runs", tmp_path / "out")
    conv = rep.results.set_index("arm").loc["model.downsample=conv, model.kernel_size=5, optim.lr=0.4"]
    assert conv.baseline == "model.downsample=maxpool, model.kernel_size=5, optim.lr=0.1"  # not the first
    assert conv.welch_p_diff == pytest.approx(0.04)
    text = rep.path.read_text()
    assert "which differs from it in `optim.lr` too" in text
    assert text.count("differs from it in") == 1  # the max-pool arms are baselines, not tested


def test_matched_parameter_widths_do_not_keep_an_arm_from_its_max_pool_arm(tmp_path, base_cfg):
    # model.match_params=true widens the pool arms: model.effective_widths differs with the downsampling itself,
    # so it must not count as a setting the arm and its baseline differ in (it sent conv k=5 to maxpool k=3).
    widths = {"maxpool": [6, 12], "conv": [4, 8]}
    for downsample, k, accs in [
        ("maxpool", 3, [0.8, 0.81]),
        ("maxpool", 5, [0.7, 0.72]),
        ("conv", 5, [0.75, 0.74]),
    ]:
        write_seeds(
            tmp_path / "runs",
            base_cfg,
            accs,
            downsample=downsample,
            kernel_size=k,
            effective_widths=widths[downsample],
        )
    rep = report.build_report(tmp_path / "runs", tmp_path / "out")
    conv5 = next(a for a in rep.arms if a.values["model.downsample"] == "conv")
    assert conv5.baseline is not None and conv5.baseline.values["model.kernel_size"] == 5
    assert "differs from it in" not in rep.path.read_text()


def test_without_a_max_pool_arm_an_arm_is_tested_against_the_first_arm_on_its_images(tmp_path, base_cfg):
    # the All-CNN family has no max-pool arm: each arm against the first; never across data sources
    folder = {**base_cfg, "data": {**base_cfg["data"], "source": "folder"}}
    for cfg, name, accs in [
        (base_cfg, "model_c", [0.80, 0.81]),
        (folder, "all_cnn_c", [0.70, 0.72]),
        (folder, "strided_cnn_c", [0.75, 0.74]),
    ]:
        write_seeds(tmp_path / "runs", cfg, accs, downsample="conv", name=name)
    rep = report.build_report(tmp_path / "runs", tmp_path / "out")
    baselines = {
        a.values["model.name"]: a.baseline.values["model.name"] if a.baseline else None for a in rep.arms
    }
    assert baselines == {"model_c": None, "all_cnn_c": None, "strided_cnn_c": "all_cnn_c"}
    text = rep.path.read_text()
    assert "no counted arm before it was tested on the same images (they differ in `data.source`)" in text


def test_runs_are_split_and_compared_by_the_data_they_read_not_its_folder(tmp_path, base_cfg, capsys):
    # The JPEG and the PNG copy (data digests "jpeg…" and "png…"), the PNG copy at two paths: the two copies are
    # two arms each, compared within a copy; one copy at two folders is one arm, with no note.
    def on(root: str) -> dict[str, Any]:
        return {**base_cfg, "data": {**base_cfg["data"], "source": "folder", "root": root}}

    runs = tmp_path / "runs"
    for name, root, digest, downsample, acc in [
        ("mp0", "/data/png", "png111111111", "maxpool", 0.80),
        ("mp1", "/mnt/png", "png111111111", "maxpool", 0.82),
        ("mj0", "/data/jpeg", "jpeg22222222", "maxpool", 0.70),
        ("mj1", "/data/jpeg", "jpeg22222222", "maxpool", 0.71),
        ("cj0", "/data/jpeg", "jpeg22222222", "conv", 0.75),
        ("cj1", "/data/jpeg", "jpeg22222222", "conv", 0.76),
        ("co0", "/data/other", "other3333333", "conv", 0.60),
        ("co1", "/data/other", "other3333333", "conv", 0.61),
    ]:
        seed = int(name[-1])
        write_run(runs / name, make_cfg(on(root), seed, downsample=downsample), test_acc=acc, digest=digest)
    rep = report.build_report(runs, tmp_path / "out")
    assert rep.keys == ["model.downsample", DATA_DIGEST]
    arms = {a.label: a for a in rep.arms}
    png = arms[f"model.downsample=maxpool, {DATA_DIGEST}=png111111111"]
    assert len(png.runs) == 2  # one copy at two folders: one arm
    conv_jpeg = arms[f"model.downsample=conv, {DATA_DIGEST}=jpeg22222222"]
    assert conv_jpeg.baseline is arms[f"model.downsample=maxpool, {DATA_DIGEST}=jpeg22222222"]
    other = arms[f"model.downsample=conv, {DATA_DIGEST}=other3333333"]
    assert other.baseline is None and other.other_images == [DATA_DIGEST]
    text = rep.path.read_text()
    assert "pools runs on" not in text and "read data from" not in text  # the digest settles it
    assert f"**`{DATA_DIGEST}`**: a checksum of the decoded training and test images" in text
    assert f"they differ in `{DATA_DIGEST}`" in text
    assert (
        "`jpeg22222222` `/data/jpeg` (4 runs); `other3333333` `/data/other` (2 runs)" in text
    )  # which is where
    # a run that failed before its HParams were written has no digest, and no "(unset)" in its label
    early = write_run(
        runs / "early", make_cfg(on("/data/png"), 9, downsample="conv"), status="failed", tb_hparams=False
    )
    rep = report.build_report(runs, tmp_path / "out1")
    assert rep.labels[early] == "model.downsample=conv"
    # beside runs on two copies, a run written before runs recorded the digest is an arm of its own
    write_run(runs / "old", make_cfg(on("/data/png"), 5, downsample="maxpool"), test_acc=0.5)
    rep = report.build_report(runs, tmp_path / "out2")
    unset = next(a for a in rep.arms if a.values[DATA_DIGEST] == "(unset)")
    assert unset.label == f"model.downsample=maxpool, {DATA_DIGEST}=(unset)"
    assert all(a.baseline is not unset for a in rep.arms)


def test_runs_older_than_the_digest_pool_with_the_one_copy_beside_them(tmp_path, base_cfg):
    # a sweep continued across the upgrade: its first runs lack the digest, the later ones record one
    def on(root: str) -> dict[str, Any]:
        return {**base_cfg, "data": {**base_cfg["data"], "source": "folder", "root": root}}

    runs = tmp_path / "runs"
    for i, (digest, downsample, acc) in enumerate(
        [
            (None, "maxpool", 0.80),
            ("png111111111", "maxpool", 0.81),
            (None, "conv", 0.70),
            ("png111111111", "conv", 0.71),
        ]
    ):
        write_run(
            runs / str(i),
            make_cfg(on(f"/data/png{i % 2}"), i, downsample=downsample),
            test_acc=acc,
            digest=digest,
        )
    rep = report.build_report(runs, tmp_path / "out")
    assert rep.keys == ["model.downsample"] and [len(a.runs) for a in rep.arms] == [2, 2]
    assert rep.arms[1].baseline is rep.arms[0]
    text = rep.path.read_text()
    assert "pools runs on 2 data folders" in text  # the older runs cannot say which copy they read


def test_bench_runs_timed_on_a_busy_machine_are_flagged(tmp_path, capsys):
    # a new user's bench sweep ran beside a test run: conv +428 % [−80, +13,675] against maxpool, unflagged
    for seed, others in enumerate([0.01, 0.9, 0.05]):
        _bench_run(
            tmp_path / "sweep" / f"{seed}", [f"seed={seed}"], {"maxpool": (1000.0, 900.0)}, others=others
        )
    report.main([str(tmp_path / "sweep")])
    table = pd.read_csv(tmp_path / "sweep" / "bench.csv")
    assert table.others_max.tolist() == [0.9]
    assert "| 0.90 |" in (tmp_path / "sweep" / "report.md").read_text()
    busy = "other processes kept up to 0.90 CPU cores busy while maxpool was timed: their figures are noisy"
    assert f"**Busy machine:** {busy}" in (tmp_path / "sweep" / "report.md").read_text()
    assert f"Note: {busy}" in capsys.readouterr().out


def test_runs_on_other_data_folders_are_pointed_out(tmp_path, base_cfg, capsys):
    # data.root is bookkeeping (a copy may move), so the JPEG and the PNG copy of CIFAR-10 share an arm: say so
    def on(root: str) -> dict[str, Any]:
        return {**base_cfg, "data": {**base_cfg["data"], "source": "folder", "root": root}}

    write_run(tmp_path / "runs" / "m0", make_cfg(on("/data/png"), 0, downsample="maxpool"), test_acc=0.80)
    write_run(tmp_path / "runs" / "m1", make_cfg(on("/data/jpeg"), 1, downsample="maxpool"), test_acc=0.78)
    write_run(tmp_path / "runs" / "c0", make_cfg(on("/data/jpeg"), 0, downsample="conv"), test_acc=0.79)
    write_run(tmp_path / "runs" / "c1", make_cfg(on("/data/jpeg"), 1, downsample="conv"), test_acc=0.77)
    rep = report.build_report(tmp_path / "runs", tmp_path / "out")
    text = rep.path.read_text()
    assert (
        "`model.downsample=maxpool` pools runs on 2 data folders (`data.root`: `/data/jpeg`, `/data/png`)"
        in text
    )
    assert (
        text.count("pools runs on") == 1 and "its Δ measures the copy too" not in text
    )  # they share /data/jpeg
    (tmp_path / "runs" / "m1").rename(
        tmp_path / "m1"
    )  # now every max-pool run read /data/png, every conv one JPEG
    report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out2")])
    out = capsys.readouterr().out
    assert "Note: model.downsample=conv read data from /data/jpeg and its baseline from /data/png" in out

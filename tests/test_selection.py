"""Per-arm selection (``python -m downsample_lab.report.selection``) on a tiny tuning sweep and a tiny final sweep.

The run directories are written as train.py writes them (see test_report.write_run). In the tuning sweep the
test accuracies point the other way from the validation accuracies, so a selection that peeked at the test set
would choose differently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from torch.utils.tensorboard import SummaryWriter

from downsample_lab.report import read, selection
from downsample_lab.study import DATA_DIGEST

from .conftest import run_cli
from .test_report import base_cfg, make_cfg, write_run  # noqa: F401  (base_cfg is a fixture)

# tuning: (arm, lr) → val/acc_best of seeds 100 and 101; test accuracy is 1 - val (misleading on purpose)
TUNE = {
    ("maxpool", 0.1): [0.78, 0.79],
    ("maxpool", 0.2): [0.80, 0.82],
    ("conv", 0.1): [0.84, 0.83],
    ("conv", 0.2): [0.81, 0.80],
}
WINNER = {"maxpool": 0.2, "conv": 0.1}
# final: (arm, lr) → test accuracy of seeds 0, 1, 2
FINAL = {
    ("maxpool", 0.1): [0.50, 0.50, 0.50],
    ("maxpool", 0.2): [0.90, 0.91, 0.92],
    ("conv", 0.1): [0.93, 0.95, 0.94],
    ("conv", 0.2): [0.10, 0.10, 0.10],
}


def _write(
    root: Path,
    base: dict,
    arm: str,
    lr: float,
    seed: int,
    val: float,
    test: float,
    val_size: int = 5000,
    val_curve: list[float] | None = None,
    digest: str | None = None,
    **model: object,
) -> None:
    cfg = make_cfg(base, seed, downsample=arm, **model)
    cfg["optim"]["lr"] = lr
    cfg["data"]["val_size"] = val_size  # 0: the final runs test their final weights (eval.test_weights=auto)
    curve = val_curve or [val - 0.1, val]
    run = write_run(root / f"{arm}_{lr}_{seed}_{val_size}", cfg, val_acc=curve, test_acc=test, digest=digest)
    writer = SummaryWriter(str(next((run / "tb").iterdir())))
    writer.add_scalar(read.TEST_ACC_TTA, test + 0.01, 100)
    writer.close()


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, base_cfg) -> tuple[Path, Path]:  # noqa: F811
    tune, final = tmp_path_factory.mktemp("tune"), tmp_path_factory.mktemp("final")
    for (arm, lr), vals in TUNE.items():
        for seed, val in zip((100, 101), vals, strict=True):
            _write(tune, base_cfg, arm, lr, seed, val, 1 - val)
    for (arm, lr), accs in FINAL.items():
        for seed, acc in enumerate(accs):
            _write(final, base_cfg, arm, lr, seed, 0.5, acc, val_size=0)
    _write(final, base_cfg, "conv", 0.1, 100, 0.5, 0.0, val_size=0)  # a tuning seed: not fresh, left out
    return tune, final


def test_each_arm_gets_its_best_validation_setting_and_fresh_seed_test_accuracy(sweeps, tmp_path):
    tune, final = sweeps
    path, table, commands = selection.build_selection(tune, final, tmp_path)
    assert list(table["arm"]) == ["model.downsample=maxpool", "model.downsample=conv"]
    assert list(table["chosen setting"]) == [f"optim.lr={WINNER['maxpool']}", f"optim.lr={WINNER['conv']}"]
    assert list(table["n"]) == [3, 3]  # the winning setting's three fresh seeds; seed 100 left out
    for arm in ("maxpool", "conv"):
        acc = FINAL[(arm, WINNER[arm])]
        row = table.set_index("arm").loc[f"model.downsample={arm}"]
        assert row["test acc %"] == f"{100 * np.mean(acc):.2f} ± {100 * np.std(acc, ddof=1):.2f}"
        assert row["test acc TTA %"].startswith(f"{100 * (np.mean(acc) + 0.01):.2f}")
    welch = stats.ttest_ind(FINAL[("conv", 0.1)], FINAL[("maxpool", 0.2)], equal_var=False)
    conv = table.set_index("arm").loc["model.downsample=conv"]
    assert conv["p vs maxpool"] == f"{welch.pvalue:.3g}"
    assert conv["p Holm"] == f"{welch.pvalue:.3g}"  # one arm against maxpool: a family of one test
    diff = np.mean(FINAL[("conv", 0.1)]) - np.mean(FINAL[("maxpool", 0.2)])
    ci = welch.confidence_interval(0.95)
    assert (
        conv["Δ vs maxpool, pp [95% CI]"] == f"{diff * 100:+.2f} [{ci.low * 100:+.2f}, {ci.high * 100:+.2f}]"
    )
    text = path.read_text()
    assert "optim.lr=0.1" in text and "test accuracy plays no part" in text
    assert "--weights final" in text and "Holm" in text
    assert any("model.downsample=conv optim.lr=0.1 seed=0,1,2,3,4,5,6,7,8,9" in c for c in commands)


def test_cli_prints_the_final_commands_then_reports(sweeps, tmp_path):
    tune, final = sweeps
    first = run_cli("report.selection", str(tune), "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr[-2000:]
    assert "experiment=ablation_fast model.downsample=maxpool optim.lr=0.2" in first.stdout
    second = run_cli("report.selection", str(tune), "--final", str(final), "--out", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr[-2000:]
    assert (tmp_path / "b" / "selection.md").is_file() and "test acc TTA %" in second.stdout


def test_a_directory_without_runs_is_one_clear_error(tmp_path):
    result = run_cli("report.selection", str(tmp_path))
    assert result.returncode == 2 and "no completed training runs below" in result.stderr


def test_settings_are_ranked_by_the_weights_the_final_runs_test(tmp_path, base_cfg):  # noqa: F811
    # lr 0.1 peaks early (best epoch 0.90) but ends at 0.80; lr 0.2 ends best (0.85) and never peaks higher
    tune, final = tmp_path / "tune", tmp_path / "final"
    for arm in ("maxpool", "conv"):
        for seed in (100, 101):
            _write(tune, base_cfg, arm, 0.1, seed, 0.80, 0.5, val_curve=[0.90, 0.80])
            _write(tune, base_cfg, arm, 0.2, seed, 0.85, 0.5, val_curve=[0.70, 0.85])
    _, by_final, _ = selection.build_selection(tune, out=tmp_path / "a", weights="final")
    _, by_best, _ = selection.build_selection(tune, out=tmp_path / "b", weights="best")
    assert list(by_final["chosen setting"]) == ["optim.lr=0.2"] * 2
    assert list(by_best["chosen setting"]) == ["optim.lr=0.1"] * 2
    # final runs that tested their final weights (data.val_size=0) refuse a ranking by the best epoch
    _write(final, base_cfg, "maxpool", 0.2, 0, 0.5, 0.9, val_size=0)
    with pytest.raises(selection.UserError, match=r"--weights best ranks .* use --weights final"):
        selection.build_selection(tune, final, tmp_path / "c", weights="best")


def test_tuning_runs_on_two_copies_of_the_data_are_refused(tmp_path, base_cfg):  # noqa: F811
    for arm, digest in [("maxpool", "png111111111"), ("conv", "jpeg22222222")]:
        for lr in (0.1, 0.2):
            _write(tmp_path / "tune", base_cfg, arm, lr, 100, 0.8, 0.5, digest=digest)
    with pytest.raises(
        selection.UserError,
        match=r"read different data \(data.digest jpeg22222222: 2 run\(s\), e.g. .*; png111111111: 2 run\(s\), e.g. ",
    ):
        selection.build_selection(tmp_path / "tune", out=tmp_path / "a")


def test_what_follows_from_the_downsampling_is_not_a_setting_of_the_final_commands(tmp_path, base_cfg):  # noqa: F811
    # model.match_params=true records each arm's effective widths; no command can set them
    for arm, widths in [("maxpool", [6, 12]), ("conv", [4, 8])]:
        for lr in (0.1, 0.2):
            _write(tmp_path / "tune", base_cfg, arm, lr, 100, 0.8 + lr, 0.5, effective_widths=widths)
    _, table, commands = selection.build_selection(tmp_path / "tune", out=tmp_path / "a")
    assert list(table["chosen setting"]) == ["optim.lr=0.2"] * 2
    assert all("effective_widths" not in c for c in commands)


def test_tuning_runs_older_than_the_digest_are_taken_with_the_one_copy_beside_them(tmp_path, base_cfg):  # noqa: F811
    for arm in ("maxpool", "conv"):
        _write(tmp_path / "tune", base_cfg, arm, 0.1, 100, 0.8, 0.5)  # written before the digest
        _write(tmp_path / "tune", base_cfg, arm, 0.2, 101, 0.9, 0.5, digest="png111111111")
    _, table, commands = selection.build_selection(tmp_path / "tune", out=tmp_path / "a")
    assert list(table["chosen setting"]) == ["optim.lr=0.2"] * 2
    assert all(DATA_DIGEST not in c for c in commands)


def test_final_runs_on_two_copies_of_the_data_are_refused(sweeps, tmp_path, base_cfg):  # noqa: F811
    tune, _ = sweeps
    final = tmp_path / "final"
    _write(final, base_cfg, "maxpool", 0.2, 0, 0.5, 0.9, val_size=0, digest="png111111111")
    _write(final, base_cfg, "conv", 0.1, 0, 0.5, 0.9, val_size=0, digest="jpeg22222222")
    with pytest.raises(selection.UserError, match=r"the final runs read different data"):
        selection.build_selection(tune, final, tmp_path / "a")

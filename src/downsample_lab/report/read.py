"""Reading run directories: find them, load each into a :class:`Run`, and lay the runs out as one tidy table.

A run directory holds ``status.json`` (:mod:`downsample_lab.run.status`), ``.hydra/config.yaml`` and the TensorBoard
event files under ``tb/``, read with tbparse. Also here: how a hyperparameter value compares
(:func:`canonical`, as TensorBoard's HParams store it) and prints (:func:`value_text`, as a user writes it).
Reads files only; imports neither torch nor Lightning.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from downsample_lab.run import status as run_status
from downsample_lab.study import flatten

# Scalar tags written by train.py (Classifier, EpochThroughput).
TEST_ACC = "test/acc"
TEST_LOSS = "test/loss"
TRAIN_LOSS = "train/loss"
PREDICTED_CLASSES = "test/predicted_classes"  # how many classes the final model predicts on the test set
VAL_ACC = "val/acc"
VAL_ACC_BEST = "val/acc_best"
CONSISTENCY = "test/consistency"
TEST_ACC_TTA = "test/acc_tta"
PARAMS = "model/params"
FLOPS = "model/flops_per_image"
IMAGES_PER_SEC = "train/images_per_sec"
EPOCH = "epoch"  # Lightning's epoch counter, in runs written before train.py stopped logging it
EPOCH_TIME = "train/epoch_time"
SHIFT_PREFIX = (
    "shift/"  # the shift-robustness curves: shift/<mode>_<direction>/<metric>, step = shift in pixels
)

NOT_STARTED = "not started"  # the status of a run that failed before its TensorBoard run existed
INTERRUPTED = run_status.INTERRUPTED  # stopped by Ctrl-C or SIGTERM (status.json), resumable
DEGENERATE = "degenerate"  # the status of a completed run whose model collapsed (see degenerate_reason)
DASH = "—"  # the text of a number or value that is not defined
ABSENT = "(unset)"  # the value of a key that a run's config does not have (e.g. a key added later)

# The final numbers of a run, as attributes of Run and columns of runs_frame().
METRICS = (
    "test_acc",
    "val_acc_best",
    "val_acc_final",
    "consistency",
    "test_acc_tta",
    "test_loss",
    "predicted_classes",
    "params",
    "flops",
    "images_per_sec",
)


@dataclass
class Run:
    """One run directory as the report sees it.

    ``status`` is ``completed`` (counted in the statistics), ``failed``, ``not started`` (failed before
    training began, e.g. a config or resume refused at start-up: no TensorBoard run), ``running`` or
    ``incomplete``; ``reason`` says why a run is not counted. ``task`` is the tool that wrote the run (Hydra's
    job name: ``train``, ``eval``, ``bench``), None when unknown. Accuracies are fractions;
    ``images_per_sec`` is the mean of the per-epoch throughput without the first (warm-up) epoch when there
    are at least two (``throughput_epochs`` counts the epochs it has).
    """

    path: Path
    status: str
    reason: str = ""
    task: str | None = None
    recorded: str | None = None  # the status its status.json records (None: no status.json)
    hparams: dict[str, Any] = field(default_factory=dict)
    hparams_in_tb: bool = False  # False: read from .hydra/config.yaml alone (precision "auto", not what ran)
    test_acc: float | None = None
    val_acc_best: float | None = None
    val_acc_final: float | None = None  # the last val/acc: the final weights' (the lookahead's included)
    consistency: float | None = None
    test_acc_tta: float | None = None  # with test-time augmentation (eval.tta_level > 0)
    test_loss: float | None = None
    predicted_classes: float | None = None  # distinct classes predicted on the test set (runs since issue 19)
    train_loss: float | None = None  # the last logged training loss
    params: float | None = None
    flops: float | None = None
    images_per_sec: float | None = None
    throughput_epochs: int = 0
    val_curve: dict[int, float] = field(default_factory=dict)  # epoch (1-based) → val/acc
    shift: dict[str, dict[int, float]] = field(default_factory=dict)  # shift/... tag → {shift in px: value}

    @property
    def seed(self) -> str:
        """The run's seed as text, or the dash when unknown."""
        return value_text(self.hparams["seed"]) if "seed" in self.hparams else DASH


# ----------------------------------------------------------------------------------------------------------
# Finding and reading runs


def is_run_dir(path: Path) -> bool:
    """A run directory holds ``status.json``, ``.hydra/config.yaml`` or a ``tb/`` folder."""
    return (
        (path / "status.json").is_file()
        or (path / ".hydra" / "config.yaml").is_file()
        or (path / "tb").is_dir()
    )


def find_run_dirs(root: Path) -> list[Path]:
    """Every run directory at or below ``root``, sorted; the search does not descend into a run directory."""
    if is_run_dir(root):
        return [root]
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += find_run_dirs(child)
    return found


def canonical(value: Any) -> Any:
    """A value as TensorBoard's HParams plugin stores it: numbers as floats, lists as JSON, None as "null".

    Values are compared in this form, so that a config's ``true`` equals its HParams' 1.0.
    """
    if isinstance(value, bool | int | float):
        return float(value)
    if value is None:
        return "null"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return value


def value_text(value: Any) -> str:
    """A hyperparameter value as a user writes it on the command line: ``true``, ``0.1``, ``[8, 16]``, ``null``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return json.dumps(value)
    return "null" if value is None else str(value)


def _read_config(path: Path) -> dict[str, Any]:
    """``.hydra/config.yaml`` flattened, or {} when it is absent or unreadable."""
    from omegaconf import OmegaConf  # only needed here; Hydra saved the file, OmegaConf reads it back

    file = path / ".hydra" / "config.yaml"
    if not file.is_file():
        return {}
    try:
        return flatten(OmegaConf.to_container(OmegaConf.load(file), resolve=True))
    except Exception:
        return {}


def merge_hparams(tb: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's hyperparameters: TensorBoard's HParams (what ran, e.g. the resolved precision) over the config.

    Where both agree, the config's typed value is kept (TensorBoard stores ``true`` as 1.0 and lists as JSON).
    """
    merged = dict(config)
    for key, value in tb.items():
        if key not in merged or canonical(merged[key]) != canonical(value):
            merged[key] = value
    return merged


def _last(scalars: pd.DataFrame, tag: str) -> float | None:
    rows = scalars[scalars["tag"] == tag]
    return None if rows.empty else float(rows["value"].iloc[-1])


def _read_events(tb_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Scalars (tag, step, value; one row per tag and step, in step order) and HParams of every event file."""
    from tbparse import SummaryReader

    reader = SummaryReader(str(tb_dir), extra_columns={"wall_time"})
    scalars = reader.scalars
    if scalars.empty:
        scalars = pd.DataFrame(columns=["step", "tag", "value", "wall_time"])
    # A resumed run logs some steps twice: keep the latest write of each.
    scalars = scalars.sort_values(["wall_time"], kind="stable").drop_duplicates(["tag", "step"], keep="last")
    scalars = scalars.sort_values(["step", "wall_time"], kind="stable").reset_index(drop=True)
    hp = reader.hparams
    hparams = {} if hp.empty else dict(zip(hp["tag"], hp["value"], strict=True))
    return scalars, hparams


def val_curve(scalars: pd.DataFrame) -> dict[int, float]:
    """val/acc per epoch (1-based).

    The epoch is the number of ``train/epoch_time`` points (one per finished training epoch, logged at the
    step of that epoch's validation) up to the step; runs written before the project stopped logging
    Lightning's ``epoch`` scalar have that (0-based) instead; else the validation's index.
    """
    val = scalars[scalars["tag"] == VAL_ACC]
    epochs = scalars[scalars["tag"] == EPOCH].drop_duplicates("step", keep="last").set_index("step")["value"]
    ends = np.sort(scalars.loc[scalars["tag"] == EPOCH_TIME, "step"].to_numpy())
    curve = {}
    for i, (step, value) in enumerate(zip(val["step"], val["value"], strict=True)):
        if step in epochs.index:
            epoch = int(epochs[step]) + 1
        elif len(ends):
            epoch = max(int(np.searchsorted(ends, step, side="right")), 1)
        else:
            epoch = i + 1
        curve[epoch] = float(value)
    return curve


def shift_curves(scalars: pd.DataFrame) -> dict[str, dict[int, float]]:
    """The shift-robustness curves a run logged: ``{tag: {shift in pixels: value}}`` (tags ``shift/...``)."""
    rows = scalars[scalars["tag"].astype(str).str.startswith(SHIFT_PREFIX)]
    curves: dict[str, dict[int, float]] = {}
    for tag, step, value in zip(rows["tag"], rows["step"], rows["value"], strict=True):
        curves.setdefault(str(tag), {})[int(step)] = float(value)
    return curves


def _mean_throughput(scalars: pd.DataFrame) -> float | None:
    """Mean of the per-epoch images/s, leaving out the first epoch (warm-up) when there are at least two."""
    values = scalars.loc[scalars["tag"] == IMAGES_PER_SEC, "value"].to_numpy(dtype=float)
    if len(values) >= 2:
        values = values[1:]
    return float(values.mean()) if len(values) else None


def load_run(path: Path) -> Run:
    """Read one run directory: status.json, ``.hydra/config.yaml`` and the event files under ``tb/``.

    Never raises for a broken run: an unreadable file makes the run ``incomplete`` with the reason.
    """
    record, status_problem = run_status.read_status(path)
    config = _read_config(path)
    scalars, tb_hparams, tb_problem = pd.DataFrame(columns=["step", "tag", "value"]), {}, ""
    if (path / "tb").is_dir():
        try:
            scalars, tb_hparams = _read_events(path / "tb")
        except Exception as err:
            tb_problem = f"event files unreadable ({type(err).__name__}: {err})"
    else:
        tb_problem = "no tb/ folder"
    metrics = (record or {}).get("metrics") or {}
    test_acc = _last(scalars, TEST_ACC)
    if test_acc is None and isinstance(metrics.get(TEST_ACC), int | float):
        test_acc = float(metrics[TEST_ACC])  # event file lost, status.json kept the final metrics
    run = Run(
        path=path,
        status="completed",
        hparams=merge_hparams(tb_hparams, config),
        hparams_in_tb=bool(tb_hparams),
        test_acc=test_acc,
        val_acc_best=_last(scalars, VAL_ACC_BEST),
        val_acc_final=_last(scalars, VAL_ACC),
        consistency=_last(scalars, CONSISTENCY),
        test_acc_tta=_last(scalars, TEST_ACC_TTA),
        test_loss=_last(scalars, TEST_LOSS),
        predicted_classes=_last(scalars, PREDICTED_CLASSES),
        train_loss=_last(scalars, TRAIN_LOSS),
        params=_last(scalars, PARAMS),
        flops=_last(scalars, FLOPS),
        images_per_sec=_mean_throughput(scalars),
        throughput_epochs=int((scalars["tag"] == IMAGES_PER_SEC).sum()),
        task=_read_task(path),
        recorded=(record or {}).get("status"),
        val_curve=val_curve(scalars),
        shift=shift_curves(scalars),
    )
    if run.val_acc_best is None and run.val_curve:
        run.val_acc_best = max(run.val_curve.values())
    if run.consistency is None and isinstance(metrics.get(CONSISTENCY), int | float):
        run.consistency = float(metrics[CONSISTENCY])

    state = (record or {}).get("status")
    if state == "failed" and not (path / "tb").is_dir():
        # stopped before its TensorBoard run existed: a config, resume or data error at start-up
        run.status, run.reason = NOT_STARTED, str(record.get("error") or "no error recorded")
    elif state in ("failed", INTERRUPTED):
        run.status, run.reason = state, str(record.get("error") or "no error recorded")
    elif state == "running":
        run.status = "running"
        run.reason = "status.json says running (still training, or killed before it could record a failure)"
    elif test_acc is None:
        problems = "; ".join(p for p in (status_problem, tb_problem) if p)
        run.status, run.reason = (
            "incomplete",
            f"no {TEST_ACC} logged" + (f" ({problems})" if problems else ""),
        )
    elif not run.hparams:
        run.status, run.reason = "incomplete", "no hyperparameters (no HParams in tb/, no .hydra/config.yaml)"
    return run


# CIFAR-10: ten balanced classes. A model that predicts one class everywhere scores exactly CHANCE on the test set
# and its loss is at least that of the uniform prediction, ln(10) = 2.30.
NUM_CLASSES = 10
CHANCE = 1 / NUM_CLASSES
CHANCE_MARGIN = (
    0.02  # "at chance": a test accuracy below CHANCE + 2 pp (the test set's sampling error is ~0.3 pp)
)
EXPLODED_LOSS = 10 * math.log(
    NUM_CLASSES
)  # a test loss 10 times the uniform prediction's: the model diverged


def degenerate_reason(run: Run) -> str:
    """Why a completed run's model is degenerate ('' when it is not): a test accuracy at chance, a non-finite or
    exploded loss, or a single predicted class. Such a run says nothing about its arm's accuracy, and a constant
    predictor is perfectly shift-consistent, so the report leaves it out of the statistics by default."""
    why = []
    if run.test_acc is not None and run.test_acc < CHANCE + CHANCE_MARGIN:
        why.append(f"test accuracy {run.test_acc * 100:.2f}% is at chance ({CHANCE * 100:.0f}%)")
    for name, loss in (("test", run.test_loss), ("training", run.train_loss)):
        if loss is not None and not math.isfinite(loss):
            why.append(f"the {name} loss is {loss}")
    if run.test_loss is not None and math.isfinite(run.test_loss) and run.test_loss > EXPLODED_LOSS:
        why.append(f"the test loss {run.test_loss:.3g} exploded (> {EXPLODED_LOSS:.1f}, 10x a uniform guess)")
    if run.predicted_classes is not None and run.predicted_classes <= 1:
        why.append("it predicts a single class")
    return "; ".join(why)


def _read_task(path: Path) -> str | None:
    """The tool that wrote the run: Hydra's job name in ``.hydra/hydra.yaml`` (``train``, ``eval``, ``bench``)."""
    import yaml  # a plain read: the file's interpolations need not resolve

    try:
        name = yaml.safe_load((path / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["name"]
    except Exception:  # absent or unreadable: decided from the config below
        return None
    return str(name) if name else None


def is_training_run(run: Run) -> bool:
    """A run of ``python -m downsample_lab.train``: by the job name Hydra recorded, else by its config.

    Bench runs have a model config too, so the job name decides where it is known; without it, eval runs are
    told apart by having no model config. (Training runs have a ``ckpt_path`` too, null unless resumed.)
    """
    if run.task is not None:
        return run.task == "train"
    return any(key.startswith("model.") for key in run.hparams)


def runs_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """The runs as one tidy table, one row per run, that the statistics and ``runs.csv`` are made from.

    Columns: ``path``, ``status``, ``reason``, ``task``, ``seed`` (text), the final numbers of :data:`METRICS`
    (NaN where not logged), ``throughput_epochs``, ``epochs`` (validation points), and every hyperparameter
    as ``hparams.<key>`` (NaN where a run lacks the key, its own value otherwise: lists stay lists).
    """
    records = [
        {
            "path": r.path,
            "status": r.status,
            "reason": r.reason,
            "task": r.task,
            "seed": r.seed,
            **{m: getattr(r, m) for m in METRICS},
            "throughput_epochs": r.throughput_epochs,
            "epochs": len(r.val_curve),
            "hparams": r.hparams,
        }
        for r in runs
    ]
    columns = ["path", "status", "reason", "task", "seed", *METRICS, "throughput_epochs", "epochs"]
    if not records:
        return pd.DataFrame(columns=columns)
    frame = pd.json_normalize(records, max_level=1)
    frame[list(METRICS)] = frame[list(METRICS)].astype(float)  # None → NaN, also where no run logged it
    return frame

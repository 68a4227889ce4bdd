"""Build the Lightning Trainer, the loggers and callbacks that every entry point shares."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams.api_pb2 import (
    DataType,
    Experiment,
    HParamInfo,
    MetricInfo,
    MetricName,
    Status,
)
from tensorboard.plugins.hparams.metadata import (
    EXPERIMENT_TAG,
    PLUGIN_DATA_VERSION,
    PLUGIN_NAME,
    SESSION_END_INFO_TAG,
    SESSION_START_INFO_TAG,
)
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo

from downsample_lab import compat, runs
from downsample_lab.callbacks import ProgressBar
from downsample_lab.config import TrainConfig, check_accelerator, plain
from downsample_lab.console import quiet_libraries
from downsample_lab.models import effective_widths
from downsample_lab.resolvers import concurrent_jobs, runs_on_cuda, sweep_overrides

log = logging.getLogger(__name__)

# The final metrics that TensorBoard's HParams tab shows beside each run's choices, in its column order: what
# the study compares first (accuracy, then what it costs).
HPARAM_METRICS = (
    "test/acc",
    "val/acc_best",
    "train/images_per_sec",
    "model/params",
    "test/consistency",
    "model/flops_per_image",
)
TTA_METRIC = "test/acc_tta"  # listed after test/acc in runs whose config turns eval.tta on

# Keys that tell the runs of the study apart, marked as differing in every run's HParams even when the sweep
# does not vary them (or there is no sweep), so that they lead TensorBoard's HParams table.
ALWAYS_DIFFERS = ("model.downsample", "seed")


def uses_cuda(trainer_cfg: DictConfig) -> bool:
    """Whether the ``trainer`` config group runs on a CUDA GPU."""
    return runs_on_cuda(trainer_cfg.accelerator)


def resolve_precision(trainer_cfg: DictConfig) -> tuple[str, str]:
    """Turn ``trainer.precision=auto`` into the fastest precision the hardware runs well, and say why."""
    if trainer_cfg.precision != "auto":
        return str(trainer_cfg.precision), "as configured"
    if uses_cuda(trainer_cfg):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed", "auto: the GPU supports bfloat16"
        return "16-mixed", "auto: the GPU lacks bfloat16"
    # On CPUs with native bf16 (AVX512-BF16 or AMX) autocast roughly doubles the speed of a conv step; on
    # others it emulates bf16 and is slower than float32.
    if any(compat.cpu_bf16_features().values()):
        return "bf16-mixed", "auto: the CPU has native bfloat16 (AVX512-BF16/AMX)"
    return "32-true", "auto: the CPU has no native bfloat16"


def _hydra_job_command(local_rank: int) -> tuple[list[str], str]:
    """The command that starts DDP process ``local_rank`` of the current Hydra job.

    Lightning's own version re-runs ``sys.argv`` with ``hydra.run.dir``: inside a multirun that re-launches the
    whole sweep in every process, into the wrong directory. This one re-runs only this job's overrides, into
    this job's output directory, with its own log file and without rewriting the job's ``.hydra/`` files.
    """
    import __main__

    hydra_cfg = HydraConfig.get()
    module = __main__.__spec__.name if __main__.__spec__ is not None else "downsample_lab.train"
    command = [sys.executable, "-m", module, *hydra_cfg.overrides.task]
    command += [
        # quoted: a sweep job's directory name holds '=' and ',' from its overrides
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name={hydra_cfg.job.name}_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, hydra_cfg.runtime.cwd


_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "PL_GLOBAL_SEED")


@contextmanager
def distributed_job() -> Iterator[None]:
    """Leave no distributed state behind a job, so the next job of a multirun can start its own processes.

    Lightning keeps the process group alive after ``fit`` (``test`` reuses it) and its launcher leaves
    ``LOCAL_RANK``/``WORLD_SIZE``/... in the environment, from which the next Trainer in the same process would
    conclude that someone else launched it.
    """
    saved = {k: os.environ.get(k) for k in _LAUNCHER_ENV}
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build_trainer(
    trainer_cfg: DictConfig,
    *,
    run_dir: Path,
    callbacks: Iterable[L.Callback],
    logger: Any,
    plugins: list[Any] | None = None,
) -> L.Trainer:
    """A ``lightning.Trainer`` from the ``trainer`` config group; every key of the group is a Trainer argument."""
    if HydraConfig.initialized():
        compat.install_hydra_subprocess_cmd(_hydra_job_command)
    check_accelerator(trainer_cfg)
    kwargs = plain(trainer_cfg)
    kwargs["precision"], why = resolve_precision(trainer_cfg)
    log.info("Device %s; precision %s (%s).", describe_device(trainer_cfg), kwargs["precision"], why)
    quiet_libraries()
    callbacks = list(callbacks)
    # A bar only where a person watches it: redirected to a file, tqdm's redraws are noise (EpochSummary's
    # lines say the same); and none in the jobs of a parallel sweep, whose bars would overwrite each other. It
    # redraws at the logging interval.
    kwargs["enable_progress_bar"] = (
        trainer_cfg.enable_progress_bar and sys.stderr.isatty() and concurrent_jobs() == 1
    )
    if kwargs["enable_progress_bar"]:
        callbacks.append(ProgressBar(refresh_rate=trainer_cfg.log_every_n_steps))
    # The "Model: ..." log line has parameters and FLOPs; Lightning's summary would show 0 FLOPs.
    return L.Trainer(
        **kwargs,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        plugins=plugins,
    )


def describe_device(trainer_cfg: DictConfig) -> str:
    """Where ``trainer.accelerator`` runs, and why (``auto`` takes a CUDA GPU when there is one)."""
    how = "auto" if trainer_cfg.accelerator == "auto" else "as configured"
    if uses_cuda(trainer_cfg) and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name()}, {how})"
    if uses_cuda(trainer_cfg):
        return f"cuda ({how})"
    if trainer_cfg.accelerator == "auto":
        return "cpu (auto: no CUDA GPU found)"
    return f"{trainer_cfg.accelerator} ({how})"


class StudyTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger without the ``epoch`` scalar Lightning adds to every epoch-level log.

    That counter would be the first card of TensorBoard's Time Series dashboard (tags sort by name and the
    first two groups open): a line that only says time passes, above the accuracy curves.
    """

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = {k: v for k, v in metrics.items() if k != "epoch"}
        if metrics:
            super().log_metrics(metrics, step)


def tensorboard_logger(run_dir: Path, run_name: str, purge_step: int | None = None) -> TensorBoardLogger:
    """TensorBoard run ``<run_dir>/tb/<run_name>``; ``tensorboard --logdir outputs`` finds every run of every sweep.

    ``purge_step`` (for a resumed run) hides what the interrupted run logged from that step on, so the resumed
    run draws one continuous curve.
    """
    extra = {} if purge_step is None else {"purge_step": purge_step}  # passed on to the SummaryWriter
    return StudyTensorBoardLogger(
        save_dir=str(run_dir), name="tb", version=run_name, default_hp_metric=False, **extra
    )


# ----------------------------------------------------------------------------------------------------------
# HParams: what TensorBoard's HParams tab shows


def _schema_kinds(schema: type, prefix: str = "") -> dict[str, str]:
    """``{"data.train_subset": "number", "data.augment": "bool", ...}``: each key's HParams type, from the schema.

    Types come from the schema, not from a run's values, so that a key has one type in every run: a nullable
    count is a number in each run that sets it, never the string "null" in one and a number in another.
    """
    kinds: dict[str, str] = {}
    for name, hint in typing.get_type_hints(schema).items():
        if dataclasses.is_dataclass(hint):
            kinds.update(_schema_kinds(hint, f"{prefix}{name}."))
            continue
        # `int | None` → [int]; `list[int]`, `Any` → themselves (text)
        args = [a for a in typing.get_args(hint) if a is not type(None)] if _is_union(hint) else [hint]
        if len(args) == 1 and args[0] is bool:
            kinds[f"{prefix}{name}"] = "bool"
        elif len(args) == 1 and args[0] in (int, float):
            kinds[f"{prefix}{name}"] = "number"
        else:  # str, lists, and the keys that take several types (trainer.devices, limit_*_batches)
            kinds[f"{prefix}{name}"] = "string"
    return kinds


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else "string"


def hparam_values(cfg: Mapping[str, Any], kinds: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The flattened config as HParams values, each of its key's kind, and the kind of every key.

    A bool stays a bool (TensorBoard would show ``1.0000``); a null number or bool is left out (an empty cell);
    strings, lists and nulls of string keys are text as the config writes them.
    """
    values: dict[str, Any] = {}
    key_kinds: dict[str, str] = {}
    for key, value in runs.flatten(cfg).items():
        kind = kinds.get(key) or (_kind_of(value) if value is not None else "string")
        key_kinds[key] = kind
        if value is None and kind != "string":
            continue
        if kind == "string":
            value = value if isinstance(value, str) else json.dumps(value)
        elif kind == "number":
            value = float(value) if isinstance(value, float) else int(value)
        values[key] = value
    return values, key_kinds


def swept_keys(flat_keys: Iterable[str]) -> set[str]:
    """The config keys the current Hydra sweep varies, read from the sweep's ``multirun.yaml``.

    A job's own Hydra config holds only its own values; the sweep's overrides (``model.downsample=maxpool,conv``
    on the command line, ``hydra.sweeper.params`` of an experiment) are in the file the sweeper writes at the
    sweep's start. A swept config group (``model=model_c,all_cnn_c``) counts as its ``name`` key, or as all of
    its keys when it has none. Empty outside a multirun.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return set()
    try:
        sweep = OmegaConf.load(Path(HydraConfig.get().sweep.dir) / "multirun.yaml").hydra
        overrides = sweep_overrides(sweep)
    except Exception as err:  # a damaged or foreign file: the always-differing keys still lead
        log.debug("Could not read the sweep's overrides: %s", err)
        return set()
    flat_keys = set(flat_keys)
    keys = set()
    for override in overrides:
        key = override.key_or_group.lstrip("+~")
        if key in flat_keys:
            keys.add(key)
        elif f"{key}.name" in flat_keys:
            keys.add(f"{key}.name")
        else:
            keys.update(k for k in flat_keys if k.startswith(f"{key}."))
    return keys


def _plugin_summary(tag: str, **content: Any) -> Summary:
    data = HParamsPluginData(version=PLUGIN_DATA_VERSION, **content)
    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=data.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


def hparams_summaries(
    values: Mapping[str, Any],
    kinds: Mapping[str, str],
    metrics: Iterable[str],
    differs: Iterable[str],
    group_name: str = "",
) -> list[Summary]:
    """The experiment, session-start and session-end summaries of TensorBoard's HParams plugin.

    The experiment lists every key with its type and ``differs`` set for ``differs``: the plugin sorts its
    columns by (not differs, name) and the table opens on the first of them, so these lead. It lists the
    metrics in the order given (the plugin keeps it). TensorBoard reads the experiment of one run of the
    logdir, so every run writes the same one. ``group_name`` is the session's name in the Trial ID column.
    """
    dtype = {"bool": DataType.DATA_TYPE_BOOL, "number": DataType.DATA_TYPE_FLOAT64,
             "string": DataType.DATA_TYPE_STRING}  # fmt: skip
    differs = set(differs)
    infos = []
    for key in sorted(kinds):
        info = HParamInfo(name=key, type=dtype[kinds[key]], differs=key in differs)
        if kinds[key] == "bool":
            info.domain_discrete.extend([False, True])
        infos.append(info)
    experiment = Experiment(
        hparam_infos=infos, metric_infos=[MetricInfo(name=MetricName(tag=m)) for m in metrics]
    )

    start = SessionStartInfo(group_name=group_name)
    for key, value in values.items():
        if kinds[key] == "bool":
            start.hparams[key].bool_value = value
        elif kinds[key] == "number":
            start.hparams[key].number_value = value
        else:
            start.hparams[key].string_value = value
    return [
        _plugin_summary(EXPERIMENT_TAG, experiment=experiment),
        _plugin_summary(SESSION_START_INFO_TAG, session_start_info=start),
        _plugin_summary(SESSION_END_INFO_TAG, session_end_info=SessionEndInfo(status=Status.STATUS_SUCCESS)),
    ]


def hparam_metrics(cfg: DictConfig) -> tuple[str, ...]:
    """:data:`HPARAM_METRICS`, with ``test/acc_tta`` after ``test/acc`` when the run tests with TTA."""
    if OmegaConf.select(cfg, "eval.tta_level", default=0) > 0:
        return (HPARAM_METRICS[0], TTA_METRIC, *HPARAM_METRICS[1:])
    return HPARAM_METRICS


def trial_name(values: Mapping[str, Any], differs: Iterable[str], run_dir: Path) -> str:
    """The run's name in the HParams table's Trial ID column: its differing values first, then its directory.

    ``conv seed=1 · outputs/train-multirun/<time>/3_...``: the column shows about 15 characters, so the values
    that tell the run apart come first; the directory keeps the name unique (TensorBoard merges sessions of
    the same name into one row).
    """
    first, last = "model.downsample", "seed"
    ordered = [first, *sorted(set(differs) - {first, last}), last]
    parts = []
    for key in (k for k in ordered if k in differs and k in values):
        value = values[key]
        if key == first:
            parts.append(str(value))
        else:
            parts.append(
                f"{key.rsplit('.', 1)[-1]}={json.dumps(value) if isinstance(value, bool) else value}"
            )
    return f"{' '.join(parts)} · {run_dir}"


@rank_zero_only
def log_hparams(
    logger: TensorBoardLogger, cfg: DictConfig, precision: str, metrics: Iterable[str] | None = None
) -> None:
    """Write the run's whole config to TensorBoard's HParams tab, paired with the final ``metrics``.

    The keys the sweep varies (:func:`swept_keys`) and :data:`ALWAYS_DIFFERS` are marked as differing, so the
    table opens on them; each key has the type of its schema entry in every run. Lightning's
    ``log_hyperparams(params, metrics)`` would also log each metric as a scalar of value 0 at step 0, a false
    point on every accuracy curve, and type booleans as numbers; so this writes the summaries itself.
    ``precision`` is the one that ran (``trainer.precision=auto`` resolved).
    """
    config = plain(cfg)
    config["trainer"]["precision"] = precision  # what ran, not "auto"
    if cfg.model.name == "cnn":  # what was built: differs from model.widths with model.match_params=true
        config["model"]["effective_widths"] = effective_widths(cfg.model)
    values, kinds = hparam_values(config, _schema_kinds(TrainConfig))
    differs = {k for k in ALWAYS_DIFFERS if k in kinds} | swept_keys(kinds)
    if cfg.model.name != "cnn":
        differs.add("model.name")
    metrics = hparam_metrics(cfg) if metrics is None else tuple(metrics)
    run_dir = Path(logger.save_dir)
    summaries = hparams_summaries(values, kinds, metrics, differs, trial_name(values, differs, run_dir))
    writer = compat.tensorboard_file_writer(logger)
    for summary in summaries:
        writer.add_summary(summary)

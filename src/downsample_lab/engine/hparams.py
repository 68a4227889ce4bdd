"""TensorBoard's HParams tab: every run's whole config beside its final metrics, typed by the schema, with the
keys that tell the study's runs apart leading the table. Written as the plugin's summaries by hand (see
:func:`log_hparams` for why not Lightning's ``log_hyperparams``)."""

from __future__ import annotations

import dataclasses
import json
import logging
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

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

from downsample_lab import compat
from downsample_lab.config import TrainConfig, plain
from downsample_lab.study import ARM_KEY, DATA_DIGEST, flatten

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
ALWAYS_DIFFERS = (ARM_KEY, "seed")


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
    for key, value in flatten(cfg).items():
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


def swept_keys(swept: Iterable[str], flat_keys: Iterable[str]) -> set[str]:
    """The config keys a sweep varies, from the keys and groups it sweeps (``swept``:
    :func:`downsample_lab.run.sweep.swept_overrides`).

    A swept config group (``model=model_c,all_cnn_c``) counts as its ``name`` key, or as all of its keys when it
    has none.
    """
    flat_keys = set(flat_keys)
    keys = set()
    for key in swept:
        key = key.lstrip("+~")
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
    first, last = ARM_KEY, "seed"
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
    logger: TensorBoardLogger,
    cfg: DictConfig,
    precision: str,
    widths: list[int],
    swept: Iterable[str] = (),
    metrics: Iterable[str] | None = None,
    data_digest: Callable[[], str] | None = None,
) -> None:
    """Write the run's whole config to TensorBoard's HParams tab, paired with the final ``metrics``.

    The keys the sweep varies (:func:`swept_keys`) and :data:`ALWAYS_DIFFERS` are marked as differing, so the
    table opens on them; each key has the type of its schema entry in every run. Lightning's
    ``log_hyperparams(params, metrics)`` would also log each metric as a scalar of value 0 at step 0, a false
    point on every accuracy curve, and type booleans as numbers; so this writes the summaries itself.
    ``precision`` is the one that ran (``trainer.precision=auto`` resolved), ``widths`` the stage widths the
    network was built with, ``swept`` the keys and groups the sweep varies. ``data_digest``, called here (on
    the first process only), gives the data's checksum, recorded as :data:`~downsample_lab.study.DATA_DIGEST`.
    """
    config = plain(cfg)
    config["trainer"]["precision"] = precision  # what ran, not "auto"
    if data_digest is not None:
        section, key = DATA_DIGEST.split(".")
        config[section][key] = digest = data_digest()
        log.info("Data: %s (digest of its decoded images and labels).", digest)
    if cfg.model.name == "cnn":  # what was built: differs from model.widths with model.match_params=true
        config["model"]["effective_widths"] = list(widths)
    values, kinds = hparam_values(config, _schema_kinds(TrainConfig))
    differs = {k for k in ALWAYS_DIFFERS if k in kinds} | swept_keys(swept, kinds)
    if cfg.model.name != "cnn":
        differs.add("model.name")
    metrics = hparam_metrics(cfg) if metrics is None else tuple(metrics)
    run_dir = Path(logger.save_dir)
    summaries = hparams_summaries(values, kinds, metrics, differs, trial_name(values, differs, run_dir))
    writer = compat.tensorboard_file_writer(logger)
    for summary in summaries:
        writer.add_summary(summary)

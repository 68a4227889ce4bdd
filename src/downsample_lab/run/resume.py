"""Resuming, in one place: a run or a sweep continued from its directory alone, the checkpoint it continues from
read and checked once, and the command that goes on after an interruption.

- Before Hydra (:func:`downsample_lab.run.argv.prepare_argv`): ``resume=true hydra.run.dir=<run>`` (or ``-m resume=true
  hydra.sweep.dir=<sweep>``) gets the run's saved overrides (``.hydra/overrides.yaml``, or the sweep's
  ``multirun.yaml``) in front of the command line's; a directory that holds no run is refused, creating nothing.
- In the job (:func:`resume_point`): the checkpoint is read once (``weights_only=True``) and compared with the
  run's config; a damaged one, one without training state or one of another config stops the run in one line.
- After an interruption (:func:`resume_advice`): the exact command that continues it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from downsample_lab import compat
from downsample_lab.config import plain
from downsample_lab.errors import ConfigError, DataError, UserError
from downsample_lab.run.sweep import SWEEP_RECORD, launcher_overrides
from downsample_lab.study import BOOKKEEPING_KEYS, flatten_text

log = logging.getLogger("downsample_lab")


def is_true(value: Any) -> bool:
    """Whether an override's value reads as true (``resume=true``, ``resume=True``)."""
    return value is True or str(value).lower() == "true"


def _key(o: Any) -> str:
    return o.key_or_group if o.package is None else f"{o.key_or_group}@{o.package}"


def merge_overrides(saved: list[str], given: list[str]) -> list[str]:
    """``saved`` with every key that ``given`` also sets replaced in place, then ``given``'s other overrides.

    In place, so that a resumed sweep enumerates its jobs in the order (and so under the numbers and
    directory names) of the sweep it continues.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    new = {_key(o): o.input_line for o in parser.parse_overrides(given)}
    merged = []
    for o in parser.parse_overrides(saved):
        merged.append(new.pop(_key(o), o.input_line))
    return merged + list(new.values())


def saved_overrides(directory: Path, multirun: bool) -> list[str] | None:
    """The task overrides a run (``.hydra/overrides.yaml``) or a sweep (``multirun.yaml``) was started with."""
    try:
        if multirun:
            return [str(o) for o in OmegaConf.load(directory / SWEEP_RECORD).hydra.overrides.task]
        return [str(o) for o in OmegaConf.load(directory / ".hydra" / "overrides.yaml")]
    except Exception:  # no such file, or not a run's: resume_point says what is missing
        return None


def check_resume_target(directory: str | None, where: str, multirun: bool, overrides: list[Any]) -> None:
    """Refuse ``resume=true`` (raise ConfigError) where there is nothing to continue, before Hydra creates the
    directory: no directory given (and no ``ckpt_path``), a directory that does not exist, or one that holds no
    run (``.hydra/``, ``status.json``, ``checkpoints/``) or, for ``-m``, no sweep (``multirun.yaml``)."""
    if any(o.key_or_group == "ckpt_path" and o.value() not in (None, "null") for o in overrides):
        return  # a checkpoint named outright: train reads and checks it
    what = "sweep" if multirun else "run"
    example = "outputs/train-multirun/<time>" if multirun else "outputs/train/<run>"
    if directory is None:
        raise ConfigError(
            f"resume=true needs the {what} to continue: add {where}={example} (or ckpt_path=<file.ckpt>)"
        )
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"resume=true but {where}={directory} does not exist; pass the directory of the {what} to continue"
        )
    markers = (SWEEP_RECORD,) if multirun else (".hydra", "status.json", "checkpoints")
    if not any((path / m).exists() for m in markers):
        raise ConfigError(
            f"resume=true but {directory} holds no {what} (no {' or '.join(markers)}); pass the directory of "
            f"the {what} to continue, e.g. {where}={example}"
        )


def sweep_record(argv: list[str]) -> Path | None:
    """``<sweep dir>/multirun.yaml`` when ``argv`` resumes a sweep that has one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = compat.hydra_args_parser().parse_args(argv[1:])
    if not args.multirun:
        return None
    overrides = OverridesParser.create().parse_overrides(args.overrides)
    if not any(o.key_or_group == "resume" and is_true(o.value()) for o in overrides):
        return None
    directory = next((str(o.value()) for o in overrides if o.key_or_group == "hydra.sweep.dir"), None)
    path = Path(directory).expanduser() / SWEEP_RECORD if directory else None
    return path if path is not None and path.is_file() else None


def resume_point(cfg: DictConfig, out: Path) -> tuple[Path, int] | None:
    """The checkpoint to continue from and its global step, or None to start afresh.

    ``ckpt_path`` names it; ``resume=true`` means ``<run dir>/checkpoints/last.ckpt``, which a sweep job may
    lack (it never started, or was killed before its first checkpoint) and then starts afresh. The file is read
    here (``weights_only=True``) so that a damaged one, one without training state or one from a run with
    another config stops the run with one sentence before anything is built.
    """
    if cfg.ckpt_path is not None:
        path = Path(cfg.ckpt_path).expanduser()
    elif cfg.resume:
        path = out / "checkpoints" / "last.ckpt"
        if not path.is_file():
            # A sweep job that never started, or was killed before its first checkpoint; or a DDP process
            # (LOCAL_RANK > 0) started by a process that took that decision already.
            if HydraConfig.get().mode == RunMode.MULTIRUN or int(os.environ.get("LOCAL_RANK", 0)) > 0:
                log.info("resume=true: %s holds no checkpoint yet, so this job starts from scratch.", out)
                return None
            if (out / ".hydra" / "overrides.yaml").is_file():
                raise ConfigError(
                    f"resume=true but the run {out} wrote no checkpoint before it stopped, so there is nothing to "
                    f"continue; start it again: {restart_command()}"
                )
            raise ConfigError(
                f"resume=true but {path} does not exist; pass the interrupted run's directory with "
                "hydra.run.dir=<run dir> (or a checkpoint with ckpt_path=<file.ckpt>), or drop resume=true"
            )
    else:
        return None
    import torch  # here: the checks before it need no torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(
            f"cannot resume from checkpoint {path} ({reason}); it is damaged or not a checkpoint, so pass an "
            "earlier one with ckpt_path=<file.ckpt> or start a new run without resume=true"
        ) from None
    if not isinstance(ckpt, dict) or "loops" not in ckpt or "optimizer_states" not in ckpt:
        raise UserError(
            f"cannot resume from checkpoint {path}: it holds no training state; pass a last.ckpt or "
            "best-*.ckpt written by downsample_lab.train"
        )
    _check_same_run(cfg, ckpt.get("run_config"), path)
    _check_same_data(cfg, ckpt.get("data_digest"), path)
    return path, int(ckpt["global_step"])


def _check_same_data(cfg: DictConfig, saved: str | None, path: Path) -> None:
    # data.root may change (a copy that moved: bookkeeping), the images may not. Reads the splits through the
    # cache (~0.5 s for CIFAR-10; the fit reads them again).
    if saved is None:  # a checkpoint written before the digest existed
        return
    from downsample_lab.data.sources import SPLITS, data_digest, split_of

    now = data_digest([split_of(cfg.data, split) for split in SPLITS])
    if now != saved:
        raise DataError(
            f"cannot resume from checkpoint {path}: the run trained on data of digest {saved}, and "
            f"data.root={cfg.data.root} holds data of digest {now}; point data.root at the copy the run started on"
        )


def _check_same_run(cfg: DictConfig, saved: dict[str, Any] | None, path: Path) -> None:
    # The checkpoint carries the config it was trained with; continuing it under another one would mix two runs.
    if saved is None:
        log.warning("Checkpoint %s records no run config (written by an older version): not compared.", path)
        return
    now, then = flatten_text(plain(cfg)), flatten_text(saved)
    differ = [
        k for k in sorted(now.keys() | then.keys()) if k not in BOOKKEEPING_KEYS and now.get(k) != then.get(k)
    ]
    if differ:
        keys = "; ".join(f"{k}={now.get(k)} here but {then.get(k)} in the run" for k in differ)
        raise ConfigError(
            f"cannot resume from checkpoint {path}: {len(differ)} key(s) differ from the run that wrote it: "
            f"{keys}; drop those overrides (resume=true hydra.run.dir=<run> alone takes the run's own), only "
            f"{', '.join(sorted(BOOKKEEPING_KEYS - {'resume', 'ckpt_path'}))} may change"
        )


def _hydra_value(key: str, value: str) -> str:
    """``key=value`` as one shell word that Hydra's override parser reads back as ``value``."""
    if not re.fullmatch(r"[\w\-./:@%+]*", value):  # '=', ',', '[', '~', spaces... need Hydra's quotes
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return shlex.quote(f"{key}={value}")


def shown(path: Path | str) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def resume_advice(directory: Path) -> str:
    """How to go on with the interrupted training run of ``directory``: the exact command, or that it restarts.

    A single run continues with ``resume=true hydra.run.dir=<run>``, a sweep job with the sweep's own
    ``-m resume=true hydra.sweep.dir=<sweep>`` (which skips the completed jobs); both from the directory alone.
    Before the first checkpoint there is nothing to continue: a single run must start again.
    """
    hydra_cfg = HydraConfig.get()
    has_checkpoint = (directory / "checkpoints" / "last.ckpt").is_file()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        command = sweep_resume_command(hydra_cfg)
        if has_checkpoint:
            return f"continue the sweep (this job from its last checkpoint) with: {command}"
        return f"this job had no checkpoint yet and starts again when the sweep goes on: {command}"
    if has_checkpoint:
        return "continue it with: python -m downsample_lab.train resume=true " + _hydra_value(
            "hydra.run.dir", shown(directory)
        )
    return f"it had no checkpoint yet, so it must start again: {restart_command()}"


# The overrides a command that resumes a sweep adds to the sweep's own (e.g. a data.root fixed after a failure):
# multirun.yaml keeps the sweep's first ones, so the command that continues it again must give them too. Set by
# run.argv in the sweep's process; an environment variable, so that a parallel sweep's workers see them too.
ADDED_OVERRIDES_ENV = "DOWNSAMPLE_LAB_RESUME_ADDED"


def remember_added_overrides(overrides: list[str]) -> None:
    """Have :func:`sweep_resume_command` give ``overrides`` too (this process resumes a sweep with them)."""
    if overrides:
        os.environ[ADDED_OVERRIDES_ENV] = json.dumps(overrides)
    else:
        os.environ.pop(ADDED_OVERRIDES_ENV, None)


def _added() -> list[str]:
    return json.loads(os.environ.get(ADDED_OVERRIDES_ENV, "[]"))


def sweep_resume_command(hydra_cfg: Any) -> str:
    """The command that continues the sweep of ``hydra_cfg`` (a ``hydra`` node), with the launcher it ran with
    and the overrides a resuming command added (:func:`remember_added_overrides`)."""
    words = [
        *launcher_overrides(hydra_cfg),
        "resume=true",
        _hydra_value("hydra.sweep.dir", shown(hydra_cfg.sweep.dir)),
        *(shlex.quote(o) for o in _added()),
    ]
    return " ".join(["python -m downsample_lab.train -m", *words])


def restart_command() -> str:
    """The command that starts the current training run again from scratch, in a new run directory."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("resume=", "+resume="))]
    return " ".join(["python -m downsample_lab.train", *(shlex.quote(o) for o in overrides)])

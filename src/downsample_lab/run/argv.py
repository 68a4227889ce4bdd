"""The command line before Hydra reads it: what every entry point's ``main()`` does first.

- A mistyped key (``model.downsampl=conv``), an unknown config (``model=fsat``), an override Hydra cannot
  parse and a sweep experiment without ``-m`` end with one line and exit code 2, with a did-you-mean where one
  fits. Hydra would print a few lines with a ``+key`` hint (adding the key would fail our schema anyway) and
  exit 1. The checks are Hydra's own parser plus the config schema (:mod:`downsample_lab.config`); nothing is
  composed.
- ``resume=true hydra.run.dir=<run>`` (or ``-m resume=true hydra.sweep.dir=<sweep>``) puts the run's saved
  overrides (``.hydra/overrides.yaml``, or the sweep's ``multirun.yaml``) in front of the command line's, so a
  run resumes from its directory alone. ``train`` compares the result with the checkpoint's config.
- A DDP worker process dies with the process that launched it (:func:`~downsample_lab.run.ddp.die_with_parent`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from downsample_lab import compat
from downsample_lab.config import config_dir
from downsample_lab.config import keys as config_keys
from downsample_lab.errors import ConfigError, UserError, did_you_mean, exit_with_error
from downsample_lab.run import resolvers
from downsample_lab.run.ddp import LAUNCHER_PID_ENV, die_with_parent
from downsample_lab.run.exit import freeze_at_exit
from downsample_lab.run.resume import (
    check_resume_target,
    is_true,
    merge_overrides,
    remember_added_overrides,
    saved_overrides,
    sweep_record,
)


def _schema_keys(schema: type) -> list[str]:
    """Every key a user may set in ``schema``, its groups (``model``) before their keys (``model.name``)."""
    keys: list[str] = []
    for key in config_keys.schema_keys(schema):
        parts = key.name.split(".")
        keys += [g for g in (".".join(parts[:i]) for i in range(1, len(parts))) if g not in keys]
        keys.append(key.name)
    return keys


def check_overrides(overrides: list[Any], config_name: str, schema: type) -> None:
    """Raise ConfigError for an override of a key the schema lacks, or of a config a group lacks."""
    keys = _schema_keys(schema)
    groups = set(config_keys.groups(config_name))
    for o in overrides:
        key = o.key_or_group
        if o.is_hydra_override() or o.is_delete() or o.is_force_add() or o.package is not None:
            continue
        if key in groups:
            options = config_keys.options(key)
            if o.is_discrete_sweep():
                values = list(o.sweep_string_iterator())
            else:
                values = [] if o.is_sweep_override() else [o.value()]
            for value in values:
                if value is not None and str(value) not in ("null", *options):
                    raise ConfigError(
                        f"{key}={value} is not a {key} config{did_you_mean(str(value), options)} "
                        f"(configs/{key}/ has: {', '.join(options)})"
                    )
            continue
        if o.is_add():
            if key in keys:
                raise ConfigError(f"+{key}: {key} is already a config key; set it without the +")
            continue  # a new key: validate() names it if the schema has no place for it
        if key not in keys:
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            siblings = [k for k in keys if "." in k and k.rsplit(".", 1)[0] == parent]
            if siblings:
                has = f" (the {parent} group has: {', '.join(k.rsplit('.', 1)[1] for k in siblings)})"
            else:
                has = f" ({config_name} has: {', '.join(k for k in keys if '.' not in k)})"
            raise ConfigError(f"{key} is not a config key{did_you_mean(key, keys)}{has}")


def _check_launcher_overrides(overrides: list[Any]) -> None:
    """Raise ConfigError for a ``hydra.launcher.n_jobs`` that is not a whole number of jobs (joblib's -1 = one
    per CPU core)."""
    for o in overrides:
        if o.key_or_group == "hydra.launcher.n_jobs" and not o.is_sweep_override():
            value = o.value()
            if isinstance(value, bool) or not isinstance(value, int) or value == 0 or value < -1:
                raise ConfigError(
                    f"hydra.launcher.n_jobs={value} is not a number of jobs: give how many jobs of the sweep run at "
                    "once (1, 2, ...; -1 for one per CPU core), with hydra/launcher=parallel"
                )


def _sweep_experiment(overrides: list[Any]) -> str | None:
    """The name of a chosen experiment that is a sweep (sets ``hydra.sweeper.params``), if any."""
    for o in overrides:
        if o.key_or_group == "experiment" and not o.is_sweep_override() and o.value() is not None:
            path = config_dir() / "experiment" / f"{o.value()}.yaml"
            if path.is_file() and OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params"):
                return str(o.value())
    return None


def prepare_argv(argv: list[str], config_name: str, schema: type) -> list[str]:
    """Check ``argv``'s overrides (raise UserError) and return it with a resumed run's overrides filled in."""
    from hydra.errors import OverrideParseException

    args = compat.hydra_args_parser().parse_args(argv[1:])
    if args.hydra_help or args.shell_completion or args.info or args.experimental_rerun:
        return argv
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except OverrideParseException as err:
        bad = str(getattr(err, "override", "") or "")
        key, _, value = bad.partition("=")
        example = f"'{key}=\"{value}\"'" if value else "'key=\"value\"'"
        raise ConfigError(
            f"cannot read the override {bad or '(one of them)'}: Hydra needs a value that holds '=', ',', '[', ']', "
            f"'~' or spaces in quotes, e.g. {example}"
        ) from None
    check_overrides(overrides, config_name, schema)
    if args.help:
        _print_help(
            config_name,
            schema,
            [o.input_line for o in overrides if not (o.is_hydra_override() or o.is_sweep_override())],
        )
    _check_launcher_overrides(overrides)
    if args.cfg and args.multirun:
        shown = " ".join(o.input_line for o in overrides if not o.is_sweep_override())
        raise ConfigError(
            f"--cfg {args.cfg} prints the config of one run and cannot be combined with -m; drop -m (and the "
            f"swept values) to see the config a sweep's jobs start from: python -m downsample_lab.{config_name} "
            f"{shown + ' ' if shown else ''}--cfg {args.cfg}"
        )
    swept = next((o for o in overrides if o.is_sweep_override()), None)
    if not args.multirun and swept is not None:
        key, values = swept.input_line.split("=", 1)
        raise ConfigError(
            f"{swept.input_line} is a sweep: add -m to run one job per value; or, if {key} takes a list, "
            f"write it in quoted brackets, '{key}=[{values}]', and if its value is text with commas, in quotes, "
            f"'{key}=\"{values}\"'"
        )
    if not args.multirun and not args.cfg and (name := _sweep_experiment(overrides)):
        raise ConfigError(
            f"experiment={name} is a sweep (it sets hydra.sweeper.params); add -m to run it: "
            f"python -m downsample_lab.{config_name} -m experiment={name} ..."
        )
    remember_added_overrides([])  # (set below for a resumed sweep)
    resume = any(o.key_or_group == "resume" and is_true(o.value()) for o in overrides)
    where = "hydra.sweep.dir" if args.multirun else "hydra.run.dir"
    directory = next((str(o.value()) for o in overrides if o.key_or_group == where), None)
    if not resume:
        return argv
    check_resume_target(directory, where, args.multirun, overrides)
    if directory is None:
        return argv
    saved = saved_overrides(Path(directory).expanduser(), args.multirun)
    if saved is None:
        return argv
    given = list(args.overrides)
    rest = list(argv[1:])
    for token in given:  # the flags (and their values) stay where they were
        rest.remove(token)
    # What this command adds to the sweep's own overrides, for the command that continues it; the parallel
    # launcher's are sweep_resume_command's own, any other launcher's are added ones.
    parallel = any(o.key_or_group == "hydra/launcher" and o.value() == "parallel" for o in overrides)
    said = {"resume", "hydra.sweep.dir", *(["hydra/launcher"] if parallel else [])}
    remember_added_overrides([
        o.input_line for o in overrides
        if args.multirun and o.input_line not in saved and o.key_or_group not in said
        and not (parallel and o.key_or_group.startswith("hydra.launcher."))
    ])  # fmt: skip
    return [argv[0], *rest, *merge_overrides(saved, given)]


def _print_help(config_name: str, schema: type, overrides: list[str]) -> None:
    """Print ``--help`` (:func:`downsample_lab.run.help.render_help`) and exit 0."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from downsample_lab.run.help import render_help

    try:
        text = render_help(config_name, schema, overrides)
    except (HydraException, OmegaConfBaseException) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"cannot compose the config for --help ({first})") from None
    print(text)
    sys.exit(0)


def check_multirun(argv: list[str], config_name: str, schema: type) -> int:
    """For ``-m``: compose and validate every job of the sweep before the first starts
    (:func:`downsample_lab.run.sweep.check_sweep`; raise ConfigError naming a bad job). Returns the number of
    jobs checked. Not for a resumed sweep (``resume=true``): it skips its completed jobs, and a job refused now
    (e.g. by a newer rule) is reported as it starts, without holding back the others."""
    from downsample_lab.run.sweep import check_sweep, forget_check

    forget_check()  # until this command line's jobs are checked, Hydra's sweeper checks them (hydra/sweeper=checked)
    args = compat.hydra_args_parser().parse_args(argv[1:])
    if not args.multirun or args.help or args.hydra_help or args.shell_completion or args.info or args.cfg:
        return 0
    if args.config_dir or args.config_path:
        return 0  # configs from elsewhere: their jobs are Hydra's to compose (and its sweeper checks them)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(args.overrides)
    if any(o.key_or_group == "resume" and is_true(o.value()) for o in overrides):
        return 0  # a resumed sweep: its completed jobs are skipped, the others checked as they start
    resolvers.register()  # the YAML's resolvers, for composing each job
    return check_sweep(
        args.overrides, args.config_name or config_name, schema
    )  # e.g. --config-name bench_overhead


def check_run(argv: list[str], config_name: str, schema: type) -> bool:
    """For a single run (no ``-m``) in a directory of Hydra's choosing: compose and validate its config as the run
    would, before Hydra creates the directory, so that a bad value leaves no timestamped folder behind (raise
    ConfigError, the run's own line). Not where ``hydra.run.dir`` names the directory (a scheduler's: the run writes
    the reason to its status.json), for a resume (its checks read the run's records) nor for a DDP worker (its
    launcher checked). Returns whether it checked."""
    args = compat.hydra_args_parser().parse_args(argv[1:])
    if args.multirun or args.help or args.hydra_help or args.shell_completion or args.info or args.cfg:
        return False
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import open_dict

    from downsample_lab.config import validate
    from downsample_lab.data.config import check_data_files
    from downsample_lab.device import check_accelerator
    from downsample_lab.run.sweep import compose_config

    overrides = OverridesParser.create().parse_overrides(args.overrides)
    if "LOCAL_RANK" in os.environ or any(
        o.key_or_group == "resume" and is_true(o.value()) for o in overrides
    ):
        return False
    if any(o.key_or_group == "hydra.run.dir" for o in overrides):
        return (
            False  # a directory named outright (a scheduler's): the run records why it failed in status.json
        )
    resolvers.register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose_config(config_name, list(args.overrides))
    finally:
        GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)  # for the resolvers that read Hydra's node
    with open_dict(cfg):
        del cfg.hydra
    typed = validate(cfg, schema)
    if "trainer" in typed:
        check_accelerator(typed.trainer)
    if "optim" in typed:  # a tool that trains; eval's data keys are its checkpoint's (eval checks them)
        check_data_files(typed.data)
    return True


def run(hydra_main: Callable[[], Any], config_name: str, schema: type) -> Any:
    """Run the ``@hydra.main`` function ``hydra_main`` on the checked and completed command line."""
    die_with_parent()
    freeze_at_exit()
    from downsample_lab.console import quiet_libraries

    quiet_libraries()
    if "LOCAL_RANK" not in os.environ:  # this process launches the run (and any DDP workers)
        os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    try:
        sys.argv = prepare_argv(sys.argv, config_name, schema)
        check_multirun(sys.argv, config_name, schema)
        check_run(sys.argv, config_name, schema)
    except UserError as err:
        exit_with_error(err)
    record = sweep_record(sys.argv)
    saved = record.read_bytes() if record is not None else None
    try:
        return hydra_main()
    except KeyboardInterrupt:  # Ctrl-C outside a job's training loop (e.g. in a parallel sweep's launcher)
        sys.exit(130)  # as a shell reports a process ended by SIGINT; the sweep's summary says what stopped
    finally:
        # Hydra's launcher rewrites multirun.yaml at every start; a resumed sweep keeps the one it was started
        # with, as a resumed run keeps its .hydra/ (configs/hydra/default.yaml, output_subdir).
        if saved is not None and record.read_bytes() != saved:
            record.write_bytes(saved)

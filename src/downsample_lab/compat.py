"""Every use of a private Lightning, Hydra, OmegaConf or torch API, in one place.

Each helper says why the project needs it and when it can go. ``tests/test_compat.py`` has a fast test per
helper that fails when the private name moves or stops doing what the helper relies on, so an upgrade of a
library breaks that test, not a training run (or worse, nothing at all).

One private use lives outside this module, because Hydra requires it there: the ``checked`` sweeper
(``src/hydra_plugins/downsample_lab_sweeper``) subclasses ``hydra._internal.core_plugins.basic_sweeper.BasicSweeper``
and reads the batches its ``sweep`` sets (``overrides``); ``tests/test_sweeper.py`` runs a real ``sweep`` to guard it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if (
    TYPE_CHECKING
):  # imported where used: run/argv.py imports this module, and the command line starts without Lightning
    import lightning as L
    import torch

# ----------------------------------------------------------------------------------------------------------
# Lightning

# The name Lightning's DDP launcher (``_SubprocessScriptLauncher._call_children_scripts``) looks up, in its own
# module's globals, to build the command of each extra DDP process when Hydra is running.
HYDRA_SUBPROCESS_CMD = "_hydra_subprocess_cmd"


def install_hydra_subprocess_cmd(command: Callable[[int], tuple[Sequence[str], str]]) -> None:
    """Make Lightning start each extra DDP process of a Hydra job with ``command(local_rank)``.

    Why: Lightning's own command re-runs ``sys.argv`` with ``hydra.run.dir``; inside a multirun that relaunches
    the whole sweep in every process. Lightning offers no hook for it (the launcher takes no command argument).
    When it can go: when Lightning's launcher runs only the current job (or takes a command), or when DDP inside a
    multirun runs through a per-job launcher. Installed for the process; idempotent.
    """
    from lightning.pytorch.strategies.launchers import subprocess_script

    setattr(subprocess_script, HYDRA_SUBPROCESS_CMD, command)


def load_combined_loader_states(trainer: L.Trainer) -> None:
    """Hand a checkpoint's training-loader state to the loader, as Lightning's fit loop would have.

    Why: Lightning bug #20550 (open in 2.6): ``configure_optimizers`` reading ``trainer.estimated_stepping_batches``
    sets up the loader before the loop state is restored, so the saved position in the epoch never reaches
    ``TensorBatches.load_state_dict``. A no-op without a saved state. When it can go: once #20550 is fixed.
    """
    trainer.fit_loop._load_combined_loader_states()


def is_last_batch(trainer: L.Trainer) -> bool:
    """Whether the training batch that just ran is the last of its epoch.

    Why: Lightning exposes it only on its loop objects (``fit_loop.epoch_loop.batch_progress``), which are not
    public API. When it can go: if Lightning passes it to ``on_train_batch_end`` or puts it on the Trainer.
    """
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


def logger_step(trainer: L.Trainer) -> int:
    """The step Lightning gives what is logged in the current training step (its loggers' x axis).

    Why: Lightning's logger connector logs a step's values at ``fit_loop.epoch_loop._batches_that_stepped``
    (the batches stepped before this one), which is not public API, and differs from ``global_step`` by one after
    some resumes; ``Classifier`` sends ``train/loss`` to the logger itself (``self.log`` costs ~1 ms of host time
    per call), at the steps and with the step Lightning would use. When it can go: if ``self.log`` gets cheap.
    """
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)


def is_log_step(trainer: L.Trainer) -> bool:
    """Whether Lightning hands the current training step's logged values to the loggers
    (``trainer.log_every_n_steps``, counted on :func:`logger_step`, as its logger connector decides). True from
    the step's start to its ``on_train_batch_end``: Lightning counts the step only after that hook.

    Why and when it can go: as :func:`logger_step`.
    """
    return (logger_step(trainer) + 1) % trainer.log_every_n_steps == 0


def set_callback_metric(trainer: L.Trainer, name: str, value: torch.Tensor) -> None:
    """Put ``value`` in ``trainer.callback_metrics`` as ``self.log`` would (read by callbacks and after a fit).

    Why: ``trainer.callback_metrics`` is a property; writing into the dict it returns relies on it being the logger
    connector's own ``_callback_metrics`` (kept until the next ``fit``/``validate``/``test`` resets it). Needed for
    the value ``Classifier`` logs without ``self.log`` (see :func:`logger_step`). When it can go: with it.
    """
    trainer._logger_connector._callback_metrics[name] = value


# The attribute Lightning sets on the LightningModule around every hook call (``trainer.call``), ~40 times a
# step. ``Classifier.__setattr__`` stores it directly, skipping nn.Module's checks (~1 µs a call, ~40 µs of host
# time per step; timeit, 2026-11-26). When it can go: if Lightning stops setting it per hook, or nn.Module.__setattr__ becomes cheap.
HOOK_NAME_ATTR = "_current_fx_name"


def tensorboard_file_writer(logger: Any) -> Any:
    """The ``FileWriter`` under a Lightning ``TensorBoardLogger``, to write raw HParams summaries.

    Why: ``SummaryWriter.add_hparams`` writes each run into a subfolder and allows no typed domains or metric
    list; Lightning's own ``log_hyperparams`` goes through the same private call. When it can go: when
    ``SummaryWriter`` exposes its file writer or an ``add_summary``.
    """
    return logger.experiment._get_file_writer()


# ----------------------------------------------------------------------------------------------------------
# Hydra and OmegaConf


def hydra_args_parser() -> Any:
    """Hydra's own command-line parser (``-m``, ``--help``, overrides), to read a command line before Hydra does.

    Why: the entry points check overrides and fill in a resumed run's overrides before ``hydra.main`` runs;
    Hydra has no public parser. When it can go: if Hydra exposes one, or the checks move into a Hydra callback.
    """
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


# ----------------------------------------------------------------------------------------------------------
# torch


def cpu_bf16_features() -> dict[str, bool]:
    """Whether this CPU has native bfloat16: ``{"avx512_bf16": ..., "amx": ...}``.

    Why: ``trainer.precision=auto`` picks bf16-mixed on CPUs that run it natively (it is slower elsewhere), and
    the benchmark records it; torch has no public query. When it can go: when ``torch.cpu`` publishes one.
    """
    import torch

    return {
        "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
        "amx": bool(torch.cpu._is_amx_tile_supported()),
    }


def lerp_all_(ends: list[torch.Tensor], starts: list[torch.Tensor], weight: float) -> None:
    """``e.lerp_(s, weight)`` for each pair, in one fused call over the list (no Python loop per tensor).

    Why: torch's multi-tensor ops (``torch._foreach_*``, which torch's own optimizers use) have no public name.
    When it can go: when torch publishes them.
    """
    import torch

    torch._foreach_lerp_(ends, starts, weight)


def copy_all_(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """``t.copy_(s)`` for each pair, in one fused call; see :func:`lerp_all_`."""
    import torch

    torch._foreach_copy_(targets, sources)

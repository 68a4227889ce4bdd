"""Hydra's basic sweeper without its second composition of every job before the first starts.

``python -m downsample_lab.<tool> -m ...`` checks every job of a sweep before Hydra runs
(:func:`downsample_lab.run.sweep.check_sweep`: each job's config composed and validated against the schema, a
bad job named in one sentence). Hydra's basic sweeper then composes every job once more, for the same purpose
(``validate_batch_is_legal``): 70–90 ms a job on a 2-core CPU, 0.6 s for 8 jobs and 2.4 s for the 27 of
``experiment=ablation_fast_cpu``, serial, before the first job and while the pool or the GPU waits.
:class:`CheckedSweeper` skips that pass when the project's check covered every job of the sweep, and is the
basic sweeper in everything else. The configs of train, eval and bench select it (``override hydra/sweeper:
checked``); a sweep that the check leaves to Hydra (a resumed sweep, ``glob(...)`` values, configs from
``--config-dir``) or of another config than the one checked is validated by Hydra as before.

A Hydra plugin lives in the ``hydra_plugins`` namespace package, where Hydra finds it (its plugin rule). No
``from __future__ import annotations`` here: Hydra runs this module outside ``sys.modules`` when it scans for
plugins, where a dataclass with string annotations cannot be built.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf  # private: see tests
from hydra.core.config_store import ConfigStore


@dataclass
class CheckedSweeperConf(BasicSweeperConf):
    """``hydra/sweeper=checked``: the basic sweeper's keys (``max_batch_size``, ``params``)."""

    _target_: str = "hydra_plugins.downsample_lab_sweeper.checked_sweeper.CheckedSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper", name="checked", node=CheckedSweeperConf, provider="downsample_lab"
)


class CheckedSweeper(BasicSweeper):
    """Hydra's basic sweeper; a sweep whose every job the command line's check validated is not composed twice."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from downsample_lab.run.sweep import checked_jobs

        planned = sum(len(b) for b in self.overrides or [])  # the sweep's jobs, in its batches
        assert self.config is not None
        if planned and checked_jobs(self.config.hydra.job.config_name) == planned:
            return
        super().validate_batch_is_legal(batch)

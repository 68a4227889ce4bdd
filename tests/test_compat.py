"""One fast test per private-API workaround of downsample_lab.compat: each fails when the library changes so that
the workaround stops taking effect (a name moves, or Lightning stops reading it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies.launchers import subprocess_script
from lightning.pytorch.utilities import CombinedLoader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.summary_pb2 import Summary

from downsample_lab import compat
from downsample_lab.run.ddp import _LAUNCHER_ENV


def test_lightnings_ddp_launcher_starts_a_hydra_jobs_processes_with_our_command(monkeypatch):
    monkeypatch.setattr(subprocess_script, compat.HYDRA_SUBPROCESS_CMD, None)  # restored after the test
    for key in _LAUNCHER_ENV:
        monkeypatch.setenv(key, "0")  # the launcher sets them; restored after the test
    monkeypatch.delenv("LOCAL_RANK")
    started: list[tuple[list[str], str | None]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda command, env, cwd: started.append((command, cwd)))
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))

    compat.install_hydra_subprocess_cmd(lambda local_rank: ([f"ours-{local_rank}"], "/job"))
    launcher = subprocess_script._SubprocessScriptLauncher(
        LightningEnvironment(), num_processes=3, num_nodes=1
    )
    launcher._call_children_scripts()
    assert started == [(["ours-1"], "/job"), (["ours-2"], "/job")]


def test_a_resumed_fit_loop_hands_the_saved_state_to_the_training_loader():
    class Stateful:
        def __init__(self) -> None:
            self.loaded = None

        def __iter__(self):
            return iter(range(3))

        def __len__(self) -> int:
            return 3

        def state_dict(self) -> dict:
            return {}

        def load_state_dict(self, state: dict) -> None:
            self.loaded = state

    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    loader = Stateful()
    loop = trainer.fit_loop
    loop._combined_loader = CombinedLoader(loader, "max_size_cycle")
    loop._combined_loader_states_to_load = [{"position": 7}]
    loop.epoch_progress.increment_ready()  # an epoch started and not finished: the loop restarts mid-epoch
    loop.restarting = True
    compat.load_combined_loader_states(trainer)
    assert loader.loaded == {"position": 7}


@pytest.fixture(scope="module")
def hook_trace(tmp_path_factory) -> dict[str, list]:
    """A 3-batch fit of Lightning's BoringModel: is_last_batch after each batch, and the hook names Lightning set."""
    trace: dict[str, list] = {
        "last": [],
        "hooks": [],
        "logger_steps": [],
        "log_steps": [],
        "callback_metrics": [],
    }

    class Traced(BoringModel):
        def __setattr__(self, name, value) -> None:
            if name == compat.HOOK_NAME_ATTR:
                trace["hooks"].append(value)
            super().__setattr__(name, value)

        def training_step(self, batch, batch_idx):
            trace["logger_steps"].append(compat.logger_step(self.trainer))
            trace["log_steps"].append(compat.is_log_step(self.trainer))
            compat.set_callback_metric(self.trainer, "traced", torch.tensor(float(batch_idx)))
            return super().training_step(batch, batch_idx)

    class LastBatch(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            trace["last"].append(compat.is_last_batch(trainer))

    trainer = L.Trainer(
        default_root_dir=tmp_path_factory.mktemp("boring"), max_epochs=1, limit_train_batches=3,
        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[LastBatch()], log_every_n_steps=2,
    )  # fmt: skip
    trainer.fit(Traced())
    trace["callback_metrics"] = dict(trainer.callback_metrics)
    return trace


def test_is_last_batch_is_true_after_an_epochs_last_batch_only(hook_trace):
    assert hook_trace["last"] == [False, False, True]


def test_the_logger_step_counts_the_batches_stepped_before_this_one(hook_trace):
    assert hook_trace["logger_steps"] == [0, 1, 2]


def test_the_log_step_is_every_log_every_n_steps_th(hook_trace):
    assert hook_trace["log_steps"] == [False, True, False]  # log_every_n_steps=2: the 2nd of 3 steps


def test_a_callback_metric_set_in_a_step_is_there_after_the_fit(hook_trace):
    assert float(hook_trace["callback_metrics"]["traced"]) == 2.0


def test_lightning_sets_the_hook_name_attribute_that_classifier_fast_paths(hook_trace):
    assert "training_step" in hook_trace["hooks"]


def test_the_tensorboard_file_writer_writes_raw_summaries(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="run")
    writer = compat.tensorboard_file_writer(logger)
    writer.add_summary(Summary(value=[Summary.Value(tag="x", simple_value=2.5)]))
    writer.flush()
    events = EventAccumulator(str(Path(logger.log_dir)))
    events.Reload()
    assert [e.value for e in events.Scalars("x")] == [2.5]


def test_hydras_parser_reads_the_flags_cli_checks():
    args = compat.hydra_args_parser().parse_args(["-m", "seed=1", "model=fast"])
    assert args.multirun and args.overrides == ["seed=1", "model=fast"]
    assert not any((args.help, args.hydra_help, args.shell_completion, args.info, args.experimental_rerun))


def test_cpu_bf16_features_agree_with_the_cpus_flags():
    features = compat.cpu_bf16_features()
    assert set(features) == {"avx512_bf16", "amx"} and all(isinstance(v, bool) for v in features.values())
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to compare with")
    flags = cpuinfo.read_text().split()
    # torch may refuse a feature the OS does not enable, never report one the CPU lacks
    assert features["avx512_bf16"] <= ("avx512_bf16" in flags)
    assert features["amx"] <= ("amx_tile" in flags)


def test_fused_lerp_and_copy_update_every_tensor_of_the_list():
    ends, starts = [torch.zeros(3), torch.zeros(2, 2)], [torch.ones(3), torch.full((2, 2), 4.0)]
    compat.lerp_all_(ends, starts, 0.25)
    assert torch.equal(ends[0], torch.full((3,), 0.25)) and torch.equal(ends[1], torch.ones(2, 2))
    compat.copy_all_(starts, ends)
    assert all(torch.equal(s, e) for s, e in zip(starts, ends, strict=True))

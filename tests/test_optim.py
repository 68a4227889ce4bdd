"""The optimiser and its schedule (optim.build_optimizer), as the LightningModule and the bench's raw loop use it."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from downsample_lab.config import validate
from downsample_lab.optim.build import build_optimizer
from downsample_lab.optim.config import Schedule

from .conftest import compose_config


@pytest.mark.parametrize("schedule", list(Schedule.__members__))
def test_every_schedule_runs_any_number_of_steps_and_ends_low(schedule):
    # Short runs included: a warm-up of exactly one step (0.2 of 5) once divided by zero inside OneCycleLR.
    cfg = OmegaConf.to_object(validate(compose_config("train", [f"optim.schedule={schedule}"])).optim)
    for total in range(1, 13):
        net = torch.nn.Linear(2, 2)
        opt, sched = build_optimizer(net, cfg, total, max_epochs=1, batch_size=256)
        lrs = []
        for _ in range(total):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert all(0 <= lr <= cfg.lr * (1 + 1e-6) for lr in lrs), (total, lrs)
        if schedule in ("onecycle", "cosine", "triangular") and total >= 4:
            assert lrs[-1] < max(lrs), (total, lrs)  # annealed: the last step is below the peak

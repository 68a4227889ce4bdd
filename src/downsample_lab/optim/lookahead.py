"""airbench94's lookahead, part of its recipe (``optim.lookahead``): every ``every`` steps the weights move to an
EMA of themselves, and stay there.

:class:`LookaheadEMA` is the update on a network's tensors, which both training paths run: the Lightning module
(through :class:`Lookahead`, the callback its ``configure_callbacks`` returns, so every Trainer that fits it runs
it: ``train`` and the bench) and the bench's hand-written loop.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from downsample_lab import compat


class LookaheadEMA:
    """The lookahead's update of ``net``'s floating-point state (parameters and BatchNorm running statistics).

    At step s of T, every ``every`` steps: ``ema ← lerp(ema, weights, 1 - a)`` with
    ``a = decay**every · (s/T)**power``, then ``weights ← ema``. ``a`` is near 0 early (the EMA follows the
    weights) and grows to ``decay**every`` at the end, so the averaging acts in the last part of training. After
    the last step (T), the weights are set to the EMA once more.

    No host sync per step: ``a`` is a Python float computed from the step counter, and the update is two fused
    multi-tensor calls over the tensors on the device.
    """

    def __init__(
        self, net: nn.Module, total_steps: int, every: int = 5, decay: float = 0.95, power: float = 3.0
    ) -> None:
        self.total = max(1, int(total_steps))
        self.every, self.decay, self.power = every, decay, power
        # state_dict() tensors share storage with the parameters and buffers: updating them updates the net.
        self.live = [t for t in net.state_dict().values() if t.is_floating_point()]
        self.ema = [t.detach().clone() for t in self.live]

    def step(self, step: int) -> None:
        """After optimiser step ``step`` (1-based: the number of steps taken)."""
        if step % self.every == 0:
            self._update(self.decay**self.every * (min(step, self.total) / self.total) ** self.power)
        if step >= self.total:
            self._update(1.0)  # the final copy: the weights become the EMA

    @torch.no_grad()
    def _update(self, decay: float) -> None:
        compat.lerp_all_(self.ema, self.live, 1.0 - decay)
        compat.copy_all_(self.live, self.ema)


class Lookahead(L.Callback):
    """:class:`LookaheadEMA` in a Lightning fit, over ``pl_module.net`` and ``pl_module.total_steps()`` steps.

    The EMA is kept in checkpoints, so a resumed run continues it.
    """

    def __init__(self, every: int = 5, decay: float = 0.95, power: float = 3.0) -> None:
        self.every, self.decay, self.power = every, decay, power
        self.ema: LookaheadEMA | None = None
        self._restored: list[torch.Tensor] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.ema = LookaheadEMA(pl_module.net, pl_module.total_steps(), self.every, self.decay, self.power)
        if self._restored is not None:  # from a checkpoint
            self.ema.ema = [
                e.to(t.device, t.dtype) for e, t in zip(self._restored, self.ema.live, strict=True)
            ]

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        assert self.ema is not None
        self.ema.step(trainer.global_step)  # counts this batch's optimiser step

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema.ema if self.ema is not None else self._restored}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict.get("ema")

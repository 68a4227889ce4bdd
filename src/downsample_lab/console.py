"""What the libraries print: only what a user of this project needs.

Lightning logs, at INFO, tips for its cloud products (litlogger, litmodels), "GPU available / TPU available"
lines, a model summary whose FLOPs column reads 0 (it counts only when the model defines an example input)
and, with bf16, a warning that the summary cannot size bf16 weights. The training log's own "Model: ..." line
has the parameters and FLOPs (``torch.utils.flop_counter``), so Lightning's summary is off
(``enable_model_summary=False`` in :func:`downsample_lab.engine.trainer.build_trainer`), its INFO messages are dropped
and its warnings kept; a deprecation warning that Lightning itself triggers inside ``torch.utils._pytree`` is
dropped too. The progress bar is :class:`downsample_lab.engine.callbacks.ProgressBar`.
"""

from __future__ import annotations

import logging
import warnings

# Warnings about Lightning's own code, not ours: nothing a user can act on; or said in the project's words
# (the logging interval longer than an epoch: downsample_lab.engine.callbacks.EpochSummary).
_LIBRARY_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)


def quiet_libraries() -> None:
    """Drop Lightning's INFO messages (tips, device lines, summaries) and the library-internal deprecations."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)

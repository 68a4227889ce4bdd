"""What the libraries print: only what a user of this project needs.

Lightning logs, at INFO, tips for its cloud products (litlogger, litmodels), "GPU available / TPU available"
lines, a model summary whose FLOPs column reads 0 (it counts only when the model defines an example input)
and, with bf16, a warning that the summary cannot size bf16 weights. The training log's own "Model: ..." line
has the parameters and FLOPs (``torch.utils.flop_counter``), so Lightning's summary is off
(``enable_model_summary=False`` in :func:`downsample_lab.engine.trainer.build_trainer`), its INFO messages are dropped
and its warnings kept; a deprecation warning that Lightning itself triggers inside ``torch.utils._pytree`` is
dropped too. The progress bar is :class:`downsample_lab.engine.callbacks.ProgressBar`.

The bar and the log never share a line: the console's log handler (:class:`BarSafeHandler`, set in
``configs/hydra/default.yaml``) and the run's closing messages (:func:`write`) go through ``tqdm.write``, which
lifts a bar being drawn, prints the line and draws the bar again below it. :func:`counted` words a count.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import TextIO

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


def write(text: str, file: TextIO | None = None) -> None:
    """Print ``text`` on its own line(s) of ``file`` (stderr), above a progress bar that may be drawn there."""
    from tqdm import tqdm

    tqdm.write(text, file=file or sys.stderr)
    (file or sys.stderr).flush()


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, in the plural (``plural``, or ``noun`` + "s") unless ``n`` is 1: "1 job", "3 jobs"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


class BarSafeHandler(logging.StreamHandler):
    """The console's log handler: each record on its own line, above a progress bar that may be drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write(self.format(record), self.stream)
        except Exception:  # as logging.StreamHandler does: a broken console must not stop the run
            self.handleError(record)

"""Where a training job's wall time goes: its training steps, and the fixed cost around them.

A job of a sweep pays, besides its training steps, for importing torch and Lightning (the first job of each
process: every job of a single run, the first of a sequential sweep, the first of each worker of a parallel
one), its start-up (config checks, model and FLOP count, Trainer, TensorBoard), the data and the whitening stem, Lightning's sanity check, each validation pass, the
checkpoint writes, the test (with TTA, consistency and the shift curves) and the end of ``fit``. :class:`~downsample_lab.run.clock.JobTimes`
(:mod:`downsample_lab.run.clock`) is a Lightning callback and a stopwatch that splits the job's wall time into
these phases; ``train`` writes the split to ``train.log`` and to ``status.json`` (``times``), and a sweep's closing
summary adds them up over its jobs (:func:`describe`, :func:`add_up`: torch-free, here).
"""

from __future__ import annotations

from collections.abc import Mapping

# The phases, in the order a job meets them; "train_steps" is the job's work, the others its fixed cost.
PHASES = (
    "imports",  # job start to train's set-up: the run's checks (config, resume point), status.json, and
    # torch and Lightning imported (a process's first job: the bulk of it)
    "start",  # then to fit(): seed, model and FLOPs, callbacks, Trainer, the data into memory (its digest
    # for the HParams; on the first process: the others load it in fit_setup)
    "fit_setup",  # fit() to on_fit_start: the data module's set-up, the model to its device, the whitening stem
    "sanity_check",  # Lightning's validation batches before the first step
    "train_steps",  # the training epochs, without their validation and checkpoint writes
    "validation",  # the validation passes at epoch ends
    "checkpoints",  # writing checkpoints (best and last)
    "fit_end",  # the last epoch's end to fit()'s return: logger flush, teardown
    "test",  # trainer.test: the checkpoint read, test pass, TTA, consistency, shift curves
    "other",  # what no phase covers: epoch boundaries, status writes
)
FIXED = tuple(p for p in PHASES if p != "train_steps")


def describe(seconds: Mapping[str, float]) -> str:
    """``35.2 s = training steps 11.0 s + fixed 24.2 s (start 1.2, ..., other 0.1)``: one line for the log."""
    parts = ", ".join(f"{p.replace('_', ' ')} {seconds.get(p, 0.0):.1f}" for p in FIXED)
    return (
        f"{seconds['wall']:.1f} s = training steps {seconds['train_steps']:.1f} s + fixed "
        f"{seconds['fixed']:.1f} s ({parts})"
    )


def add_up(records: list[Mapping[str, float]]) -> dict[str, float]:
    """The phases summed over the jobs of a sweep (each job's ``status.json`` ``times``)."""
    total = dict.fromkeys((*PHASES, "wall", "fixed"), 0.0)
    for record in records:
        for key in total:
            total[key] += float(record.get(key, 0.0))
    return total

"""Arms: which hyperparameters define an arm (every one that differs between runs, less the seed and the
bookkeeping keys), the runs grouped into arms, and each arm's baseline (the max-pool arm it is tested against).
Statistics over the arms are in :mod:`~downsample_lab.report.stats`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from downsample_lab.report.read import ABSENT, DASH, DEGENERATE, Run, canonical, value_text
from downsample_lab.study import ARM_KEY, BASELINE, BOOKKEEPING_KEYS, DATA_DIGEST

# Config keys that never define an arm: the bookkeeping keys (where files live, how a run reports progress, how
# it was resumed), and `seed`, because seeds are an arm's replicates.
IGNORED_KEYS = BOOKKEEPING_KEYS | {"seed"}

# The arm every other arm is tested against: the one with this value of this key (else the first arm).
BASELINE_KEY = ARM_KEY
BASELINE_VALUE = BASELINE


@dataclass
class Arm:
    """Completed runs that share every arm-defining hyperparameter; ``values`` maps each arm key to its value."""

    label: str
    values: dict[str, Any]
    runs: list[Run]
    baseline: Arm | None = None  # the arm this one is tested against; None for a baseline arm
    # no baseline, because every candidate was tested on images from another source: the keys that say so
    other_images: list[str] = field(default_factory=list)


# Keys that do nothing in a run unless another key has a value: (key prefix, that key, its value).
APPLIES_ONLY = (("data.synthetic_", "data.source", "synthetic"),)
NOT_APPLICABLE = "(not used)"


def arm_value(hparams: Mapping[str, Any], key: str) -> Any:
    """A run's value of ``key`` as an arm sees it: :data:`NOT_APPLICABLE` where the key does nothing in that run
    (``data.synthetic_train_size`` of a ``data.source=folder`` run), :data:`ABSENT` where the run lacks it."""
    for prefix, needs, value in APPLIES_ONLY:
        if key.startswith(prefix) and hparams.get(needs) != value:
            return NOT_APPLICABLE
    return hparams.get(key, ABSENT)


def arm_keys(runs: Sequence[Run]) -> list[str]:
    """The hyperparameters whose values differ between the ``runs`` they apply to, less :data:`IGNORED_KEYS`;
    baseline key first. The data digest counts only where runs recorded two or more: runs written before it
    existed are not told apart from the others by its absence alone (:func:`data_roots` points out their folders).
    """
    keys = set().union(*(r.hparams for r in runs)) - IGNORED_KEYS if runs else set()

    def differs(key: str) -> bool:
        left_out = {NOT_APPLICABLE, ABSENT} if key == DATA_DIGEST else {NOT_APPLICABLE}
        return len({canonical(arm_value(r.hparams, key)) for r in runs} - left_out) > 1

    return sorted(filter(differs, keys), key=lambda k: (k != BASELINE_KEY, k))


def arm_label(hparams: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``model.downsample=conv, model.kernel_size=5`` (the keys that apply to the arm); ``all runs`` when no key
    differs."""
    values = {k: arm_value(hparams, k) for k in keys}
    return ", ".join(f"{k}={value_text(v)}" for k, v in values.items() if v != NOT_APPLICABLE) or "all runs"


def run_labels(runs: Sequence[Run], arms: Sequence[Arm]) -> dict[Path, str]:
    """Each run's arm label: a counted run's arm; for a run left out, its values of the keys that differ among
    all runs (so a conv run still running in a sweep whose completed runs are all max-pool still says conv).

    Runs whose HParams never reached TensorBoard (failed early) do not choose the keys: their config says
    ``trainer.precision=auto`` where the others record the precision that ran.
    """
    labels = {run.path: arm.label for arm in arms for run in arm.runs}
    keys = arm_keys([r for r in runs if r.hparams_in_tb] or [r for r in runs if r.hparams])
    for run in runs:
        if run.path not in labels:  # (a digest is recorded in the HParams: not in a config alone)
            mine = keys if run.hparams_in_tb else [k for k in keys if k != DATA_DIGEST]
            labels[run.path] = arm_label(run.hparams, mine) if run.hparams else DASH
    return labels


def is_baseline(values: Mapping[str, Any]) -> bool:
    """Whether an arm with these values is a baseline (``model.downsample=maxpool``)."""
    return values.get(BASELINE_KEY) == BASELINE_VALUE


def arm_order(values: Mapping[str, Any], keys: Sequence[str]) -> tuple:
    """The sort key of an arm: baseline first, then by each key's value, numbers numerically, else as text."""
    parts = []
    for k in keys:
        v = canonical(values.get(k, ABSENT))
        parts.append((0, v, "") if isinstance(v, float) else (1, 0.0, str(v)))
    return (not is_baseline(values), *parts)


# Keys that tell the test images apart: an arm is never tested against a baseline that read others. (Two copies
# of one source differ in the data digest the runs record; runs older than it only in ``data.root``, which is
# bookkeeping: :func:`data_roots` points them out.)
TEST_SET_KEYS = ("data.source", "data.synthetic_test_size", DATA_DIGEST)


# Arm keys that follow from the downsampling itself: what ``model.match_params=true`` built for each strategy.
FOLLOWS_DOWNSAMPLE = {"model.effective_widths"}


def _differing(arm: Arm, other: Arm, keys: Sequence[str]) -> list[str]:
    """The ``keys`` whose values differ between two arms, as arms see them; the baseline key and the keys that
    follow from it (:data:`FOLLOWS_DOWNSAMPLE`) aside."""
    return [
        k
        for k in keys
        if k != BASELINE_KEY
        and k not in FOLLOWS_DOWNSAMPLE
        and k in arm.values
        and canonical(arm.values[k]) != canonical(other.values[k])
    ]


def group_runs(runs: Sequence[Run]) -> list[Arm]:
    """Group the completed ``runs`` into arms and pair each arm with its baseline.

    The baseline of an arm is the max-pool arm (``model.downsample=maxpool``) that agrees with it on every
    other arm key (in a downsample × kernel-size sweep, conv k=5 is tested against maxpool k=5); failing that,
    the max-pool arm that agrees on the most keys (the fair study's arms each keep their own tuned lr), first
    in arm order on a tie; when the sweep has no max-pool run, the first arm. Only an arm tested on the same
    images (:data:`TEST_SET_KEYS`: source, size, data digest) can be a baseline: an arm with none has no baseline (its
    ``other_images`` names the keys), and :func:`baseline_differences` names what else an arm and its baseline
    differ in. When the sweep has max-pool runs but every one collapsed (degenerate), no arm has a baseline:
    :func:`lost_baseline` says so. The keys that tell arms apart come from the degenerate runs too, so an arm
    whose every run collapsed still names the others as they are.
    """
    done = [r for r in runs if r.status == "completed"]
    keys = arm_keys([r for r in runs if r.status in ("completed", DEGENERATE)])
    groups: dict[tuple, list[Run]] = {}
    for run in done:
        groups.setdefault(tuple(canonical(arm_value(run.hparams, k)) for k in keys), []).append(run)
    arms = []
    for members in groups.values():
        values = {k: arm_value(members[0].hparams, k) for k in keys}
        arms.append(Arm(arm_label(members[0].hparams, keys), values, members))
    arms.sort(key=lambda a: arm_order(a.values, keys))

    pools = [a for a in arms if is_baseline(a.values)]
    if not pools and lost_baseline(runs):
        return arms  # nothing to test against: not another arm in its place
    for i, arm in enumerate(arms):
        if is_baseline(arm.values):
            continue
        candidates = pools or arms[:i]  # no max-pool arm: an earlier arm, the first on the same images
        same_images = [a for a in candidates if not _differing(arm, a, TEST_SET_KEYS)]
        if not pools:
            arm.baseline = same_images[0] if same_images else None
        else:  # max() keeps the first of the arms that differ in the fewest keys
            arm.baseline = max(same_images, key=lambda a: -len(_differing(arm, a, keys)), default=None)
        if arm.baseline is None and candidates:
            arm.other_images = sorted({k for a in candidates for k in _differing(arm, a, TEST_SET_KEYS)})
    return arms


def baseline_differences(arm: Arm) -> list[str]:
    """The arm keys other than ``model.downsample`` in which ``arm`` and its max-pool baseline differ ([] without
    one; and in a sweep with no max-pool arm, whose arms are all tested against the first by design)."""
    if arm.baseline is None or not is_baseline(arm.baseline.values):
        return []
    return _differing(arm, arm.baseline, list(arm.values))


def data_roots(arm: Arm) -> set[str]:
    """The image folders (``data.root`` of ``data.source=folder``) an arm's runs read, ``~`` expanded, when some of
    them lack a data digest (:data:`~downsample_lab.study.DATA_DIGEST`: written before it existed); else none,
    the digest having told the copies apart. The key is bookkeeping (a copy may move), so runs without a digest on
    two copies, say the JPEG and the PNG one, share an arm: the report can only say so. (A relative root is as
    the run's command gave it. The torchvision source's files are the same checksummed archive under any root.)"""
    if all(DATA_DIGEST in r.hparams for r in arm.runs):
        return set()
    return {
        os.path.expanduser(str(r.hparams["data.root"]))
        for r in arm.runs
        if r.hparams.get("data.source") == "folder" and r.hparams.get("data.root") is not None
    }


def lost_baseline(runs: Sequence[Run]) -> list[Run]:
    """The max-pool runs of a sweep none of whose max-pool runs is counted (every one degenerate); else []."""
    pool = [
        r
        for r in runs
        if r.status in ("completed", DEGENERATE) and r.hparams.get(BASELINE_KEY) == BASELINE_VALUE
    ]
    return pool if pool and all(r.status == DEGENERATE for r in pool) else []

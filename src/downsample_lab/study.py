"""What the study compares, named once: the key that tells its arms apart, the arm the others are measured
against, and the keys that never define an arm; a run's config as dotted keys. Torch-free: the report, the
TensorBoard HParams and the resume check all read it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

ARM_KEY = "model.downsample"
"""The config key whose value is a run's arm (its downsampling strategy)."""

BASELINE = "maxpool"
"""The arm every other arm is compared with (Welch's t-test, Δ and its CI in the report)."""

DATA_DIGEST = "data.digest"
"""Not a config key: the checksum of the images and labels a training run read
(:meth:`~downsample_lab.data.cifar10.CIFAR10DataModule.digest`), which ``train`` records in the run's HParams
beside its config. ``data.root`` only says where a copy lay; this tells two copies apart (the JPEG and the PNG
one), so the report neither pools nor compares runs that recorded different ones."""

# Keys that say where files are, how a run shows its progress or how it was resumed, never what it trains. A
# resumed run may set them differently from the run it continues, and the report does not split arms by them.
BOOKKEEPING_KEYS = frozenset(
    {
        "resume",
        "ckpt_path",
        "data.root",
        "data.cache_dir",
        "data.download",
        "trainer.enable_progress_bar",
        "trainer.log_every_n_steps",
        "trainer.num_sanity_val_steps",
        "checkpoint.every_n_steps",
    }
)


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"widths": [8, 16]}}`` → ``{"model.widths": [8, 16]}``: one dotted key per leaf, values as is."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flatten_text(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`flatten` with lists and nulls written as the config writes them (``"[8, 16]"``, ``"null"``)."""
    return {
        k: v if isinstance(v, bool | int | float | str) else json.dumps(v) for k, v in flatten(cfg).items()
    }

"""Run-directory bookkeeping shared by ``entry``, ``train`` and ``report``: ``status.json``, the flattened config
and the keys that never define an experiment.

Imports neither torch nor Lightning, so that ``downsample_lab.report`` starts in a fraction of a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"

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


# The status of a run stopped by Ctrl-C or SIGTERM: resumable, not failed.
INTERRUPTED = "interrupted"


def write_status(directory: Path, status: str, **info: Any) -> None:
    """``<run dir>/status.json``: running, completed (with the final metrics), failed (with the reason) or
    :data:`INTERRUPTED` (with the command that continues it).

    Written to a temporary file and renamed, so a reader never sees half a record.
    """
    record = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
    tmp = directory / f"{STATUS_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(directory / STATUS_FILE)


def read_status(directory: Path) -> tuple[dict[str, Any] | None, str]:
    """The run's ``status.json`` and ``""``; ``(None, "")`` without one; ``(None, why)`` when it is unreadable."""
    file = directory / STATUS_FILE
    if not file.is_file():
        return None, ""
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        return None, f"{STATUS_FILE} unreadable ({err})"
    return (record, "") if isinstance(record, dict) else (None, f"{STATUS_FILE} is not a JSON object")

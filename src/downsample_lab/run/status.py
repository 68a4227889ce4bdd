"""A run's record, ``status.json``: running, completed (with its metrics and times), failed or interrupted (with
the reason and the command that continues it). Written by :mod:`downsample_lab.run.job`, read by the sweep's
summary and by :mod:`downsample_lab.report`.

Imports neither torch nor Lightning, so that ``downsample_lab.report`` starts in a fraction of a second.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"

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


def status_of(directory: Path) -> dict[str, Any]:
    """The run's ``status.json`` as a dict; empty when there is none or it cannot be read."""
    return read_status(directory)[0] or {}

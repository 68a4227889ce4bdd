"""The machine the bench runs on: its device, memory readings, other processes' load, hardware and versions.

What ``bench.json`` records beside the throughput (``hardware``, ``versions``, ``memory_kind``, each strategy's
``other_cpu_cores`` and ``peak_memory_bytes``), and the device both of the bench's paths train on.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from downsample_lab import compat

# ---------------------------------------------------------------------------------------------------------------
# The device and its memory
# ---------------------------------------------------------------------------------------------------------------


def _can_reset_rss_peak() -> bool:
    return os.access("/proc/self/clear_refs", os.W_OK) and Path("/proc/self/status").is_file()


def memory_kind(device: torch.device) -> str:
    """What ``peak_memory_bytes`` means on ``device``."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated over the path's warm-up, less what the other path holds"
    if _can_reset_rss_peak():
        return (
            "peak RSS of the whole process over the path's warm-up (VmHWM, reset via /proc/self/clear_refs)"
        )
    return "peak RSS of the whole process since it started (getrusage ru_maxrss; cannot be reset here)"


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak reading (see :func:`memory_kind`)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif _can_reset_rss_peak():
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS


def allocated_memory(device: torch.device) -> int:
    """Bytes of live tensors on a GPU (what another path holds); 0 elsewhere, where it is not told apart."""
    return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else 0


def peak_memory(device: torch.device, baseline: int = 0) -> int:
    """Bytes at the peak since :func:`reset_peak_memory` (see :func:`memory_kind`), less ``baseline``."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)) - baseline
    if _can_reset_rss_peak():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


# ---------------------------------------------------------------------------------------------------------------
# Other processes' load, the hardware, the versions
# ---------------------------------------------------------------------------------------------------------------


class OtherCpuLoad:
    """How many CPU cores other processes kept busy, on average, between two readings (Linux; else None).

    The machine's busy time (``/proc/stat``) less this process's own CPU time, over the wall time: on a shared
    machine it says how much of a result is other people's work. Hand-written: ``os.getloadavg`` counts this
    process too and averages over minutes.
    """

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
        own = os.times()
        return time.monotonic(), busy, own.user + own.system

    def cores(self) -> float | None:
        """Average cores used by other processes since this object was made."""
        end = self._read()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        wall, busy, own = (e - s for e, s in zip(end, self._start, strict=True))
        return max(0.0, (busy - own) / wall)


def hardware(device: torch.device) -> dict[str, Any]:
    """CPU model, core counts, bf16 support, and the GPU when the bench runs on one."""
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "device": str(device),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **{f"cpu_{k}": v for k, v in compat.cpu_bf16_features().items()},
        "platform": platform.platform(),
        "gpu": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {
            "name": props.name,
            "memory_bytes": props.total_memory,
            "capability": f"{props.major}.{props.minor}",
            "count": torch.cuda.device_count(),
        }
    return info


def versions() -> dict[str, str | None]:
    """Python, torch (with its CUDA and cuDNN) and Lightning versions."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(cudnn) if cudnn else None,
        "lightning": L.__version__,
    }

"""Where a run computes, in one place: whether there is a CUDA GPU, which device and precision a ``trainer``
group trains with, where the in-memory data set lives, and waiting for a device's queued work.

Importing this module does not import torch: the ``${if_gpu:...}`` defaults are resolved while Hydra composes a
config, and ``--help`` shows them, before anything imports torch (:func:`cuda_available`).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from downsample_lab import compat
from downsample_lab.errors import ConfigError

if TYPE_CHECKING:
    import torch


def cuda_available() -> bool:
    """Whether torch can train on a CUDA GPU here: ``torch.cuda.is_available()`` once torch is imported; before
    that, the same question put to the CUDA driver (a torch built with CUDA, and the driver counting at least
    one visible device, as torch's own check does), which answers in milliseconds instead of torch's seconds."""
    if "torch" in sys.modules or _torch_built_for("hip"):  # ROCm: no cheap probe, ask torch
        import torch

        return torch.cuda.is_available()
    return _driver_says_cuda()


def cuda_device_count() -> int:
    """The CUDA GPUs torch would see: ``torch.cuda.device_count()`` once torch is imported (or on ROCm), else the
    driver's count (0 when torch was built without CUDA), as :func:`cuda_available` decides."""
    if "torch" in sys.modules or _torch_built_for("hip"):
        import torch

        return torch.cuda.device_count()
    return _driver_device_count() if _torch_built_for("cuda") else 0


@functools.cache
def _driver_says_cuda() -> bool:
    return _torch_built_for("cuda") and _driver_device_count() > 0


@functools.cache
def _torch_built_for(platform: str) -> bool:
    # torch/version.py records the build: cuda = '13.0' (or None), hip = '6.4...' (or None)
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return False
    version = Path(spec.origin).with_name("version.py")
    text = version.read_text() if version.is_file() else ""
    return re.search(rf"^{platform}\b.*=\s*['\"]\d", text, re.M) is not None


def _driver_device_count() -> int:
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:  # no NVIDIA driver (or not Linux)
        return 0
    count = ctypes.c_int(0)
    if libcuda.cuInit(0) != 0 or libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def runs_on_cuda(accelerator: str) -> bool:
    """Whether ``trainer.accelerator`` trains on a CUDA GPU (``auto``: when one is present)."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda_available())


def uses_cuda(trainer_cfg: DictConfig) -> bool:
    """Whether the ``trainer`` config group runs on a CUDA GPU."""
    return runs_on_cuda(trainer_cfg.accelerator)


def if_gpu(accelerator: str, on_gpu: object, on_cpu: object) -> object:
    """``${if_gpu:${trainer.accelerator},A,B}``: ``A`` for a run on a CUDA GPU, else ``B``.

    A default that follows the device: a GPU needs a larger batch than a CPU to be busy.
    """
    return on_gpu if runs_on_cuda(accelerator) else on_cpu


def check_accelerator(t: DictConfig) -> None:
    """Raise ConfigError when the ``trainer`` group asks for a CUDA GPU that this machine lacks.

    Not part of :func:`~downsample_lab.config.validate`: a GPU config (``experiment=ablation``) is still valid on
    a CPU machine, it cannot run there.
    """
    if t.accelerator in ("gpu", "cuda") and not cuda_available():
        raise ConfigError(
            f"trainer.accelerator={t.accelerator} (trainer=gpu, trainer=ddp) needs a CUDA GPU and this machine has "
            "none; use trainer=cpu, or run where torch.cuda.is_available() is true"
        )


def resolve_precision(trainer_cfg: DictConfig) -> tuple[str, str]:
    """Turn ``trainer.precision=auto`` into the fastest precision the hardware runs well, and say why."""
    if trainer_cfg.precision != "auto":
        return str(trainer_cfg.precision), "as configured"
    if uses_cuda(trainer_cfg):
        import torch

        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed", "auto: the GPU supports bfloat16"
        return "16-mixed", "auto: the GPU lacks bfloat16"
    # On CPUs with native bf16 (AVX512-BF16 or AMX) autocast roughly doubles the speed of a conv step; on
    # others it emulates bf16 and is slower than float32.
    if any(compat.cpu_bf16_features().values()):
        return "bf16-mixed", "auto: the CPU has native bfloat16 (AVX512-BF16/AMX)"
    return "32-true", "auto: the CPU has no native bfloat16"


def describe_device(trainer_cfg: DictConfig) -> str:
    """Where ``trainer.accelerator`` runs, and why (``auto`` takes a CUDA GPU when there is one)."""
    how = "auto" if trainer_cfg.accelerator == "auto" else "as configured"
    if uses_cuda(trainer_cfg) and cuda_available():
        import torch

        return f"cuda ({torch.cuda.get_device_name()}, {how})"
    if uses_cuda(trainer_cfg):
        return f"cuda ({how})"
    if trainer_cfg.accelerator == "auto":
        return "cpu (auto: no CUDA GPU found)"
    return f"{trainer_cfg.accelerator} ({how})"


def training_device(trainer_cfg: DictConfig) -> torch.device:
    """The device Lightning trains on for this single-device ``trainer`` group (the bench's raw loop uses it)."""
    import torch

    if uses_cuda(trainer_cfg):
        devices = trainer_cfg.devices
        return torch.device("cuda", int(devices[0]) if OmegaConf.is_list(devices) else 0)
    if trainer_cfg.accelerator == "mps" or (
        trainer_cfg.accelerator == "auto" and torch.backends.mps.is_available()
    ):
        return torch.device("mps")
    return torch.device("cpu")


def data_device(on_device: bool | None, device: torch.device) -> torch.device:
    """Where the in-memory data set lives when training runs on ``device`` (``data.on_device``; None: in device
    memory on a GPU, where the whole set (~180 MB as uint8) then needs no host-to-device copy per step, and in
    host memory otherwise)."""
    import torch

    keep = on_device if on_device is not None else device.type == "cuda"
    return device if keep else torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA, MPS, ...), so that a clock reading covers it; a no-op on CPU."""
    if device.type != "cpu":  # torch.accelerator refuses a device other than the build's accelerator
        import torch

        torch.accelerator.synchronize(device)

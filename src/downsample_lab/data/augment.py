"""Batched augmentation and normalisation on whatever device the batch is on (airbench-style).

Hand-written because it is a handful of tensor ops: one gather does the random crop and the flip for the whole
batch, where per-sample augmentation libraries would add per-call overhead larger than the model's step on CPU.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from downsample_lab.data.config import DataConfig

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def augment(images: torch.Tensor, data: DataConfig, epoch: int) -> torch.Tensor:
    """The training augmentation the ``data`` group asks for, of a uint8 batch in ``epoch`` (0-based).

    ``data.translate`` pixels of shift (``data.translate_mode`` at the border) and the flip: a random half of
    the batch (``data.flip=random``), or, for ``alternating``, every image in odd epochs (the fixed random half
    of airbench's alternating flip is flipped once, in the data module's setup). Nothing with
    ``data.augment=false``. The data module and the bench's raw loop both call this.
    """
    if not data.augment:
        return images
    alternating = data.flip == "alternating"
    images = random_crop_flip(images, data.translate, flip=not alternating, mode=str(data.translate_mode))
    if alternating and epoch % 2 == 1:
        images = images.flip(-1)  # every image shows its other side in odd epochs
    return images


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool, mode: str) -> torch.Tensor:
    """Random ``padding``-pixel translation and random horizontal flip of a uint8 batch ``(N,C,H,W)``.

    Equivalent to torchvision's ``RandomCrop(H, padding, padding_mode=...)`` + ``RandomHorizontalFlip()`` per
    image, drawn from the global RNG of the batch's device. ``mode`` is what the shift brings in at the border:
    ``zeros`` or ``reflect`` (airbench's; done by index arithmetic, with no padded copy). ``flip=False`` leaves
    the flip out (for the alternating flip, done by the caller). The result is channels-last in memory.
    """
    n, _, h, w = images.shape
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=device)
    rows = dy + torch.arange(h, device=device)
    cols = torch.arange(w, device=device).expand(n, w)
    if flip:
        flipped = torch.rand(n, 1, device=device) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    cols = dx + cols
    if mode == "reflect":
        source = images
        rows, cols = _reflect(rows - padding, h), _reflect(cols - padding, w)
    else:
        source = F.pad(images, (padding, padding, padding, padding))
    batch_idx = torch.arange(n, device=device)[:, None, None]
    # Advanced indices around a slice put the indexed dims first: (N, H, W, C); permute back to NCHW.
    return source[batch_idx, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    # -1 → 1, size → size - 2: the border pixel is not repeated, as F.pad(mode="reflect")
    return (size - 1) - ((size - 1) - index.abs()).abs()


@functools.cache
def _mean_and_inv_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Built once per device: a tensor made from Python numbers on a GPU is a host-to-device copy.
    mean = torch.tensor(CIFAR10_MEAN, device=device).view(1, 3, 1, 1) * 255
    inv_std = 1.0 / (torch.tensor(CIFAR10_STD, device=device).view(1, 3, 1, 1) * 255)
    return mean, inv_std


def normalize(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 ``(N,3,H,W)`` → float32 standardised with the CIFAR-10 mean and std."""
    mean, inv_std = _mean_and_inv_std(images.device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return ((images.float() - mean) * inv_std).contiguous(memory_format=fmt)

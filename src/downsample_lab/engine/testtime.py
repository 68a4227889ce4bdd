"""Test-time evaluation: test-time augmentation (TTA), and shift robustness (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"; Chaman & Dokmanić 2021).

- :func:`tta_logits`: airbench94's test-time augmentation, the mean logits of mirrored and 1-pixel-translated
  views (``test/acc_tta``, ``eval.tta_level``).

Shift robustness: two measures, both on the plain network (no test-time augmentation):

- ``test/consistency``: how often a classifier predicts the same class for two random circular shifts of up
  to ``eval.max_shift`` pixels of the same image (every test image).
- the shift-robustness curves (:class:`ShiftCurves`): for every shift of 0…``eval.max_shift`` pixels, along x
  and along the diagonal, circular (content wraps around: nothing is lost) and linear (content moves out, zeros
  of the normalised image, i.e. the data set's mean colour, move in), the accuracy on the shifted images and
  their consistency with the unshifted prediction, on a fixed random subset of about ``eval.shift_images``
  test images (the same for every run and arm). Logged as TensorBoard scalars ``shift/<mode>_<direction>/acc`` and ``.../consistency`` whose step is
  the shift in pixels, so TensorBoard draws them as curves over the shift.

Max-pooling and strided convolutions alias, so their predictions flip under small shifts; blur-pooling is meant
to help, and adaptive polyphase sampling with circular padding is exactly invariant to circular shifts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from downsample_lab.config.validate import TTA_LEVELS


def tta_logits(
    net: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    level: int,
    logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits of ``net`` for normalised ``images`` under test-time augmentation ``level``.

    0: the images as they are. 1: the mean over the image and its mirror. 2: half of level 1, plus half of the
    mean of level 1 over two translations by one pixel, up-left and down-right (reflect padding): six views,
    weighted as in airbench94. ``logits``: ``net(images)`` when the caller has it already (one forward fewer).
    """
    if level not in TTA_LEVELS:
        raise ValueError(f"unknown TTA level {level}; valid: 0, 1, 2")
    plain = net(images) if logits is None else logits
    if level == 0:
        return plain

    def mirror(x: torch.Tensor, x_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * x_logits + 0.5 * net(x.flip(-1))

    mean = mirror(images, plain)
    if level == 1:
        return mean
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    views = (padded[:, :, :h, :w], padded[:, :, 2 : h + 2, 2 : w + 2])
    return 0.5 * mean + 0.5 * torch.stack([mirror(v, net(v)) for v in views]).mean(0)


SHIFT_MODES = ("circular", "linear")
SHIFT_DIRECTIONS = {"x": (0, 1), "diag": (1, 1)}  # (dy, dx) per pixel of shift: right, and down-right
SHIFT_TAG = "shift"  # tags: shift/<mode>_<direction>/<acc|consistency>, step = shift in pixels


@torch.no_grad()
def shift_agreement(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    max_shift: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Per image, whether ``model`` predicts the same class under two independent random shifts (bool ``(N,)``)."""
    first = model(random_circular_shift(images, max_shift, generator)).argmax(dim=1)
    second = model(random_circular_shift(images, max_shift, generator)).argmax(dim=1)
    return first == second


def shift_images(images: torch.Tensor, dy: int, dx: int, mode: str) -> torch.Tensor:
    """``images`` ``(N, C, H, W)`` moved down by ``dy`` and right by ``dx`` pixels (0 ≤ dy < H, 0 ≤ dx < W).

    ``circular``: what leaves one side comes back on the other. ``linear``: it is lost, and zeros come in.
    """
    if mode == "circular":
        return torch.roll(images, shifts=(dy, dx), dims=(2, 3))
    if mode != "linear":
        raise ValueError(f"unknown shift mode {mode!r}; valid: {', '.join(SHIFT_MODES)}")
    h, w = images.shape[-2:]
    return F.pad(images, (dx, 0, dy, 0))[..., :h, :w]


def curve_tag(mode: str, direction: str, metric: str) -> str:
    """The TensorBoard tag of one curve, e.g. ``shift/linear_diag/consistency``."""
    return f"{SHIFT_TAG}/{mode}_{direction}/{metric}"


class ShiftCurves(Metric):
    """Accuracy and consistency with the unshifted prediction, per shift mode, direction and size.

    ``update(net, images, labels, logits)`` takes a test batch and the network's logits for it (the test step
    has them: no forward is repeated) and evaluates a random ``fraction`` of its images, drawn with
    ``generator`` (seed it for the same subset in every run), under each shift of 1…``max_shift`` pixels.
    Counts stay on the device (no host sync) and are summed over processes.
    """

    full_state_update = False

    def __init__(self, max_shift: int, fraction: float, generator: torch.Generator) -> None:
        super().__init__()
        self.max_shift, self.fraction, self.generator = max_shift, min(1.0, fraction), generator
        shape = (len(SHIFT_MODES), len(SHIFT_DIRECTIONS), max_shift + 1)
        self.add_state("correct", torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("agree", torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(
        self,
        net: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor,
        labels: torch.Tensor,
        logits: torch.Tensor,
    ) -> None:
        """Evaluate this batch's share of the subset under every shift."""
        # a random subset, not every k-th image: test sets are often ordered by class
        k = max(1, round(len(labels) * self.fraction))
        keep = torch.randperm(len(labels), generator=self.generator, device=labels.device)[:k]
        images, labels, base = images[keep], labels[keep], logits[keep].argmax(dim=1)
        self.total += len(labels)
        self.correct[:, :, 0] += (base == labels).sum()
        self.agree[:, :, 0] += len(labels)
        for m, mode in enumerate(SHIFT_MODES):
            for d, (uy, ux) in enumerate(SHIFT_DIRECTIONS.values()):
                for s in range(1, self.max_shift + 1):
                    pred = net(shift_images(images, uy * s, ux * s, mode)).argmax(dim=1)
                    self.correct[m, d, s] += (pred == labels).sum()
                    self.agree[m, d, s] += (pred == base).sum()

    def compute(self) -> dict[str, list[float]]:
        """``{tag: [value at shift 0, 1, …, max_shift]}`` for every mode, direction and metric (fractions)."""
        n = self.total.clamp(min=1).double()
        acc, agree = (self.correct / n).tolist(), (self.agree / n).tolist()
        curves = {}
        for m, mode in enumerate(SHIFT_MODES):
            for d, direction in enumerate(SHIFT_DIRECTIONS):
                curves[curve_tag(mode, direction, "acc")] = acc[m][d]
                curves[curve_tag(mode, direction, "consistency")] = agree[m][d]
        return curves


def random_circular_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift every image of ``(N, C, H, W)`` circularly by its own random (dy, dx) in ``[-max_shift, max_shift]``.

    Circular, so no content is lost or invented at the borders: a model that is shift-invariant by
    construction gives exactly the same output for every shift.
    """
    n, _, h, w = images.shape
    device = images.device
    dy = torch.randint(-max_shift, max_shift + 1, (n, 1), generator=generator, device=device)
    dx = torch.randint(-max_shift, max_shift + 1, (n, 1), generator=generator, device=device)
    rows = (torch.arange(h, device=device) - dy) % h
    cols = (torch.arange(w, device=device) - dx) % w
    batch_idx = torch.arange(n, device=device)[:, None, None]
    shifted = images[batch_idx, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return shifted.contiguous(
        memory_format=torch.channels_last if _is_channels_last(images) else torch.contiguous_format
    )


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()

"""Shift consistency: 1 for a model that is shift-invariant by construction, below 1 for one that is not."""

from __future__ import annotations

import torch
from torch import nn

from downsample_lab.engine.testtime import (
    SHIFT_DIRECTIONS,
    SHIFT_MODES,
    ShiftCurves,
    curve_tag,
    random_circular_shift,
    shift_agreement,
    shift_images,
)


def _images(n: int = 256) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_a_shift_invariant_model_is_always_consistent():
    # 1x1 convs and global average pooling commute with circular shifts: invariant by construction
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)
    )
    agree = shift_agreement(model, _images(), 4, torch.Generator().manual_seed(1))
    assert agree.dtype == torch.bool and agree.shape == (256,)
    assert agree.all()


def test_a_position_dependent_model_is_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))  # every pixel has its own weight
    agree = shift_agreement(model, _images(), 4, torch.Generator().manual_seed(1))
    assert 0.0 < agree.float().mean() < 0.5  # ~0.1 for ten classes drawn at random


def test_no_shift_means_full_agreement_for_any_model():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))
    assert shift_agreement(model, _images(), 0, torch.Generator().manual_seed(1)).all()


def test_circular_shift_moves_pixels_and_keeps_them():
    images = _images(8)
    shifted = random_circular_shift(images, 3, torch.Generator().manual_seed(5))
    assert shifted.shape == images.shape
    for a, b in zip(images, shifted, strict=True):
        assert torch.allclose(a.sum(), b.sum(), atol=1e-4)  # a permutation of the pixels
        found = any(
            torch.equal(torch.roll(a, (dy, dx), dims=(1, 2)), b) for dy in range(-3, 4) for dx in range(-3, 4)
        )
        assert found


def test_shift_images_moves_content_down_and_right_circularly_or_losing_it():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    assert torch.equal(shift_images(x, 1, 2, "circular"), torch.roll(x, (1, 2), dims=(2, 3)))
    linear = shift_images(x, 1, 2, "linear")
    assert torch.equal(linear[..., 1:, 2:], x[..., :-1, :-2])  # the content, moved
    assert (linear[..., :1, :] == 0).all() and (linear[..., :, :2] == 0).all()  # zeros came in
    assert torch.equal(shift_images(x, 0, 0, "linear"), x)


def _curves(model: nn.Module, n: int = 200, fraction: float = 0.5) -> dict[str, list[float]]:
    images = _images(n)
    labels = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(2))
    metric = ShiftCurves(max_shift=3, fraction=fraction, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for batch in (slice(0, n // 2), slice(n // 2, n)):
            metric.update(model, images[batch], labels[batch], model(images[batch]))
    assert int(metric.total) == n * fraction  # the subset: that fraction of every batch
    return metric.compute()


def test_shift_curves_of_an_invariant_model_are_flat_at_one_for_circular_shifts():
    torch.manual_seed(0)
    invariant = nn.Sequential(
        nn.Conv2d(3, 32, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)
    )
    curves = _curves(invariant)
    assert set(curves) == {
        curve_tag(m, d, k) for m in SHIFT_MODES for d in SHIFT_DIRECTIONS for k in ("acc", "consistency")
    }
    for direction in SHIFT_DIRECTIONS:
        assert curves[curve_tag("circular", direction, "consistency")] == [1.0] * 4
        acc = curves[curve_tag("circular", direction, "acc")]
        assert acc == [acc[0]] * 4  # the same predictions, so the same accuracy
        assert curves[curve_tag("linear", direction, "consistency")][0] == 1.0  # no shift: always consistent


def test_shift_curves_of_a_position_dependent_model_fall_at_once():
    torch.manual_seed(0)
    curves = _curves(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10)))
    circular = curves[curve_tag("circular", "diag", "consistency")]
    assert circular[0] == 1.0 and max(circular[1:]) < 0.6


def test_a_training_run_logs_the_shift_curves_with_the_shift_as_step(tmp_path):
    # aps with circular padding, through the train entry point: the circular curves are exactly 1
    from tbparse import SummaryReader

    from downsample_lab.train import train

    from .conftest import TINY, compose_config

    overrides = [*TINY, "model.downsample=aps", "model.padding_mode=circular", "eval.shift_images=50",
                 f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    train(compose_config("train", overrides, tmp_path / "run"))
    scalars = SummaryReader(str(tmp_path / "run" / "tb")).scalars
    shift = scalars[scalars["tag"].str.startswith("shift/")]
    assert set(shift["tag"]) == {
        curve_tag(m, d, k) for m in SHIFT_MODES for d in SHIFT_DIRECTIONS for k in ("acc", "consistency")
    }
    circular = shift[shift["tag"] == "shift/circular_diag/consistency"].sort_values("step")
    assert list(circular["step"]) == [0, 1, 2, 3, 4]  # eval.max_shift=4
    assert (circular["value"] == 1.0).all()

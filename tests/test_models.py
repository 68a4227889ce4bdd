"""The CNN and its downsampling layers: every strategy and kernel size trains, halves H and W, counts right."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from downsample_lab.models import DOWNSAMPLE_NAMES, DownsampleCNN, create_downsample
from downsample_lab.models.summary import conv_param_formula, forward_flops, layer_table
from downsample_lab.shapes import format_shapes

from .conftest import compose_config

KERNELS = (3, 5, 7)


def test_each_strategy_is_the_layer_its_name_says():
    assert set(DOWNSAMPLE_NAMES) == {
        "maxpool",
        "conv",
        "conv3",
        "avgpool",
        "blurpool",
    }  # the five of the study
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(create_downsample("maxpool", 4)(x), F.max_pool2d(x, 2))
    assert torch.allclose(create_downsample("avgpool", 4)(x), F.avg_pool2d(x, 2))
    impulse = torch.zeros(1, 1, 8, 8)
    impulse[..., 3, 3] = 1.0
    blurred = create_downsample("blurpool", 1)(impulse)
    assert (blurred > 0).sum() > 1 and blurred.max() < 1  # max-pooled, then spread out by the binomial blur
    for name, k, pad in (("conv", 2, 0), ("conv3", 3, 1)):
        convs = [m for m in create_downsample(name, 4).modules() if isinstance(m, nn.Conv2d)]
        assert [(c.kernel_size, c.stride, c.padding, c.in_channels, c.out_channels) for c in convs] == [
            ((k, k), (2, 2), (pad, pad), 4, 4)
        ], name


@pytest.mark.parametrize("name", DOWNSAMPLE_NAMES)
@pytest.mark.parametrize("size", [32, 256, 6])
def test_every_downsampling_layer_halves_height_and_width(name, size):
    out = create_downsample(name, 6)(torch.randn(2, 6, size, size))
    assert out.shape == (2, 6, size // 2, size // 2)


def test_unknown_strategy_names_the_valid_ones():
    with pytest.raises(ValueError, match="maxpool, conv, conv3, avgpool, blurpool"):
        create_downsample("strided", 8)


@pytest.mark.parametrize("name", DOWNSAMPLE_NAMES)
@pytest.mark.parametrize("k", KERNELS)
def test_forward_and_backward(name, k):
    net = DownsampleCNN(widths=[4, 8], blocks=1, kernel_size=k, downsample=name)
    x = torch.randn(3, 3, 32, 32)
    loss = nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", DOWNSAMPLE_NAMES)
@pytest.mark.parametrize("size", [32, 256])
def test_only_downsampling_layers_change_the_spatial_size(name, size):
    net = DownsampleCNN(widths=[4, 8, 16], blocks=2, kernel_size=5, downsample=name)
    rows = layer_table(net, (1, 3, size, size))
    h = size
    for row in rows:
        if not row.name.startswith(("stem", "stages")):
            continue
        is_downsample = row.name.count(".") >= 2 and row.name.split(".")[2] == "2"  # stages.<i>.<blocks>...
        if is_downsample and row.kind in ("MaxPool2d", "AvgPool2d", "MaxBlurPool2D", "Conv2d"):
            h //= 2
        assert row.output_shape[2:] == (h, h), row
    assert h == size // 8
    assert rows[-1].output_shape == (1, 10)


@pytest.mark.parametrize("name", DOWNSAMPLE_NAMES)
@pytest.mark.parametrize("k", KERNELS)
def test_conv_parameter_formula_matches_numel(name, k):
    net = DownsampleCNN(widths=[8, 16], blocks=2, kernel_size=k, downsample=name)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs
    for conv in convs:
        kh, kw = conv.kernel_size
        expected = kh * kw * conv.in_channels * conv.out_channels + (
            conv.out_channels if conv.bias is not None else 0
        )
        assert conv_param_formula(conv)[1] == expected == sum(p.numel() for p in conv.parameters())
    # the strided 2x2 conv of each stage has 2·2·C·C weights and no bias (BatchNorm follows)
    down = [c for c in convs if c.stride == (2, 2)]
    assert len(down) == {"conv": 2, "conv3": 2}.get(name, 0)
    for c in down:
        assert c.weight.numel() == (4 if name == "conv" else 9) * c.in_channels * c.out_channels


def test_pool_arms_share_parameters_and_conv_arm_adds_the_strided_convs():
    widths = [8, 16, 32]
    counts = {
        n: sum(p.numel() for p in DownsampleCNN(widths, 2, 3, n).parameters()) for n in DOWNSAMPLE_NAMES
    }
    assert counts["maxpool"] == counts["avgpool"] == counts["blurpool"]
    # conv adds, per stage, a 2x2 conv C·C·4 plus its BatchNorm 2·C
    assert counts["conv"] - counts["maxpool"] == sum(4 * c * c + 2 * c for c in widths)
    assert counts["conv3"] - counts["maxpool"] == sum(9 * c * c + 2 * c for c in widths)


def test_flops_grow_with_the_kernel_and_the_image():
    small = DownsampleCNN([8, 16], 1, 3, "maxpool")
    big_k = DownsampleCNN([8, 16], 1, 7, "maxpool")
    assert forward_flops(big_k) > 4 * forward_flops(small)
    assert forward_flops(small, (1, 3, 64, 64)) == pytest.approx(4 * forward_flops(small), rel=0.02)


def test_shapes_table_lists_every_layer_with_its_formula():
    cfg = compose_config(
        "shapes", ["model.downsample=conv", "model.widths=[8,16]", "input_size=[1,3,256,256]"]
    )
    from downsample_lab.config import ShapesConfig, validate

    text = format_shapes(validate(cfg, ShapesConfig))
    assert "1x8x256x256" in text and "1x16x64x64" in text
    assert "2·2·8·8" in text and "3·3·3·8" in text  # strided conv and stem
    total = sum(p.numel() for p in DownsampleCNN([8, 16], 2, 3, "conv").parameters())
    assert f"total parameters: {total:,}" in text

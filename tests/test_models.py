"""The CNN and its downsampling layers: every strategy and kernel size trains, halves H and W, counts right."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from downsample_lab.models.cnn import DownsampleCNN
from downsample_lab.models.downsample import conv_stride, create_downsample
from downsample_lab.models.fast import FastNet
from downsample_lab.models.names import DOWNSAMPLE_NAMES
from downsample_lab.models.summary import conv_param_formula, format_shapes, forward_flops, layer_table

from .conftest import compose_config

KERNELS = (3, 5, 7)


def test_each_strategy_is_the_layer_its_name_says():
    assert set(DOWNSAMPLE_NAMES) == {
        "maxpool",
        "conv",
        "conv3",
        "avgpool",
        "blurpool",
        "stride",
        "conv_avg",
        "aps",
        "maxavg",
    }  # the five of the first study, the placement and initialisation controls, APS and the max+avg mix
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(create_downsample("maxpool", 4)(x), F.max_pool2d(x, 2))
    assert torch.allclose(create_downsample("avgpool", 4)(x), F.avg_pool2d(x, 2))
    assert torch.allclose(create_downsample("maxavg", 4)(x), (F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)) / 2)
    assert sum(p.numel() for p in create_downsample("maxavg", 4).parameters()) == 0
    # conv_avg: one linear 2x2 stride-2 conv, no BatchNorm or activation, that starts as average pooling
    conv_avg = create_downsample("conv_avg", 4)
    assert isinstance(conv_avg, nn.Conv2d) and conv_avg.bias is None and conv_avg.stride == (2, 2)
    assert torch.allclose(conv_avg(x), F.avg_pool2d(x, 2), atol=1e-6)
    # stride: nothing at the site; the preceding conv gets stride 2
    assert isinstance(create_downsample("stride", 4), nn.Identity) and conv_stride("stride") == 2
    assert {n for n in DOWNSAMPLE_NAMES if conv_stride(n) != 1} == {"stride"}
    impulse = torch.zeros(1, 1, 8, 8)
    impulse[..., 3, 3] = 1.0
    blurred = create_downsample("blurpool", 1)(impulse)
    assert (blurred > 0).sum() > 1 and blurred.max() < 1  # max-pooled, then spread out by the binomial blur
    for name, k, pad in (("conv", 2, 0), ("conv3", 3, 1)):
        convs = [m for m in create_downsample(name, 4).modules() if isinstance(m, nn.Conv2d)]
        assert [(c.kernel_size, c.stride, c.padding, c.in_channels, c.out_channels) for c in convs] == [
            ((k, k), (2, 2), (pad, pad), 4, 4)
        ], name


@pytest.mark.parametrize("name", [n for n in DOWNSAMPLE_NAMES if conv_stride(n) == 1])
@pytest.mark.parametrize("size", [32, 256, 6, 31])
def test_every_downsampling_layer_halves_height_and_width(name, size):
    if name in ("blurpool", "conv3") and size % 2:
        pytest.skip("a padded layer rounds odd sizes up (31 → 16)")
    out = create_downsample(name, 6)(torch.randn(2, 6, size, size))
    assert out.shape == (2, 6, size // 2, size // 2)


def test_aps_keeps_the_polyphase_component_of_largest_norm_per_image():
    x = torch.randn(3, 2, 6, 6) * 0.1
    x[0, :, 1::2, 0::2] += 5.0  # image 0: the (1, 0) component dominates
    x[1, :, 0::2, 1::2] -= 5.0  # image 1: the (0, 1) component, negative values count by their norm
    out = create_downsample("aps", 2)(x)
    assert torch.equal(out[0], x[0, :, 1::2, 0::2]) and torch.equal(out[1], x[1, :, 0::2, 1::2])
    norms = [x[2, :, i::2, j::2].square().sum() for i in (0, 1) for j in (0, 1)]
    i, j = divmod(int(torch.stack(norms).argmax()), 2)
    assert torch.equal(out[2], x[2, :, i::2, j::2])


NETS = {
    "cnn": lambda name, widths, pad="zeros": DownsampleCNN(widths, 2, 3, name, padding_mode=pad),
    "fast": lambda name, widths, pad="zeros": FastNet(widths, name, padding_mode=pad),
}


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("name", DOWNSAMPLE_NAMES)
def test_every_strategy_builds_in_both_networks_at_small_and_full_width(net, name):
    for widths in ([8, 16, 16], [64, 256, 256]):
        with torch.device("meta"):  # shapes only: the full width without its memory
            model = NETS[net](name, widths).eval()
            for size in (32, 256):
                assert model(torch.zeros(1, 3, size, size)).shape == (1, 10)
    params = {n: sum(p.numel() for p in NETS[net](n, [8, 16, 16]).parameters()) for n in ("maxpool", name)}
    if name in ("stride", "aps", "maxavg", "avgpool", "blurpool"):
        assert params[name] == params["maxpool"], name  # no downsampling weights of their own


@pytest.mark.parametrize("net", NETS)
def test_conv_avg_network_starts_as_the_avgpool_network(net):
    torch.manual_seed(3)
    avg = NETS[net]("avgpool", [8, 16, 16])
    torch.manual_seed(3)
    learned = NETS[net]("conv_avg", [8, 16, 16])
    # same seed, same weights everywhere else: building the learned conv draws no random numbers
    others = {k: v for k, v in learned.state_dict().items() if k in avg.state_dict()}
    assert len(others) == len(avg.state_dict())
    assert all(torch.equal(v, avg.state_dict()[k]) for k, v in others.items())
    x = torch.randn(4, 3, 32, 32)
    for mode in ("train", "eval"):
        getattr(avg, mode)(), getattr(learned, mode)()
        assert torch.allclose(learned(x), avg(x), atol=1e-5), mode
    assert any(p.requires_grad and p.shape[-2:] == (2, 2) for p in learned.parameters())  # it can learn


def _max_logit_change_under_circular_shifts(model: nn.Module, x: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        base = model(x)
        return max(
            (model(torch.roll(x, (dy, dx), dims=(2, 3))) - base).abs().max().item()
            for dy in range(-4, 5)
            for dx in range(-4, 5)
        )


@pytest.mark.parametrize("net", NETS)
def test_aps_with_circular_padding_is_exactly_shift_invariant_before_and_after_training(net):
    torch.manual_seed(0)
    model = NETS[net]("aps", [8, 16, 16], "circular")
    x = torch.randn(8, 3, 32, 32)
    assert _max_logit_change_under_circular_shifts(model, x) < 1e-4
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(16, 3, 32, 32)), torch.randint(0, 10, (16,))).backward()
        opt.step()
    assert _max_logit_change_under_circular_shifts(model, x) < 1e-4
    # the control: max-pooling with the same circular padding is not invariant (logits of an untrained
    # network are small: the change is measured against their size)
    torch.manual_seed(0)
    pooled = NETS[net]("maxpool", [8, 16, 16], "circular").eval()
    with torch.no_grad():
        scale = pooled(x).abs().max().item()
    assert _max_logit_change_under_circular_shifts(pooled, x) > 1e-3 * scale


@pytest.mark.parametrize("pad", ["circular", "reflect"])
def test_padding_mode_reaches_every_padded_conv(pad):
    for net in NETS.values():
        model = net("stride", [8, 16, 16], pad)
        padded = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.padding != (0, 0)]
        assert padded and all(m.padding_mode == pad for m in padded)


def test_unknown_strategy_names_the_valid_ones():
    with pytest.raises(
        ValueError, match="maxpool, conv, conv3, avgpool, blurpool, stride, conv_avg, aps, maxavg"
    ):
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
    # the layer at the site (stages.<i>.2), or for `stride` the conv before it (stages.<i>.1.0)
    site = "1.0" if name == "stride" else "2"
    for row in rows:
        if not row.name.startswith(("stem", "stages")):
            continue
        parts = row.name.split(".")
        at_site = len(parts) >= 3 and ".".join(parts[2:4]).startswith(site)
        if at_site and row.kind not in ("BatchNorm2d", "ReLU"):
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
    assert len(down) == {"conv": 2, "conv3": 2, "conv_avg": 2, "stride": 2}.get(name, 0)
    for c in down:
        size = {"conv3": 9, "stride": k * k}.get(name, 4)
        assert c.weight.numel() == size * c.in_channels * c.out_channels


def test_pool_arms_share_parameters_and_conv_arm_adds_the_strided_convs():
    widths = [8, 16, 32]
    counts = {
        n: sum(p.numel() for p in DownsampleCNN(widths, 2, 3, n).parameters()) for n in DOWNSAMPLE_NAMES
    }
    assert counts["maxpool"] == counts["avgpool"] == counts["blurpool"] == counts["aps"] == counts["maxavg"]
    assert counts["stride"] == counts["maxpool"]  # the stride moves into a conv the network has anyway
    assert counts["conv_avg"] - counts["maxpool"] == sum(4 * c * c for c in widths)  # no BatchNorm
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

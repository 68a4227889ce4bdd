"""Per-layer output shapes, parameter counts and FLOPs: what ``python -m downsample_lab.shapes`` prints."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from downsample_lab.errors import UserError
from downsample_lab.models.config import ModelConfig
from downsample_lab.models.factory import build_model, describe_model


@dataclass
class LayerRow:
    """One leaf layer of a forward pass."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    formula: str  # how ``params`` follows from the layer's shape, for conv and linear layers
    stride: str = ""  # conv and pooling layers: "2" (square) or "2x1"; empty for other layers
    padding: str = ""  # conv and pooling layers, as stride; MaxBlurPool2D pads inside (empty)


def conv_param_formula(conv: nn.Conv2d) -> tuple[str, int]:
    """``k·k·C_in·C_out (+ C_out)`` for a conv layer, as text and as the number it evaluates to."""
    kh, kw = conv.kernel_size
    c_in, c_out = conv.in_channels // conv.groups, conv.out_channels
    n = kh * kw * c_in * c_out + (c_out if conv.bias is not None else 0)
    text = f"{kh}·{kw}·{c_in}·{c_out}" + (f" + {c_out}" if conv.bias is not None else "")
    return text, n


def _pair(value: object) -> str:
    """``2`` or ``(2, 2)`` → ``"2"``; ``(2, 1)`` → ``"2x1"``; a string padding (``"same"``) as it is."""
    if isinstance(value, tuple | list):
        return str(value[0]) if len(set(value)) == 1 else "x".join(map(str, value))
    return "" if value is None else str(value)


def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerRow]:
    """Run one forward pass of zeros and record every leaf module's output shape and own parameters."""
    rows: list[LayerRow] = []
    hooks = []

    def record(name: str):
        def hook(module: nn.Module, _inputs, output) -> None:
            params = sum(p.numel() for p in module.parameters(recurse=False))
            formula = ""
            if isinstance(module, nn.Conv2d):
                formula = conv_param_formula(module)[0]
            elif isinstance(module, nn.Linear):
                formula = f"{module.in_features}·{module.out_features}" + (
                    f" + {module.out_features}" if module.bias is not None else ""
                )
            elif isinstance(module, nn.BatchNorm2d):
                formula = f"2·{module.num_features}"
            stride, padding = _pair(getattr(module, "stride", None)), _pair(getattr(module, "padding", None))
            rows.append(
                LayerRow(name, type(module).__name__, tuple(output.shape), params, formula, stride, padding)
            )

        return hook

    for name, module in model.named_modules():
        # nn.Identity: the empty site of model.downsample=stride, whose preceding conv downsamples
        if not list(module.children()) and not isinstance(module, nn.Identity):
            hooks.append(module.register_forward_hook(record(name)))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_shape))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return rows


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_flops(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """Forward FLOPs for one batch of ``input_shape``, counted by ``torch.utils.flop_counter`` (2 per MAC)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(input_shape, device=device))
    model.train(was_training)
    return counter.get_total_flops()


BIAS_NOTE = (
    "Convs followed by BatchNorm have no bias (bias=False), so their formula is k·k·C_in·C_out without the\n"
    "+ C_out of a biased conv: BatchNorm subtracts the batch mean, which would cancel a bias, and adds its own\n"
    "shift (β, half of its 2·C parameters). A stride-s conv or pool divides H and W by s; a k×k conv with\n"
    "padding k//2 and stride 1 keeps them."
)


def format_shapes(cfg: DictConfig) -> str:
    """The table ``shapes`` prints, for a validated config."""
    m: ModelConfig = OmegaConf.to_object(cfg.model)
    size = tuple(cfg.input_size)
    model = build_model(m)
    try:
        rows = layer_table(model, size)
    except (
        RuntimeError,
        ValueError,
    ) as err:  # a pooling or conv output of size 0: the input is too small for the model
        raise UserError(_too_small(m, size, err)) from None
    head = f"{describe_model(m)}; input {'x'.join(map(str, size))}"
    lines = [
        head,
        "",
        f"{'layer':<22} {'type':<17} {'output shape':<18} {'stride':>6} {'pad':>4} {'params':>10}  formula",
    ]
    for r in rows:
        shape = "x".join(map(str, r.output_shape))
        lines.append(
            f"{r.name:<22} {r.kind:<17} {shape:<18} {r.stride:>6} {r.padding:>4} {r.params:>10,}  {r.formula}"
        )
    flops = forward_flops(model, (1, *size[1:]))
    lines += [
        "",
        f"total parameters: {count_params(model):,}",
        f"forward FLOPs per image: {flops:,} ({flops / 1e6:.1f} MFLOPs, torch.utils.flop_counter)",
    ]
    if any(isinstance(m, nn.Conv2d) and m.bias is None for m in model.modules()):
        lines += ["", BIAS_NOTE]
    return "\n".join(lines)


def _too_small(m: ModelConfig, size: tuple[int, ...], err: Exception) -> str:
    # The smallest power-of-two square input that passes, found on the meta device (shapes only, no compute).
    with torch.device("meta"):
        model = build_model(m).eval()
    fits = None
    for side in (2**i for i in range(1, 13)):
        try:
            model(torch.zeros(1, 3, side, side, device="meta"))
        except (RuntimeError, ValueError):
            continue
        fits = side
        break
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    hint = f"; e.g. input_size=[{size[0]},3,{fits},{fits}] fits" if fits else ""
    return f"input_size=[{','.join(map(str, size))}] is too small for {describe_model(m)} ({reason}){hint}"
